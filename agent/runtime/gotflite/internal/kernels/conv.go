package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// ConvParams is the geometry of a 2-D convolution over NHWC tensors, with
// the fused activation's clamp. The caller has already checked that OutH and
// OutW follow from the rest (TFLite's SAME/VALID rules).
type ConvParams struct {
	Batches, InH, InW, InC int
	OutH, OutW, OutC       int
	KH, KW                 int
	StrideH, StrideW       int
	DilH, DilW             int
	PadH, PadW             int     // padding before the first row and column
	Lo, Hi                 float32 // output clamp; -Inf and +Inf for none
}

// maxTaps bounds KH*KW for the convolution plans: each tile keeps its
// indirection table (tileM pointers per tap) on the stack. Larger windows
// are left to the caller's general loop.
const maxTaps = 64

func (p *ConvParams) check() error {
	if p.Batches < 1 || p.InH < 1 || p.InW < 1 || p.InC < 1 || p.OutH < 1 || p.OutW < 1 || p.OutC < 1 {
		return fmt.Errorf("%w: sizes %+v must all be positive", ErrGeometry, *p)
	}
	if p.KH < 1 || p.KW < 1 || p.StrideH < 1 || p.StrideW < 1 || p.DilH < 1 || p.DilW < 1 || p.PadH < 0 || p.PadW < 0 {
		return fmt.Errorf("%w: window %dx%d, stride %dx%d, dilation %dx%d, padding %dx%d", ErrGeometry,
			p.KH, p.KW, p.StrideH, p.StrideW, p.DilH, p.DilW, p.PadH, p.PadW)
	}
	if p.KH*p.KW > maxTaps {
		return fmt.Errorf("%w: window %dx%d has more than %d taps", ErrGeometry, p.KH, p.KW, maxTaps)
	}
	const limit = 1 << 30
	if int64(p.Batches)*int64(p.InH)*int64(p.InW)*int64(p.InC) > limit ||
		int64(p.Batches)*int64(p.OutH)*int64(p.OutW)*int64(p.OutC) > limit {
		return fmt.Errorf("%w: tensors of more than %d elements", ErrGeometry, limit)
	}
	return nil
}

func (p *ConvParams) inLen() int  { return p.Batches * p.InH * p.InW * p.InC }
func (p *ConvParams) outLen() int { return p.Batches * p.OutH * p.OutW * p.OutC }

// The GEMM tile: tileM output pixels by tileN output channels.
const (
	tileM = 6
	tileN = 16
)

// blockBytes is the budget for the packed weights one pass over the row
// tiles walks through, so that they stay in the L2 cache between tiles.
const blockBytes = 384 << 10

// Conv is a prepared float32 CONV_2D: output pixels times output channels
// as an indirect GEMM. Each tile of tileM output pixels gets a table of
// input row pointers, one per pixel and filter tap (a shared row of zeros
// where the tap falls in the padding), so strides, dilation and padding cost
// nothing inside the inner loop and no im2col copy is made.
type Conv struct {
	p      ConvParams
	taps   int
	panels int
	packed []float32 // [panel][tap][ci][tileN], zero past OutC
	bias   []float32 // [panel][tileN]
	zeros  []float32 // InC zeros: the input row of a padded tap
	m      int       // output pixels
	mTiles int
	byN    bool // units are panels of output channels, not row tiles
	nBlock int  // panels per cache block
	direct bool // 1x1, stride 1, no padding: pixel i reads input row i
	// rowTaps: each filter row's KW taps are contiguous in the input (no
	// horizontal dilation) and short, so the kernel takes one pointer per
	// filter row and KW*InC channels; pixels at the left or right edge get
	// their rows copied, zero-padded, to the stack.
	rowTaps bool
}

// Limits of the rowTaps mode: a filter row of at most maxRowSpan values,
// at most maxRowTaps filter rows.
const (
	maxRowSpan = 64
	maxRowTaps = 16
)

