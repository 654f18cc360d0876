package gotflite

import (
	"math"
)

// Quantized operators. The integer arithmetic follows TFLite's reference
// kernels (tensorflow/lite/kernels/internal/reference and the kernels'
// Prepare functions): multipliers are derived from the float scales exactly
// as TFLite derives them (float or double products, as it does) and applied
// with the fixed-point helpers in fixedpoint.go, so results match the
// official interpreter bit for bit.

func init() {
	builtinOps[opQuantize] = prepQuantize
	builtinOps[opDequantize] = prepDequantize
}

// qtype is an 8-bit quantized element type.
type qtype interface{ ~int8 | ~uint8 }

// qbounds returns the value range of a quantized type.
func qbounds(t ttype) (int32, int32, bool) {
	switch t {
	case tInt8:
		return math.MinInt8, math.MaxInt8, true
	case tUint8:
		return 0, math.MaxUint8, true
	case tInt16:
		return math.MinInt16, math.MaxInt16, true
	}
	return 0, 0, false
}

// perTensor returns a tensor's per-tensor scale and zero point.
func perTensor(t *tinfo, role string) (float32, int32, error) {
	if len(t.fb.quant.scale) == 0 {
		return 0, 0, bad("%s %s of type %s has no quantization parameters", role, t, t.typ)
	}
	if t.fb.quant.custom {
		return 0, 0, unsupported("%s %s uses custom quantization", role, t)
	}
	s := t.fb.quant.scale[0]
	if !(s > 0) || math.IsInf(float64(s), 0) {
		return 0, 0, bad("%s %s has scale %g", role, t, s)
	}
	var z int64
	if len(t.fb.quant.zeroPoint) > 0 {
		z = t.fb.quant.zeroPoint[0]
	}
	lo, hi, ok := qbounds(t.typ)
	if ok && (z < int64(lo) || z > int64(hi)) {
		return 0, 0, bad("%s %s has zero point %d outside %s", role, t, z, t.typ)
	}
	if !ok && (z < math.MinInt32 || z > math.MaxInt32) {
		return 0, 0, bad("%s %s has zero point %d", role, t, z)
	}
	return s, int32(z), nil
}

// channelScales returns a filter's scales, one per output channel n along
// dimension dim (a per-tensor scale is repeated).
func channelScales(f *tinfo, n, dim int) ([]float32, error) {
	q := &f.fb.quant
	if len(q.scale) == 0 {
		return nil, bad("filter %s has no quantization parameters", f)
	}
	if q.custom {
		return nil, unsupported("filter %s uses custom quantization", f)
	}
	out := make([]float32, n)
	switch len(q.scale) {
	case 1:
		for i := range out {
			out[i] = q.scale[0]
		}
	case n:
		if int(q.dim) != dim {
			return nil, bad("filter %s is quantized along dimension %d, want %d", f, q.dim, dim)
		}
		copy(out, q.scale)
	default:
		return nil, bad("filter %s has %d scales for %d channels", f, len(q.scale), n)
	}
	for _, s := range out {
		if !(s > 0) || math.IsInf(float64(s), 0) {
			return nil, bad("filter %s has scale %g", f, s)
		}
	}
	return out, nil
}

// actRangeQuant is CalculateActivationRangeQuantized: the clamp range of a
// fused activation on the output's quantized scale.
func actRangeQuant(act int8, out *tinfo, scale float32, zero int32) (int32, int32, error) {
	lo, hi, ok := qbounds(out.typ)
	if !ok {
		return 0, 0, unsupported("output %s has type %s", out, out.typ)
	}
	q := func(f float32) int32 { return zero + int32(math.Round(float64(f/scale))) }
	switch act {
	case actNone:
	case actRelu:
		lo = max(lo, q(0))
	case actRelu6:
		lo, hi = max(lo, q(0)), min(hi, q(6))
	case actReluN1To1:
		lo, hi = max(lo, q(-1)), min(hi, q(1))
	default:
		return 0, 0, unsupported("fused activation %d", act)
	}
	return lo, hi, nil
}

func clamp32(x, lo, hi int32) int32 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}

// accessor returns the typed views of a quantized type.
func i8s(v *views) [][]int8   { return v.i8 }
func u8s(v *views) [][]uint8  { return v.u8 }
func i32s(v *views) [][]int32 { return v.i32 }

// optionalBias checks a convolution's INT32 bias.
func optionalBias(bias *tinfo) error {
	if bias == nil {
		return nil
	}
	return types(bias, "bias", tInt32)
}

// convQuant is a prepared int8 CONV_2D or DEPTHWISE_CONV_2D.
type convQuant struct {
	w          *window
	kh, kw     int
	inOffset   int32
	fOffset    int32 // -filter zero point (uint8 filters; 0 for int8)
	outOffset  int32
	u8         bool // uint8 tensors (the legacy scheme) rather than int8
	mult       []int32
	shift      []int
	lo, hi     int32
	depthwise  bool
	depthMult  int
	ii, fi, bi int
	oi         int
}

