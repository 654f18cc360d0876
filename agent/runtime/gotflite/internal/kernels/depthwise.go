package kernels

import (
	"fmt"
	"unsafe"
)

// Depthwise is a prepared float32 DEPTHWISE_CONV_2D with a depth multiplier
// of 1 (InC == OutC). Output rows are its work units. Within a row, the
// pixels whose whole window lies inside the input go through the vector
// kernel in one call; the edge pixels pass only their in-range taps.
type Depthwise struct {
	p    ConvParams
	taps int
	w    []float32 // [tap][C]
	bias []float32 // C, zero when the model has none
	vec  int       // channels the vector kernel covers (a multiple of 8, 4 on arm64)
	// oxA and oxB bound the interior output columns [oxA, oxB) whose
	// horizontal taps are all inside the input.
	oxA, oxB int
}

// NewDepthwise copies filter ([1][KH][KW][C], TFLite's layout) and the
// optional bias (C values, nil for none) into a plan. p.InC must equal
// p.OutC.
func NewDepthwise(p ConvParams, filter, bias []float32) (*Depthwise, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if p.InC != p.OutC {
		return nil, fmt.Errorf("%w: depth multiplier %d/%d, want 1", ErrGeometry, p.OutC, p.InC)
	}
	taps, ch := p.KH*p.KW, p.OutC
	if len(filter) != taps*ch {
		return nil, fmt.Errorf("%w: filter of %d values, want %d", ErrGeometry, len(filter), taps*ch)
	}
	if bias != nil && len(bias) != ch {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), ch)
	}
	d := &Depthwise{p: p, taps: taps, w: append([]float32(nil), filter...), bias: make([]float32, ch)}
	copy(d.bias, bias)
	switch {
	case haveAVX2:
		d.vec = ch &^ 7
	case haveNEON:
		d.vec = ch &^ 3
	}
	// Interior columns: ox*sw - padW >= 0 and ox*sw - padW + (KW-1)*dw < InW.
	d.oxA = min(p.OutW, (p.PadW+p.StrideW-1)/p.StrideW)
	last := p.InW - 1 - (p.KW-1)*p.DilW + p.PadW // largest ox*sw allowed
	d.oxB = 0
	if last >= 0 {
		d.oxB = min(p.OutW, last/p.StrideW+1)
	}
	if d.oxB < d.oxA {
		d.oxB = d.oxA
	}
	return d, nil
}

// Units is the number of output rows (batches times output height).
func (d *Depthwise) Units() int { return d.p.Batches * d.p.OutH }

// Work is the number of multiply-adds of one whole run.
func (d *Depthwise) Work() int64 {
	return int64(d.p.Batches*d.p.OutH*d.p.OutW) * int64(d.p.OutC) * int64(d.taps)
}

// Run computes output rows [lo, hi) of the depthwise convolution of x into
// y (NHWC, the plan's sizes). Disjoint ranges may run concurrently. It
// allocates nothing.
func (d *Depthwise) Run(x, y []float32, lo, hi int) {
	p := &d.p
	if len(x) < p.inLen() || len(y) < p.outLen() || lo < 0 || hi > d.Units() {
		panic(fmt.Sprintf("kernels: Depthwise.Run with %d inputs, %d outputs, rows [%d, %d) of %d", len(x), len(y), lo, hi, d.Units()))
	}
	var ins, ws [maxTaps]unsafe.Pointer
	xb := unsafe.Pointer(unsafe.SliceData(x))
	wb := unsafe.Pointer(unsafe.SliceData(d.w))
	ch := p.OutC
	for r := lo; r < hi; r++ {
		b, oy := r/p.OutH, r%p.OutH
		y0 := oy*p.StrideH - p.PadH
		row := y[r*p.OutW*ch:]
		// The interior run: every horizontal tap in range, from column oxA.
		if d.oxB > d.oxA {
			x0 := d.oxA*p.StrideW - p.PadW
			n := 0
			for fy := 0; fy < p.KH; fy++ {
				iy := y0 + fy*p.DilH
				if iy < 0 || iy >= p.InH {
					continue
				}
				for fx := 0; fx < p.KW; fx++ {
					ix := x0 + fx*p.DilW
					ins[n] = unsafe.Add(xb, ((b*p.InH+iy)*p.InW+ix)*ch*4)
					ws[n] = unsafe.Add(wb, (fy*p.KW+fx)*ch*4)
					n++
				}
			}
			d.pixels(d.oxB-d.oxA, &ins, &ws, n, p.StrideW*ch*4, row[d.oxA*ch:])
		}
		for ox := 0; ox < p.OutW; ox++ {
			if ox == d.oxA && d.oxB > d.oxA {
				ox = d.oxB - 1
				continue
			}
			x0 := ox*p.StrideW - p.PadW
			n := 0
			for fy := 0; fy < p.KH; fy++ {
				iy := y0 + fy*p.DilH
				if iy < 0 || iy >= p.InH {
					continue
				}
				for fx := 0; fx < p.KW; fx++ {
					ix := x0 + fx*p.DilW
					if ix < 0 || ix >= p.InW {
						continue
					}
					ins[n] = unsafe.Add(xb, ((b*p.InH+iy)*p.InW+ix)*ch*4)
					ws[n] = unsafe.Add(wb, (fy*p.KW+fx)*ch*4)
					n++
				}
			}
			d.pixels(1, &ins, &ws, n, 0, row[ox*ch:])
		}
	}
}

// pixels computes n consecutive output pixels into out, pixel i reading
// tap t's channels at ins[t] + i*step bytes, with weights at ws[t].
func (d *Depthwise) pixels(n int, ins, ws *[maxTaps]unsafe.Pointer, taps, step int, out []float32) {
	ch := d.p.OutC
	_ = out[(n-1)*ch+ch-1]
	if d.vec > 0 {
		if haveNEON {
			dwNEON(n, &ins[0], &ws[0], taps, step, d.vec, &d.bias[0], &out[0], ch*4, d.p.Lo, d.p.Hi)
		} else {
			dwAVX2(n, &ins[0], &ws[0], taps, step, d.vec, &d.bias[0], &out[0], ch*4, d.p.Lo, d.p.Hi)
		}
	}
	if d.vec < ch {
		dwGo(n, ins, ws, taps, step, d.vec, ch, d.bias, out, d.p.Lo, d.p.Hi)
	}
}

// dwGo is the portable depthwise kernel over channels [c0, c1).
func dwGo(n int, ins, ws *[maxTaps]unsafe.Pointer, taps, step, c0, c1 int, bias, out []float32, lo, hi float32) {
	ch := len(bias)
	for i := 0; i < n; i++ {
		o := out[i*ch:][:ch]
		for c := c0; c < c1; c++ {
			o[c] = bias[c]
		}
		for t := 0; t < taps; t++ {
			in := unsafe.Slice((*float32)(unsafe.Add(ins[t], i*step)), ch)
			w := unsafe.Slice((*float32)(ws[t]), ch)
			for c := c0; c < c1; c++ {
				o[c] += in[c] * w[c]
			}
		}
		for c := c0; c < c1; c++ {
			o[c] = clamp(o[c], lo, hi)
		}
	}
}
