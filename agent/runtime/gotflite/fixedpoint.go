package gotflite

import "math"

// Fixed-point arithmetic of TFLite's integer kernels (and the gemmlowp
// functions they build on), written from their documented semantics. The
// integer results must match the reference kernels bit for bit, so every
// rounding rule here is deliberate: round half away from zero when
// quantizing a multiplier, round to nearest (ties up in magnitude) in the
// doubling high multiply, and round half up in the power-of-two division.

// quantizeMultiplier splits a real multiplier into a Q0.31 significand and
// a power-of-two exponent (positive: left shift).
func quantizeMultiplier(d float64) (int32, int) {
	if d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		return 0, 0
	}
	q, shift := math.Frexp(d)
	qf := int64(math.Round(q * (1 << 31)))
	if qf == 1<<31 {
		qf /= 2
		shift++
	}
	if shift < -31 {
		return 0, 0
	}
	if qf > math.MaxInt32 || qf < math.MinInt32 {
		return 0, 0
	}
	return int32(qf), shift
}

// srdhm is gemmlowp's SaturatingRoundingDoublingHighMul: round(a*b / 2^31).
func srdhm(a, b int32) int32 {
	if a == b && a == math.MinInt32 {
		return math.MaxInt32
	}
	ab := int64(a) * int64(b)
	nudge := int64(1 << 30)
	if ab < 0 {
		nudge = 1 - (1 << 30)
	}
	return int32((ab + nudge) / (1 << 31))
}

// rdivpot is gemmlowp's RoundingDivideByPOT: x / 2^exp, rounded to nearest.
func rdivpot(x int32, exp int) int32 {
	if exp <= 0 {
		return x
	}
	if exp > 31 {
		exp = 31
	}
	mask := int32(int64(1)<<exp - 1)
	rem := x & mask
	th := mask >> 1
	if x < 0 {
		th++
	}
	r := x >> exp
	if rem > th {
		r++
	}
	return r
}

// mulByQuantizedMultiplier is TFLite's MultiplyByQuantizedMultiplier
// (the double-rounding form): x * m * 2^shift / 2^31.
func mulByQuantizedMultiplier(x, m int32, shift int) int32 {
	left, right := 0, 0
	if shift > 0 {
		left = shift
	} else {
		right = -shift
	}
	return rdivpot(srdhm(x*(1<<left), m), right)
}

// satShiftLeft is gemmlowp's SaturatingRoundingMultiplyByPOT for a
// positive exponent.
func satShiftLeft(x int32, exp int) int32 {
	if exp <= 0 {
		return rdivpot(x, -exp)
	}
	th := int32(int64(1)<<(31-exp) - 1)
	if x > th {
		return math.MaxInt32
	}
	if x < -th {
		return math.MinInt32
	}
	return x << exp
}

// expOnNegativeValues is gemmlowp's exp_on_negative_values for a Q5.26
// input (5 integer bits): exp(a) for a <= 0, as Q0.31.
func expOnNegativeValues(a int32) int32 {
	const intBits = 5
	const fracBits = 31 - intBits
	const oneQuarter = int32(1) << (fracBits - 2)
	mask := oneQuarter - 1
	aModQuarterMinusQuarter := (a & mask) - oneQuarter
	// Rescale to Q0.31 (from 5 integer bits to 0): a saturating left shift.
	result := expOnIntervalNegQuarterTo0(satShiftLeft(aModQuarterMinusQuarter, intBits))
	remainder := aModQuarterMinusQuarter - a
	barrel := [...]struct {
		exp  int
		mult int32
	}{
		{-2, 1672461947}, {-1, 1302514674}, {0, 790015084}, {1, 290630308},
		{2, 39332535}, {3, 720401}, {4, 242},
	}
	for _, b := range barrel {
		if intBits > b.exp {
			shift := fracBits + b.exp
			if remainder&(1<<shift) != 0 {
				result = srdhm(result, b.mult)
			}
		}
	}
	// intBits is 5: no clamp below -32 is needed (gemmlowp clamps only for
	// more integer bits).
	if a == 0 {
		result = math.MaxInt32
	}
	return result
}