// quantIO is what a quantized convolution or fully connected operator
// needs to know of its input and output.
type quantIO struct {
	u8                bool // all UINT8 (the legacy scheme), else all INT8
	inScale, outScale float32
	inZero, outZero   int32
}

// quantLinearIO checks the types of a quantized linear operator's input,
// weights (named role in messages), bias and output, and returns the
// per-tensor input and output quantization.
func quantLinearIO(in, f, bias, out *tinfo, role string) (quantIO, error) {
	var q quantIO
	q.u8 = in.typ == tUint8 && f.typ == tUint8 && out.typ == tUint8
	if !q.u8 && (in.typ != tInt8 || f.typ != tInt8 || out.typ != tInt8) {
		return q, unsupported("input %s, %s %s and output %s: want all INT8 or all UINT8", in.typ, role, f.typ, out.typ)
	}
	if err := optionalBias(bias); err != nil {
		return q, err
	}
	var err error
	if q.inScale, q.inZero, err = perTensor(in, "input"); err != nil {
		return q, err
	}
	if q.outScale, q.outZero, err = perTensor(out, "output"); err != nil {
		return q, err
	}
	return q, nil
}

func prepConvQuant(p *opPrep, w *window, in, f, bias, out *tinfo, act int8, depthwise bool) (kernel, error) {
	q, err := quantLinearIO(in, f, bias, out, "filter")
	if err != nil {
		return nil, err
	}
	u8, inScale, inZero, outScale, outZero := q.u8, q.inScale, q.inZero, q.outScale, q.outZero
	dim := 0
	if depthwise {
		dim = 3
	}
	scales, err := channelScales(f, w.outC, dim)
	if err != nil {
		return nil, err
	}
	c := &convQuant{w: w, kh: w.kH, kw: w.kW, inOffset: -inZero, outOffset: outZero, depthwise: depthwise,
		ii: in.index, fi: f.index, bi: indexOr(bias), oi: out.index, u8: u8}
	c.mult = make([]int32, w.outC)
	c.shift = make([]int, w.outC)
	for i, s := range scales {
		eff := float64(inScale) * float64(s) / float64(outScale)
		if u8 {
			// The uint8 kernels take one multiplier from the float
			// product of the scales (GetQuantizedConvolutionMultipler).
			eff = float64(inScale*s) / float64(outScale)
		}
		c.mult[i], c.shift[i] = quantizeMultiplier(eff)
	}
	if u8 {
		if len(f.fb.quant.scale) != 1 {
			return nil, unsupported("UINT8 filter %s is quantized per channel", f)
		}
		_, fZero, err := perTensor(f, "filter")
		if err != nil {
			return nil, err
		}
		c.fOffset = -fZero
	}
	if c.lo, c.hi, err = actRangeQuant(act, out, outScale, outZero); err != nil {
		return nil, err
	}
	if depthwise {
		c.depthMult = w.outC / w.inC
	}
	if k := fastConvQuant(c, f, bias); k != nil {
		return k, nil
	}
	work := int64(out.n) * int64(w.kH*w.kW)
	if !depthwise {
		work *= int64(w.inC)
	}
	return func(ex *executor) error {
		ex.parallel(w.batches*w.outH, work, c)
		return nil
	}, nil
}

func (c *convQuant) rows(ex *executor, r0, r1 int) {
	var b []int32
	if c.bi >= 0 {
		b = ex.v.i32[c.bi]
	}
	if c.u8 {
		convQuantRows(c, ex.v.u8[c.ii], ex.v.u8[c.fi], b, ex.v.u8[c.oi], r0, r1)
		return
	}
	convQuantRows(c, ex.v.i8[c.ii], ex.v.i8[c.fi], b, ex.v.i8[c.oi], r0, r1)
}

func convQuantRows[T qtype](c *convQuant, x, flt []T, b []int32, y []T, r0, r1 int) {
	switch {
	case !c.depthwise:
		convRows(c, x, flt, b, y, r0, r1)
	case c.depthMult != 1 || c.w.outC > dwMaxChannels:
		depthwiseRowsGeneral(c, x, flt, b, y, r0, r1)
	default:
		depthwiseRows(c, x, flt, b, y, r0, r1)
	}
}

