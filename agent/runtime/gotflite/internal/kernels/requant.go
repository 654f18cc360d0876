package kernels

import (
	"fmt"
	"math"
)

// Requant is the fixed-point output stage of TFLite's int8 kernels, per
// output channel c: out = clamp(MultiplyByQuantizedMultiplier(acc, Mult[c],
// Shift[c]) + OutZero, Lo, Hi), with the rounding of the reference kernels
// (round half away from zero in the doubling high multiply, round half up
// in the power-of-two division). Mult and Shift have one entry per output
// channel; Shift is positive for a left shift.
type Requant struct {
	Mult    []int32
	Shift   []int
	OutZero int32
	Lo, Hi  int32 // the activation's clamp, within [-128, 127]
}

func (rq *Requant) check(channels int) error {
	if len(rq.Mult) != channels || len(rq.Shift) != channels {
		return fmt.Errorf("%w: %d multipliers and %d shifts for %d channels", ErrGeometry, len(rq.Mult), len(rq.Shift), channels)
	}
	if rq.Lo > rq.Hi || rq.Lo < math.MinInt8 || rq.Hi > math.MaxInt8 {
		return fmt.Errorf("%w: output clamp [%d, %d]", ErrGeometry, rq.Lo, rq.Hi)
	}
	if rq.OutZero < math.MinInt8 || rq.OutZero > math.MaxInt8 {
		return fmt.Errorf("%w: output zero point %d", ErrGeometry, rq.OutZero)
	}
	return nil
}

// rqBlock is the requantization of 8 channels in the layout the assembly
// reads (kernels_amd64.s hard-codes the offsets and the 352-byte size;
// TestRQBlockLayout holds them): 32-byte vectors.
type rqBlock struct {
	bias    [8]int32 // used by the GEMM; the depthwise kernel takes its own
	mult    [8]int32
	left    [8]int32 // left shift
	right   [8]int32 // right shift, at most 31
	mask    [8]int32 // 1<<right - 1
	half    [8]int32 // mask >> 1
	multOdd [8]int32 // the odd lanes' multipliers, in the even lanes
	zero    [8]int32 // output zero point
	lo8     [32]int8
	hi8     [32]int8
	nudge   [4]int64 // 1 << 30
}

// makeBlocks lays out rq (and bias, nil for none) for its channels in
// blocks (at least enough for them); the padding channels get a zero
// multiplier.
func makeBlocks(rq *Requant, bias []int32, blocks int) []rqBlock {
	n := len(rq.Mult)
	bs := make([]rqBlock, max(blocks, (n+7)/8))
	for i := range bs {
		b := &bs[i]
		for j := range 8 {
			c := i*8 + j
			if c >= n {
				continue
			}
			if bias != nil {
				b.bias[j] = bias[c]
			}
			b.mult[j] = rq.Mult[c]
			l, r := splitShift(rq.Shift[c])
			b.left[j], b.right[j] = int32(l), int32(r)
			b.mask[j] = int32(int64(1)<<r - 1)
			b.half[j] = b.mask[j] >> 1
		}
		for j := 0; j < 8; j += 2 {
			b.multOdd[j] = b.mult[j+1]
		}
		for j := range b.zero {
			b.zero[j] = rq.OutZero
		}
		for j := range b.lo8 {
			b.lo8[j], b.hi8[j] = int8(rq.Lo), int8(rq.Hi)
		}
		for j := range b.nudge {
			b.nudge[j] = 1 << 30
		}
	}
	return bs
}

// splitShift turns TFLite's signed shift into left and right shifts, the
// right one capped at 31 as the reference's rounding division does.
func splitShift(shift int) (left, right int) {
	if shift > 0 {
		return min(shift, 32), 0
	}
	return 0, min(-shift, 31)
}

// requantGo is the portable output stage of one value.
func requantGo(acc int32, b *rqBlock, j int) int8 {
	x := acc
	if l := b.left[j]; l > 0 {
		if l >= 32 {
			x = 0
		} else {
			x <<= l
		}
	}
	// Doubling high multiply, rounded half away from zero: equal to
	// floor((x*m + 2^30) / 2^31) for both signs.
	x = int32((int64(x)*int64(b.mult[j]) + 1<<30) >> 31)
	if r := b.right[j]; r > 0 {
		rem := x & b.mask[j]
		th := b.half[j]
		if x < 0 {
			th++
		}
		x >>= r
		if rem > th {
			x++
		}
	}
	x += b.zero[0]
	return int8(min(max(x, int32(b.lo8[0])), int32(b.hi8[0])))
}