// expOnIntervalNegQuarterTo0 is gemmlowp's
// exp_on_interval_between_negative_one_quarter_and_0_excl (Q0.31).
func expOnIntervalNegQuarterTo0(a int32) int32 {
	const constantTerm = 1895147668 // exp(-1/8)
	const oneThird = 715827883
	x := a + (1 << 28) // a + 1/8
	x2 := srdhm(x, x)
	x3 := srdhm(x2, x)
	x4 := srdhm(x2, x2)
	x4over4 := rdivpot(x4, 2)
	poly := rdivpot(srdhm(x4over4+x3, oneThird)+x2, 1)
	return constantTerm + srdhm(constantTerm, x+poly)
}

// oneOverOnePlusX is gemmlowp's one_over_one_plus_x_for_x_in_0_1: for a
// Q0.31 x in [0, 1), 1/(1+x) as Q0.31, by Newton-Raphson.
func oneOverOnePlusX(a int32) int32 {
	// half_denominator = (a + 1) / 2, rounded: RoundingHalfSum(a, One).
	sum := int64(a) + math.MaxInt32
	sign := int64(1)
	if sum < 0 {
		sign = -1
	}
	half := int32((sum + sign) / 2)
	const c48over17 = 1515870810     // Q2.29
	const cNeg32over17 = -1010580540 // Q2.29
	const oneQ2 = int32(1) << 29
	x := c48over17 + srdhm(half, cNeg32over17)
	for i := 0; i < 3; i++ {
		hdx := srdhm(half, x)                       // Q2.29
		oneMinus := oneQ2 - hdx                     // Q2.29
		x = x + satShiftLeft(srdhm(x, oneMinus), 2) // Q4.27 -> Q2.29
	}
	// ExactMulByPot<-1> then Rescale to Q0.31: from 1 integer bit to 0.
	return satShiftLeft(x, 1)
}

// reciprocal is TFLite's GetReciprocal: for a positive fixed-point x with
// intDigits integer bits, a Q0.31 scale and the number of bits over one,
// such that 1/x = scale * 2^-bitsOverUnit.
func reciprocal(x int32, intDigits int) (scale int32, bitsOverUnit int) {
	headroomPlusOne := clz32(uint32(x))
	bitsOverUnit = intDigits - headroomPlusOne
	shiftedSumMinusOne := int32((uint32(x) << headroomPlusOne) - (uint32(1) << 31))
	return oneOverOnePlusX(shiftedSumMinusOne), bitsOverUnit
}

func clz32(x uint32) int {
	n := 0
	if x == 0 {
		return 32
	}
	for x&(1<<31) == 0 {
		x <<= 1
		n++
	}
	return n
}

// srdhm16 and rdivpot16 are the int16 forms used by quantized HARD_SWISH.
func srdhm16(a, b int16) int16 {
	if a == b && a == math.MinInt16 {
		return math.MaxInt16
	}
	ab := int32(a) * int32(b)
	nudge := int32(1 << 14)
	if ab < 0 {
		nudge = 1 - (1 << 14)
	}
	return int16((ab + nudge) / (1 << 15))
}

func rdivpot16(x int16, exp int) int16 {
	if exp <= 0 {
		return x
	}
	if exp > 15 {
		exp = 15
	}
	mask := int16(int32(1)<<exp - 1)
	rem := x & mask
	th := mask >> 1
	if x < 0 {
		th++
	}
	r := x >> exp
	if rem > th {
		r++
	}
	return r
}

// satDoublingHighMul16 is SaturatingDoublingHighMul: a*b / 2^15, rounded
// toward zero.
func satDoublingHighMul16(a, b int16) int16 {
	if a == b && a == math.MinInt16 {
		return math.MaxInt16
	}
	return int16((int32(a) * int32(b)) / (1 << 15))
}

func satLeftShift16(v int16, amount int) int16 {
	r := int64(v) * (int64(1) << amount)
	if r > math.MaxInt16 {
		return math.MaxInt16
	}
	if r < math.MinInt16 {
		return math.MinInt16
	}
	return int16(r)
}