// convRows computes output rows of an int8 CONV_2D. Four output channels
// share each input load; integer sums are exact, so the blocking changes
// no result.
func convRows[T qtype](c *convQuant, x, flt []T, b []int32, y []T, r0, r1 int) {
	w := c.w
	kk := c.kh * c.kw * w.inC
	for r := r0; r < r1; r++ {
		bt, oy := r/w.outH, r%w.outH
		y0 := oy*w.strideH - w.padH
		for ox := 0; ox < w.outW; ox++ {
			x0 := ox*w.strideW - w.padW
			dst := y[((bt*w.outH+oy)*w.outW+ox)*w.outC:][:w.outC]
			oc := 0
			for ; oc+4 <= len(dst); oc += 4 {
				var a0, a1, a2, a3 int32
				f0 := flt[oc*kk:][:kk]
				f1 := flt[(oc+1)*kk:][:kk]
				f2 := flt[(oc+2)*kk:][:kk]
				f3 := flt[(oc+3)*kk:][:kk]
				for fy := 0; fy < c.kh; fy++ {
					iy := y0 + fy*w.dilH
					if iy < 0 || iy >= w.inH {
						continue
					}
					for fx := 0; fx < c.kw; fx++ {
						ix := x0 + fx*w.dilW
						if ix < 0 || ix >= w.inW {
							continue
						}
						src := x[((bt*w.inH+iy)*w.inW+ix)*w.inC:][:w.inC]
						o := (fy*c.kw + fx) * w.inC
						g0, g1, g2, g3 := f0[o:o+len(src)], f1[o:o+len(src)], f2[o:o+len(src)], f3[o:o+len(src)]
						for k, v := range src {
							xv := int32(v) + c.inOffset
							a0 += (int32(g0[k]) + c.fOffset) * xv
							a1 += (int32(g1[k]) + c.fOffset) * xv
							a2 += (int32(g2[k]) + c.fOffset) * xv
							a3 += (int32(g3[k]) + c.fOffset) * xv
						}
					}
				}
				if b != nil {
					a0, a1, a2, a3 = a0+b[oc], a1+b[oc+1], a2+b[oc+2], a3+b[oc+3]
				}
				dst[oc] = T(clamp32(mulByQuantizedMultiplier(a0, c.mult[oc], c.shift[oc])+c.outOffset, c.lo, c.hi))
				dst[oc+1] = T(clamp32(mulByQuantizedMultiplier(a1, c.mult[oc+1], c.shift[oc+1])+c.outOffset, c.lo, c.hi))
				dst[oc+2] = T(clamp32(mulByQuantizedMultiplier(a2, c.mult[oc+2], c.shift[oc+2])+c.outOffset, c.lo, c.hi))
				dst[oc+3] = T(clamp32(mulByQuantizedMultiplier(a3, c.mult[oc+3], c.shift[oc+3])+c.outOffset, c.lo, c.hi))
			}
			for ; oc < len(dst); oc++ {
				var acc int32
				fc := flt[oc*kk:][:kk]
				for fy := 0; fy < c.kh; fy++ {
					iy := y0 + fy*w.dilH
					if iy < 0 || iy >= w.inH {
						continue
					}
					for fx := 0; fx < c.kw; fx++ {
						ix := x0 + fx*w.dilW
						if ix < 0 || ix >= w.inW {
							continue
						}
						src := x[((bt*w.inH+iy)*w.inW+ix)*w.inC:][:w.inC]
						fr := fc[(fy*c.kw+fx)*w.inC:][:len(src)]
						for k, v := range src {
							acc += (int32(fr[k]) + c.fOffset) * (int32(v) + c.inOffset)
						}
					}
				}
				if b != nil {
					acc += b[oc]
				}
				acc = mulByQuantizedMultiplier(acc, c.mult[oc], c.shift[oc]) + c.outOffset
				dst[oc] = T(clamp32(acc, c.lo, c.hi))
			}
		}
	}
}

// dwMaxChannels bounds the depthwise fast path's stack accumulators.
const dwMaxChannels = 1024

// depthwiseRows computes output rows of an int8 DEPTHWISE_CONV_2D. With a
// depth multiplier of 1 it walks the taps outermost and the channels
// innermost, so both the input and the filter are read contiguously.
func depthwiseRows[T qtype](c *convQuant, x, flt []T, b []int32, y []T, r0, r1 int) {
	w := c.w
	var accBuf [dwMaxChannels]int32
	acc := accBuf[:w.outC]
	for r := r0; r < r1; r++ {
		bt, oy := r/w.outH, r%w.outH
		y0 := oy*w.strideH - w.padH
		for ox := 0; ox < w.outW; ox++ {
			x0 := ox*w.strideW - w.padW
			if b != nil {
				copy(acc, b[:len(acc)])
			} else {
				clear(acc)
			}
			for fy := 0; fy < c.kh; fy++ {
				iy := y0 + fy*w.dilH
				if iy < 0 || iy >= w.inH {
					continue
				}
				for fx := 0; fx < c.kw; fx++ {
					ix := x0 + fx*w.dilW
					if ix < 0 || ix >= w.inW {
						continue
					}
					src := x[((bt*w.inH+iy)*w.inW+ix)*w.inC:][:len(acc)]
					fr := flt[(fy*c.kw+fx)*w.outC:][:len(acc)]
					for k, v := range src {
						acc[k] += (int32(fr[k]) + c.fOffset) * (int32(v) + c.inOffset)
					}
				}
			}
			dst := y[((bt*w.outH+oy)*w.outW+ox)*w.outC:][:len(acc)]
			for oc, a := range acc {
				dst[oc] = T(clamp32(mulByQuantizedMultiplier(a, c.mult[oc], c.shift[oc])+c.outOffset, c.lo, c.hi))
			}
		}
	}
}