// NewConv packs filter ([OutC][KH][KW][InC], TFLite's OHWI) and the optional
// bias (OutC values, nil for none) into a plan. The plan keeps no reference
// to either.
func NewConv(p ConvParams, filter, bias []float32) (*Conv, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	taps, k := p.KH*p.KW, p.InC
	if len(filter) != p.OutC*taps*k {
		return nil, fmt.Errorf("%w: filter of %d values, want %d", ErrGeometry, len(filter), p.OutC*taps*k)
	}
	if bias != nil && len(bias) != p.OutC {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), p.OutC)
	}
	c := &Conv{p: p, taps: taps, panels: (p.OutC + tileN - 1) / tileN}
	c.rowTaps = p.DilW == 1 && p.KW > 1 && p.KW*k <= maxRowSpan && p.KH <= maxRowTaps
	c.zeros = make([]float32, p.KW*k)
	c.packed = make([]float32, c.panels*taps*k*tileN)
	c.bias = make([]float32, c.panels*tileN)
	for oc := 0; oc < p.OutC; oc++ {
		pn, j := oc/tileN, oc%tileN
		for t := 0; t < taps; t++ {
			for ci := 0; ci < k; ci++ {
				c.packed[((pn*taps+t)*k+ci)*tileN+j] = filter[(oc*taps+t)*k+ci]
			}
		}
		if bias != nil {
			c.bias[oc] = bias[oc]
		}
	}
	c.m = p.Batches * p.OutH * p.OutW
	c.direct = taps == 1 && p.StrideH == 1 && p.StrideW == 1 && p.PadH == 0 && p.PadW == 0 &&
		p.OutH == p.InH && p.OutW == p.InW
	c.mTiles = (c.m + tileM - 1) / tileM
	// Few row tiles (the late, small feature maps with wide weights): split
	// the work between threads by output channels instead, which balances
	// better and lets each thread read only its share of the weights.
	c.byN = c.mTiles < 32 && c.panels > c.mTiles
	panelBytes := taps * k * tileN * 4
	c.nBlock = max(1, blockBytes/panelBytes)
	return c, nil
}

// Units is the number of independent work units; Run takes a range of them.
func (c *Conv) Units() int {
	if c.byN {
		return c.panels
	}
	return c.mTiles
}

// Work is the number of multiply-adds of one whole run.
func (c *Conv) Work() int64 { return int64(c.m) * int64(c.p.OutC) * int64(c.taps*c.p.InC) }

// Run computes units [lo, hi) of y = clamp(conv(x, filter) + bias): x is the
// NHWC input and y the NHWC output, of the plan's sizes. Disjoint ranges may
// run concurrently. It allocates nothing.
func (c *Conv) Run(x, y []float32, lo, hi int) {
	p := &c.p
	if len(x) < p.inLen() || len(y) < p.outLen() || lo < 0 || hi > c.Units() {
		panic(fmt.Sprintf("kernels: Conv.Run with %d inputs, %d outputs, units [%d, %d) of %d", len(x), len(y), lo, hi, c.Units()))
	}
	t0, t1, p0, p1 := lo, hi, 0, c.panels
	if c.byN {
		t0, t1, p0, p1 = 0, c.mTiles, lo, hi
	}
	var ptrs [tileM * maxTaps]unsafe.Pointer
	var tmp [tileM * tileN]float32
	var edge [tileM * maxRowTaps * maxRowSpan]float32
	xb := unsafe.Pointer(unsafe.SliceData(x))
	zero := unsafe.Pointer(unsafe.SliceData(c.zeros))
	taps, k, oc := c.taps, p.InC, p.OutC
	panelLen := taps * k * tileN
	if c.rowTaps {
		// The same packed weights: filter row fy, column fx, channel ci
		// is at row fy, index fx*InC+ci.
		taps, k = p.KH, p.KW*p.InC
	}
	for b0 := p0; b0 < p1; b0 += c.nBlock {
		b1 := min(b0+c.nBlock, p1)
		for t := t0; t < t1; t++ {
			r0 := t * tileM
			rows := min(tileM, c.m-r0)
			if c.rowTaps {
				c.fillRowPointers(&ptrs, &edge, x, zero, r0, rows)
				for i := range p.KH * tileM {
					if ptrs[i] == nil {
						ptrs[i] = unsafe.Pointer(&edge[i*maxRowSpan])
					}
				}
			} else {
				c.fillPointers(&ptrs, xb, zero, r0, rows)
			}
			for pn := b0; pn < b1; pn++ {
				w := c.packed[pn*panelLen:]
				bias := c.bias[pn*tileN:]
				cols := min(tileN, oc-pn*tileN)
				if rows == tileM && cols == tileN {
					tile(&ptrs, taps, k, w, bias, y[r0*oc+pn*tileN:], oc, p.Lo, p.Hi)
					continue
				}
				tile(&ptrs, taps, k, w, bias, tmp[:], tileN, p.Lo, p.Hi)
				for r := 0; r < rows; r++ {
					copy(y[(r0+r)*oc+pn*tileN:][:cols], tmp[r*tileN:][:cols])
				}
			}
		}
	}
}