func depthwiseRowsGeneral[T qtype](c *convQuant, x, flt []T, b []int32, y []T, r0, r1 int) {
	w := c.w
	for r := r0; r < r1; r++ {
		bt, oy := r/w.outH, r%w.outH
		y0 := oy*w.strideH - w.padH
		for ox := 0; ox < w.outW; ox++ {
			x0 := ox*w.strideW - w.padW
			dst := y[((bt*w.outH+oy)*w.outW+ox)*w.outC:][:w.outC]
			for oc := range dst {
				ic := oc / c.depthMult
				var acc int32
				for fy := 0; fy < c.kh; fy++ {
					iy := y0 + fy*w.dilH
					if iy < 0 || iy >= w.inH {
						continue
					}
					for fx := 0; fx < c.kw; fx++ {
						ix := x0 + fx*w.dilW
						if ix < 0 || ix >= w.inW {
							continue
						}
						v := int32(x[((bt*w.inH+iy)*w.inW+ix)*w.inC+ic])
						acc += (int32(flt[(fy*c.kw+fx)*w.outC+oc]) + c.fOffset) * (v + c.inOffset)
					}
				}
				if b != nil {
					acc += b[oc]
				}
				acc = mulByQuantizedMultiplier(acc, c.mult[oc], c.shift[oc]) + c.outOffset
				dst[oc] = T(clamp32(acc, c.lo, c.hi))
			}
		}
	}
}

func prepFullyConnectedQuant(p *opPrep, act int8, batches, units, depth int) (kernel, error) {
	in, f, bias, out := p.ins[0], p.ins[1], p.in(2), p.outs[0]
	q, err := quantLinearIO(in, f, bias, out, "weights")
	if err != nil {
		return nil, err
	}
	u8, inScale, inZero, outScale, outZero := q.u8, q.inScale, q.inZero, q.outScale, q.outZero
	_, fZero, err := perTensor(f, "weights")
	if err != nil {
		return nil, err
	}
	scales, err := channelScales(f, units, 0)
	if err != nil {
		return nil, err
	}
	mult := make([]int32, units)
	shift := make([]int, units)
	for i, s := range scales {
		var eff float64
		if len(f.fb.quant.scale) == 1 {
			// Per-tensor: TFLite forms the input x weights scale product in
			// float (GetQuantizedConvolutionMultipler).
			eff = float64(inScale*s) / float64(outScale)
		} else {
			eff = float64(inScale) * float64(s) / float64(outScale)
		}
		mult[i], shift[i] = quantizeMultiplier(eff)
	}
	lo, hi, err := actRangeQuant(act, out, outScale, outZero)
	if err != nil {
		return nil, err
	}
	fc := &fcQuant{inOff: -inZero, fOff: -fZero, outZero: outZero, lo: lo, hi: hi, mult: mult, shift: shift,
		batches: batches, units: units, depth: depth, ii: in.index, fi: f.index, oi: out.index, bi: indexOr(bias)}
	if k := fastFullyConnectedQuant(fc, u8, f, bias); k != nil {
		return k, nil
	}
	if u8 {
		return func(ex *executor) error { fcQuantRun(fc, ex, ex.v.u8); return nil }, nil
	}
	return func(ex *executor) error { fcQuantRun(fc, ex, ex.v.i8); return nil }, nil
}

// fcQuant is a prepared quantized FULLY_CONNECTED.
type fcQuant struct {
	inOff, fOff, outZero  int32
	lo, hi                int32
	mult                  []int32
	shift                 []int
	batches, units, depth int
	ii, fi, oi, bi        int
}

func fcQuantRun[T qtype](fc *fcQuant, ex *executor, all [][]T) {
	x, wt, y := all[fc.ii], all[fc.fi], all[fc.oi]
	var b []int32
	if fc.bi >= 0 {
		b = ex.v.i32[fc.bi]
	}
	depth, units := fc.depth, fc.units
	for bt := 0; bt < fc.batches; bt++ {
		row := x[bt*depth : (bt+1)*depth]
		for u := 0; u < units; u++ {
			wr := wt[u*depth : (u+1)*depth][:len(row)]
			var acc int32
			for k, v := range row {
				acc += (int32(wr[k]) + fc.fOff) * (int32(v) + fc.inOff)
			}
			if b != nil {
				acc += b[u]
			}
			acc = mulByQuantizedMultiplier(acc, fc.mult[u], fc.shift[u]) + fc.outZero
			y[bt*units+u] = T(clamp32(acc, fc.lo, fc.hi))
		}
	}
}

// binaryQuant holds the parameters of a quantized ADD, SUB or MUL.
type binaryQuant struct {
	op                 binaryOp
	in1Off, in2Off     int32
	outOff             int32
	leftShift          int
	in1Mult, in2Mult   int32
	in1Shift, in2Shift int
	outMult            int32
	outShift           int
	lo, hi             int32
}

func (q *binaryQuant) apply(a, b int32) int32 {
	x, y := a+q.in1Off, b+q.in2Off
	if q.op == binMul {
		return clamp32(mulByQuantizedMultiplier(x*y, q.outMult, q.outShift)+q.outOff, q.lo, q.hi)
	}
	sx := mulByQuantizedMultiplier(x*(1<<q.leftShift), q.in1Mult, q.in1Shift)
	sy := mulByQuantizedMultiplier(y*(1<<q.leftShift), q.in2Mult, q.in2Shift)
	raw := sx + sy
	if q.op == binSub {
		raw = sx - sy
	}
	return clamp32(mulByQuantizedMultiplier(raw, q.outMult, q.outShift)+q.outOff, q.lo, q.hi)
}

func prepBinaryQuant(p *opPrep, op binaryOp, a, b, out *tinfo, act int8, bc *bcast) (kernel, error) {
	if a.typ != tInt8 && a.typ != tUint8 {
		return nil, unsupported("inputs have type %s", a.typ)
	}
	s1, z1, err := perTensor(a, "input")
	if err != nil {
		return nil, err
	}
	s2, z2, err := perTensor(b, "input")
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	q := &binaryQuant{op: op, in1Off: -z1, in2Off: -z2, outOff: zo}
	if q.lo, q.hi, err = actRangeQuant(act, out, so, zo); err != nil {
		return nil, err
	}
	if op == binMul {
		// TFLite forms this product and quotient in float.
		q.outMult, q.outShift = quantizeMultiplier(float64(s1 * s2 / so))
	} else {
		q.leftShift = 20
		twiceMax := float64(2 * max(s1, s2))
		q.in1Mult, q.in1Shift = quantizeMultiplier(float64(s1) / twiceMax)
		q.in2Mult, q.in2Shift = quantizeMultiplier(float64(s2) / twiceMax)
		q.outMult, q.outShift = quantizeMultiplier(twiceMax / float64(float32(int32(1)<<q.leftShift)*so))
	}
	if k := fastBinaryQuant(q, bc, a, b, out); k != nil {
		return k, nil
	}
	ai, bi, oi := a.index, b.index, out.index
	if a.typ == tInt8 {
		return binaryQuantKernel(q, bc, ai, bi, oi, i8s), nil
	}
	return binaryQuantKernel(q, bc, ai, bi, oi, u8s), nil
}

func binaryQuantKernel[T qtype](q *binaryQuant, bc *bcast, ai, bi, oi int, get func(*views) [][]T) kernel {
	return func(ex *executor) error {
		all := get(&ex.v)
		x, y, z := all[ai], all[bi], all[oi]
		if bc.same {
			y, z = y[:len(x)], z[:len(x)]
			for i, v := range x {
				z[i] = T(q.apply(int32(v), int32(y[i])))
			}
			return nil
		}
		bc.each(func(o, ia, ib, n, sa, sb int) {
			for k := 0; k < n; k++ {
				z[o+k] = T(q.apply(int32(x[ia+k*sa]), int32(y[ib+k*sb])))
			}
		})
		return nil
	}
}

func prepPoolQuant(p *opPrep, w *window, in, out *tinfo, act int8, isMax bool) (kernel, error) {
	if in.typ != tInt8 && in.typ != tUint8 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	lo, hi, err := actRangeQuant(act, out, so, zo)
	if err != nil {
		return nil, err
	}
	if in.typ == tInt8 {
		return poolQuantKernel(w, in.index, out.index, lo, hi, isMax, i8s), nil
	}
	return poolQuantKernel(w, in.index, out.index, lo, hi, isMax, u8s), nil
}

func poolQuantKernel[T qtype](w *window, ii, oi int, lo, hi int32, isMax bool, get func(*views) [][]T) kernel {
	return func(ex *executor) error {
		all := get(&ex.v)
		x, y := all[ii], all[oi]
		w.each(func(o, fy0, fy1, fx0, fx1, base int) {
			n := int32((fy1 - fy0) * (fx1 - fx0))
			for c := 0; c < w.outC; c++ {
				var acc int32
				if isMax {
					acc = math.MinInt32
				}
				for fy := fy0; fy < fy1; fy++ {
					for fx := fx0; fx < fx1; fx++ {
						v := int32(x[base+(fy*w.inW+fx)*w.inC+c])
						if isMax {
							acc = max(acc, v)
						} else {
							acc += v
						}
					}
				}
				if !isMax && n > 0 {
					// Round half away from zero, as the reference kernel does.
					if acc > 0 {
						acc = (acc + n/2) / n
					} else {
						acc = (acc - n/2) / n
					}
				}
				y[o+c] = T(clamp32(acc, lo, hi))
			}
		})
		return nil
	}
}