// fillPointers writes the indirection table of the tile whose first output
// pixel is r0: entry tap*tileM+r points at the input channels read by tap
// for pixel r0+r. Rows past the last pixel repeat the last one.
func (c *Conv) fillPointers(ptrs *[tileM * maxTaps]unsafe.Pointer, x, zero unsafe.Pointer, r0, rows int) {
	p := &c.p
	if c.direct {
		// 1x1, stride 1, no padding: output pixel i reads input pixel i.
		for r := 0; r < tileM; r++ {
			ptrs[r] = unsafe.Add(x, (r0+min(r, rows-1))*p.InC*4)
		}
		return
	}
	hw := p.OutH * p.OutW
	b, rem := r0/hw, r0%hw
	oy, ox := rem/p.OutW, rem%p.OutW
	for r := 0; r < tileM; r++ {
		if r > 0 && r < rows {
			// Step to the next output pixel.
			if ox++; ox == p.OutW {
				ox = 0
				if oy++; oy == p.OutH {
					oy = 0
					b++
				}
			}
		}
		y0, x0 := oy*p.StrideH-p.PadH, ox*p.StrideW-p.PadW
		base := b * p.InH
		t := r
		for fy := 0; fy < p.KH; fy++ {
			iy := y0 + fy*p.DilH
			rowOK := iy >= 0 && iy < p.InH
			rowOff := (base + iy) * p.InW
			for fx := 0; fx < p.KW; fx++ {
				ix := x0 + fx*p.DilW
				ptr := zero
				if rowOK && ix >= 0 && ix < p.InW {
					ptr = unsafe.Add(x, (rowOff+ix)*p.InC*4)
				}
				ptrs[t] = ptr
				t += tileM
			}
		}
	}
}

// fillRowPointers is fillPointers for the rowTaps mode: entry fy*tileM+r
// points at the KW*InC input values under filter row fy for pixel r0+r,
// at a row of zeros when the row is outside the input; when the window
// crosses the left or right edge it writes a zero-padded copy to edge and
// leaves the entry nil for the caller to point at it.
func (c *Conv) fillRowPointers(ptrs *[tileM * maxTaps]unsafe.Pointer, edge *[tileM * maxRowTaps * maxRowSpan]float32, x []float32, zero unsafe.Pointer, r0, rows int) {
	p := &c.p
	span := p.KW * p.InC
	hw := p.OutH * p.OutW
	b, rem := r0/hw, r0%hw
	oy, ox := rem/p.OutW, rem%p.OutW
	for r := 0; r < tileM; r++ {
		if r > 0 && r < rows {
			if ox++; ox == p.OutW {
				ox = 0
				if oy++; oy == p.OutH {
					oy = 0
					b++
				}
			}
		}
		y0, x0 := oy*p.StrideH-p.PadH, ox*p.StrideW-p.PadW
		inside := x0 >= 0 && x0+p.KW <= p.InW
		for fy := 0; fy < p.KH; fy++ {
			iy := y0 + fy*p.DilH
			slot := fy*tileM + r
			switch {
			case iy < 0 || iy >= p.InH:
				ptrs[slot] = zero
			case inside:
				ptrs[slot] = unsafe.Pointer(&x[((b*p.InH+iy)*p.InW+x0)*p.InC])
			default:
				e := edge[slot*maxRowSpan:][:span]
				row := x[(b*p.InH+iy)*p.InW*p.InC:][:p.InW*p.InC]
				for fx := 0; fx < p.KW; fx++ {
					d := e[fx*p.InC:][:p.InC]
					if ix := x0 + fx; ix >= 0 && ix < p.InW {
						copy(d, row[ix*p.InC:][:p.InC])
					} else {
						clear(d)
					}
				}
				ptrs[slot] = nil // Run points it at e: edge must stay in its frame
			}
		}
	}
}