func prepMeanQuant(p *opPrep, in, out *tinfo, tab []int32, count int) (kernel, error) {
	if in.typ != tInt8 && in.typ != tUint8 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	si, zi, err := perTensor(in, "input")
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	mult, shift := quantizeMultiplier(float64(si) / float64(so))
	// Fold the division by the element count into the multiplier, keeping
	// the shift within what the multiply accepts.
	n := int64(count)
	s := 63 - clz64(uint64(n))
	s = min(s, 32, 31+shift)
	if s < 0 {
		s = 0
	}
	mult = int32((int64(mult) << s) / n)
	shift -= s
	lo, hi, _ := qbounds(in.typ)
	p.needScratch(out.n)
	if in.typ == tInt8 {
		return meanQuantKernel(in.index, out.index, tab, zi*int32(count), mult, shift, zo, lo, hi, i8s), nil
	}
	return meanQuantKernel(in.index, out.index, tab, zi*int32(count), mult, shift, zo, lo, hi, u8s), nil
}

func clz64(x uint64) int {
	if x == 0 {
		return 64
	}
	n := 0
	for x&(1<<63) == 0 {
		x <<= 1
		n++
	}
	return n
}

func meanQuantKernel[T qtype](ii, oi int, tab []int32, zeroSum, mult int32, shift int, zo, lo, hi int32, get func(*views) [][]T) kernel {
	return func(ex *executor) error {
		all := get(&ex.v)
		x, y := all[ii], all[oi]
		// Sum in int32, one per output, in the executor's scratch.
		sums := ex.scratch[:len(y)]
		clear(sums)
		tab := tab[:len(x)]
		for i, v := range x {
			sums[tab[i]] += int32(v)
		}
		for i, s := range sums {
			v := mulByQuantizedMultiplier(s-zeroSum, mult, shift) + zo
			y[i] = T(clamp32(v, lo, hi))
		}
		return nil
	}
}

func quantConcatCheck(p *opPrep, out *tinfo) error {
	if out.typ != tInt8 && out.typ != tUint8 {
		return nil
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return err
	}
	for _, in := range p.ins {
		si, zi, err := perTensor(in, "input")
		if err != nil {
			return err
		}
		if si != so || zi != zo {
			return unsupported("input %s is quantized differently from the output (requantizing concatenation)", in)
		}
	}
	return nil
}

func prepSoftmaxQuant(p *opPrep, in, out *tinfo, beta float32, depth int) (kernel, error) {
	if in.typ != tInt8 && in.typ != tUint8 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	si, _, err := perTensor(in, "input")
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	wantZero := int32(-128)
	if out.typ == tUint8 {
		wantZero = 0
	}
	if so != 1.0/256 || zo != wantZero {
		return nil, unsupported("output %s has scale %g and zero point %d, want 1/256 and %d", out, so, zo, wantZero)
	}
	const scaledDiffIntBits = 5
	real := math.Min(float64(beta)*float64(si)*float64(int64(1)<<(31-scaledDiffIntBits)), float64(int64(1)<<31-1))
	mult, leftShift := quantizeMultiplier(real)
	if leftShift < 0 {
		return nil, unsupported("input %s scale %g is too small for quantized softmax", in, si)
	}
	radius := math.Floor(float64((int64(1)<<scaledDiffIntBits)-1) * float64(int64(1)<<(31-scaledDiffIntBits)) / float64(int64(1)<<leftShift))
	diffMin := -int32(radius)
	if in.typ == tInt8 {
		return softmaxQuantKernel(in.index, out.index, depth, mult, leftShift, diffMin, -128, i8s), nil
	}
	return softmaxQuantKernel(in.index, out.index, depth, mult, leftShift, diffMin, 0, u8s), nil
}

func softmaxQuantKernel[T qtype](ii, oi, depth int, mult int32, leftShift int, diffMin, outMin int32, get func(*views) [][]T) kernel {
	const accIntBits = 12
	return func(ex *executor) error {
		all := get(&ex.v)
		x, y := all[ii], all[oi]
		for r := 0; r+depth <= len(x) && depth > 0; r += depth {
			row, dst := x[r:r+depth], y[r:r+depth]
			maxv := int32(row[0])
			for _, v := range row {
				maxv = max(maxv, int32(v))
			}
			var sum int32 // Q12.19
			for _, v := range row {
				d := int32(v) - maxv
				if d >= diffMin {
					e := expOnNegativeValues(srdhm(d*(1<<leftShift), mult))
					sum += rdivpot(e, accIntBits)
				}
			}
			scale, bitsOver := reciprocal(sum, accIntBits)
			exp := bitsOver + 31 - 8
			for i, v := range row {
				d := int32(v) - maxv
				if d < diffMin {
					dst[i] = T(outMin)
					continue
				}
				e := expOnNegativeValues(srdhm(d*(1<<leftShift), mult))
				// With many classes the exponent can pass 31 (TFLite's
				// reference kernel refuses that case); the Q0.31 product
				// divided by 2^32 or more then rounds to zero.
				o := outMin
				if exp <= 31 {
					o += rdivpot(srdhm(scale, e), exp)
				}
				dst[i] = T(clamp32(o, outMin, outMin+255))
			}
		}
		return nil
	}
}

func prepActivationQuant(p *opPrep, in, out *tinfo) (kernel, error) {
	if in.typ != tInt8 && in.typ != tUint8 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	si, zi, err := perTensor(in, "input")
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	var f func(float32) float32
	switch p.name {
	case "LOGISTIC":
		f = func(x float32) float32 { return 1 / (1 + float32(math.Exp(float64(-x)))) }
	case "TANH":
		f = func(x float32) float32 { return float32(math.Tanh(float64(x))) }
	default:
		// RELU, RELU6, RELU_N1_TO_1 rescale and clamp.
		return prepReluQuant(p, in, out, si, zi, so, zo)
	}
	// As TFLite does, tabulate the function over all 256 input values.
	lo, hi, _ := qbounds(in.typ)
	inv := 1 / so
	var table [256]int32
	for v := lo; v <= hi; v++ {
		deq := si * float32(v-zi)
		q := int32(float32(math.Round(float64(f(deq)*inv))) + float32(zo))
		table[uint8(v)] = clamp32(q, lo, hi)
	}
	if in.typ == tInt8 {
		return lutKernel(in.index, out.index, &table, i8s), nil
	}
	return lutKernel(in.index, out.index, &table, u8s), nil
}

func lutKernel[T qtype](ii, oi int, table *[256]int32, get func(*views) [][]T) kernel {
	return func(ex *executor) error {
		all := get(&ex.v)
		x, y := all[ii], all[oi]
		y = y[:len(x)]
		for i, v := range x {
			y[i] = T(table[uint8(v)])
		}
		return nil
	}
}

// prepReluQuant is quantized RELU, RELU6 and RELU_N1_TO_1: requantize to
// the output scale and clamp to the activation's range.
func prepReluQuant(p *opPrep, in, out *tinfo, si float32, zi int32, so float32, zo int32) (kernel, error) {
	mult, shift := quantizeMultiplier(float64(si) / float64(so))
	lo, hi, _ := qbounds(out.typ)
	q := func(f float32) int32 { return zo + int32(math.Round(float64(f/so))) }
	switch p.name {
	case "RELU":
		lo = max(lo, q(0))
	case "RELU6":
		lo, hi = max(lo, q(0)), min(hi, q(6))
	case "RELU_N1_TO_1":
		lo, hi = max(lo, q(-1)), min(hi, q(1))
	}
	var table [256]int32
	ilo, ihi, _ := qbounds(in.typ)
	for v := ilo; v <= ihi; v++ {
		table[uint8(v)] = clamp32(mulByQuantizedMultiplier(v-zi, mult, shift)+zo, lo, hi)
	}
	if in.typ == tInt8 {
		return lutKernel(in.index, out.index, &table, i8s), nil
	}
	return lutKernel(in.index, out.index, &table, u8s), nil
}

func prepHardSwishQuant(p *opPrep, in, out *tinfo) (kernel, error) {
	if in.typ != tInt8 && in.typ != tUint8 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	si, zi, err := perTensor(in, "input")
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	hires := (1.0 / 128.0) * si
	const reluishScale = float32(3.0 / 32768.0)
	outM32, outExp := quantizeMultiplier(float64(hires / so))
	if outExp > 0 {
		return nil, unsupported("input %s and output %s scales need a left shift", in, out)
	}
	reluM32, reluExp := quantizeMultiplier(float64(hires / reluishScale))
	outM, reluM := downscaleMultiplier(outM32), downscaleMultiplier(reluM32)
	lo, hi, _ := qbounds(out.typ)
	ilo, ihi, _ := qbounds(in.typ)
	// The function of one 8-bit input is tabulated once.
	var table [256]int32
	for v := ilo; v <= ihi; v++ {
		x := int16(v - zi)
		hiresIn := x * (1 << 7)
		preshift := srdhm16(hiresIn, outM)
		reluish := hiresIn
		if reluExp > 0 {
			reluish = satLeftShift16(reluish, reluExp-1)
		}
		reluish = srdhm16(reluish, reluM)
		if reluExp > 0 {
			reluish = satLeftShift16(reluish, 1)
		}
		if reluExp < 0 {
			reluish = rdivpot16(reluish, -reluExp)
		}
		reluish = int16((int32(reluish) + (1 << 15)) >> 1)
		pre := satDoublingHighMul16(reluish, preshift)
		o := rdivpot16(pre, -outExp)
		o += int16(zo)
		table[uint8(v)] = clamp32(int32(o), lo, hi)
	}
	if in.typ == tInt8 {
		return lutKernel(in.index, out.index, &table, i8s), nil
	}
	return lutKernel(in.index, out.index, &table, u8s), nil
}