// tile computes one tileM x tileN block: for row r and column j,
// c[r*ldc+j] = clamp(bias[j] + sum over taps t and channels i of
// a[t*tileM+r][i] * w[(t*k+i)*tileN+j]).
func tile(a *[tileM * maxTaps]unsafe.Pointer, taps, k int, w, bias, c []float32, ldc int, lo, hi float32) {
	_ = w[taps*k*tileN-1]
	_ = bias[tileN-1]
	_ = c[(tileM-1)*ldc+tileN-1]
	switch {
	case haveAVX2:
		tileAVX2(&a[0], taps, k, &w[0], &bias[0], &c[0], ldc, lo, hi)
	case haveNEON:
		tileNEON(&a[0], taps, k, &w[0], &bias[0], &c[0], ldc, lo, hi)
	default:
		tileGo(a, taps, k, w, bias, c, ldc, lo, hi)
	}
}

// tileGo is the portable tile kernel. It works on two rows by eight
// columns at a time in sixteen scalar sums, which the compiler keeps in
// registers on arm64 (and mostly on 32-bit ARM), reusing each weight load
// for two rows.
func tileGo(a *[tileM * maxTaps]unsafe.Pointer, taps, k int, w, bias, c []float32, ldc int, lo, hi float32) {
	for r := 0; r < tileM; r += 2 {
		for cb := 0; cb < tileN; cb += 8 {
			b := bias[cb : cb+8]
			p0, p1, p2, p3, p4, p5, p6, p7 := b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
			q0, q1, q2, q3, q4, q5, q6, q7 := p0, p1, p2, p3, p4, p5, p6, p7
			for t := 0; t < taps; t++ {
				x0 := unsafe.Slice((*float32)(a[t*tileM+r]), k)
				x1 := unsafe.Slice((*float32)(a[t*tileM+r+1]), k)
				wt := w[t*k*tileN : (t+1)*k*tileN]
				for i := 0; i < k; i++ {
					v0, v1 := x0[i], x1[i]
					wr := wt[i*tileN+cb : i*tileN+cb+8]
					w0, w1, w2, w3, w4, w5, w6, w7 := wr[0], wr[1], wr[2], wr[3], wr[4], wr[5], wr[6], wr[7]
					p0 += v0 * w0
					p1 += v0 * w1
					p2 += v0 * w2
					p3 += v0 * w3
					p4 += v0 * w4
					p5 += v0 * w5
					p6 += v0 * w6
					p7 += v0 * w7
					q0 += v1 * w0
					q1 += v1 * w1
					q2 += v1 * w2
					q3 += v1 * w3
					q4 += v1 * w4
					q5 += v1 * w5
					q6 += v1 * w6
					q7 += v1 * w7
				}
			}
			o := c[r*ldc+cb : r*ldc+cb+8]
			o[0], o[1], o[2], o[3] = clamp(p0, lo, hi), clamp(p1, lo, hi), clamp(p2, lo, hi), clamp(p3, lo, hi)
			o[4], o[5], o[6], o[7] = clamp(p4, lo, hi), clamp(p5, lo, hi), clamp(p6, lo, hi), clamp(p7, lo, hi)
			o = c[(r+1)*ldc+cb : (r+1)*ldc+cb+8]
			o[0], o[1], o[2], o[3] = clamp(q0, lo, hi), clamp(q1, lo, hi), clamp(q2, lo, hi), clamp(q3, lo, hi)
			o[4], o[5], o[6], o[7] = clamp(q4, lo, hi), clamp(q5, lo, hi), clamp(q6, lo, hi), clamp(q7, lo, hi)
		}
	}
}

// clamp keeps NaN, as the TFLite reference kernels do.
func clamp(x, lo, hi float32) float32 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}

// inf is +Inf as a float32, for callers building "no activation" params.
var inf = float32(math.Inf(1))

// NoClamp returns the clamp bounds of no fused activation.
func NoClamp() (lo, hi float32) { return -inf, inf }