// downscaleMultiplier is DownScaleInt32ToInt16Multiplier.
func downscaleMultiplier(m int32) int16 {
	const round = 1 << 15
	if m >= math.MaxInt32-round {
		return math.MaxInt16
	}
	return int16((m + round) >> 16)
}

// prepQuantize is QUANTIZE: float to int8/uint8, or a requantization
// between 8-bit types.
func prepQuantize(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	if in.n != out.n {
		return nil, bad("input %s and output %s differ in size", in, out)
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return nil, err
	}
	lo, hi, ok := qbounds(out.typ)
	if !ok || out.typ == tInt16 {
		return nil, unsupported("output %s has type %s", out, out.typ)
	}
	ii, oi := in.index, out.index
	switch in.typ {
	case tFloat32:
		scale := float64(so)
		q := func(v float32) int32 {
			r := math.Round(float64(v) / scale)
			if r > math.MaxInt32 || r < math.MinInt32 || math.IsNaN(r) {
				if r > 0 {
					return hi
				}
				return lo
			}
			return clamp32(int32(r)+zo, lo, hi)
		}
		if out.typ == tInt8 {
			return func(ex *executor) error {
				x, y := ex.v.f32[ii], ex.v.i8[oi]
				y = y[:len(x)]
				for i, v := range x {
					y[i] = int8(q(v))
				}
				return nil
			}, nil
		}
		return func(ex *executor) error {
			x, y := ex.v.f32[ii], ex.v.u8[oi]
			y = y[:len(x)]
			for i, v := range x {
				y[i] = uint8(q(v))
			}
			return nil
		}, nil
	case tInt8, tUint8:
		si, zi, err := perTensor(in, "input")
		if err != nil {
			return nil, err
		}
		mult, shift := quantizeMultiplier(float64(si) / float64(so))
		var table [256]int32
		ilo, ihi, _ := qbounds(in.typ)
		for v := ilo; v <= ihi; v++ {
			table[uint8(v)] = clamp32(mulByQuantizedMultiplier(v-zi, mult, shift)+zo, lo, hi)
		}
		switch {
		case in.typ == tInt8 && out.typ == tInt8:
			return lutKernel(ii, oi, &table, i8s), nil
		case in.typ == tUint8 && out.typ == tUint8:
			return lutKernel(ii, oi, &table, u8s), nil
		case in.typ == tInt8:
			return func(ex *executor) error {
				x, y := ex.v.i8[ii], ex.v.u8[oi]
				y = y[:len(x)]
				for i, v := range x {
					y[i] = uint8(table[uint8(v)])
				}
				return nil
			}, nil
		default:
			return func(ex *executor) error {
				x, y := ex.v.u8[ii], ex.v.i8[oi]
				y = y[:len(x)]
				for i, v := range x {
					y[i] = int8(table[v])
				}
				return nil
			}, nil
		}
	}
	return nil, unsupported("input %s has type %s", in, in.typ)
}

// prepDequantize is DEQUANTIZE: int8/uint8 to float32.
func prepDequantize(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	if in.n != out.n {
		return nil, bad("input %s and output %s differ in size", in, out)
	}
	if err := types(out, "output", tFloat32); err != nil {
		return nil, err
	}
	si, zi, err := perTensor(in, "input")
	if err != nil {
		return nil, err
	}
	var table [256]float32
	lo, hi, ok := qbounds(in.typ)
	if !ok || in.typ == tInt16 {
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	for v := lo; v <= hi; v++ {
		table[uint8(v)] = float32(float64(si) * float64(v-zi))
	}
	ii, oi := in.index, out.index
	if in.typ == tInt8 {
		return func(ex *executor) error {
			x, y := ex.v.i8[ii], ex.v.f32[oi]
			y = y[:len(x)]
			for i, v := range x {
				y[i] = table[uint8(v)]
			}
			return nil
		}, nil
	}
	return func(ex *executor) error {
		x, y := ex.v.u8[ii], ex.v.f32[oi]
		y = y[:len(x)]
		for i, v := range x {
			y[i] = table[v]
		}
		return nil
	}, nil
}
