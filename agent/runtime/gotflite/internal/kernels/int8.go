package kernels

import (
	"fmt"
	"unsafe"
)

// The int8 plans compute exactly what TFLite's reference integer kernels
// compute: int32 sums of int8 weights times (input - input zero point),
// plus the bias, through Requant. Integer sums are exact in any order, so
// the vector and portable paths agree bit for bit.

// The int8 GEMM tile: qTileM output pixels by tileN output channels (the
// AVX2 kernel takes it as two tiles of 4 rows).
const qTileM = 8

// maxQRow bounds the gathered (widened) input row of one output pixel,
// taps times channels rounded up to even: the tile keeps qTileM of them on
// the stack.
const maxQRow = 4096

// ConvInt8 is a prepared int8 CONV_2D. For each tile of output pixels it
// gathers the pixels' input windows, widened to int16 with the input zero
// point taken off (a padded tap reads as zero), and multiplies them with
// the packed int16 weights: pairs of input channels, as VPMADDWD takes them.
type ConvInt8 struct {
	p     ConvParams
	inOff int32
	taps  int
	// A gathered window is KH rows of rowLen int16s, tap (fy, fx) channel
	// ci at fy*rowLen + fx*fxStep + ci. With no horizontal dilation a row
	// is the KW*InC contiguous input values (one copy), rounded up to an
	// even length; otherwise each tap has InC rounded up to even.
	fxStep, rowLen int
	kt             int // KH * rowLen, the GEMM depth
	panels         int
	packed         []int16 // [panel][kt/2][tileN][2]
	rq             []rqBlock
	m              int
	mTiles         int
	byN            bool
	nBlock         int
	direct         bool    // 1x1, stride 1, no padding, even InC: a tile is 4 input rows
	u8             *convU8 // the VNNI byte layout, when the CPU has it
}

// NewConvInt8 packs filter ([OutC][KH][KW][InC] int8, zero point 0 as
// TFLite's int8 scheme requires) and bias (OutC int32s, nil for none).
// inZero is the input's zero point.
func NewConvInt8(p ConvParams, inZero int32, filter []int8, bias []int32, rq Requant) (*ConvInt8, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if err := rq.check(p.OutC); err != nil {
		return nil, err
	}
	taps := p.KH * p.KW
	if len(filter) != p.OutC*taps*p.InC {
		return nil, fmt.Errorf("%w: filter of %d values, want %d", ErrGeometry, len(filter), p.OutC*taps*p.InC)
	}
	if bias != nil && len(bias) != p.OutC {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), p.OutC)
	}
	if inZero < -128 || inZero > 127 {
		return nil, fmt.Errorf("%w: input zero point %d", ErrGeometry, inZero)
	}
	c := &ConvInt8{p: p, inOff: -inZero, taps: taps}
	if p.DilW == 1 {
		c.fxStep, c.rowLen = p.InC, (p.KW*p.InC+1)&^1
	} else {
		c.fxStep = (p.InC + 1) &^ 1
		c.rowLen = p.KW * c.fxStep
	}
	c.kt = p.KH * c.rowLen
	if c.kt > maxQRow {
		return nil, fmt.Errorf("%w: window of %d taps x %d channels is over %d", ErrGeometry, taps, p.InC, maxQRow)
	}
	c.panels = (p.OutC + tileN - 1) / tileN
	c.packed = make([]int16, c.panels*c.kt*tileN)
	for oc := 0; oc < p.OutC; oc++ {
		pn, j := oc/tileN, oc%tileN
		for t := 0; t < taps; t++ {
			for ci := 0; ci < p.InC; ci++ {
				k := t/p.KW*c.rowLen + t%p.KW*c.fxStep + ci
				c.packed[((pn*c.kt/2+k/2)*tileN+j)*2+k%2] = int16(filter[(oc*taps+t)*p.InC+ci])
			}
		}
	}
	c.rq = makeBlocks(&rq, bias, 2*c.panels)
	c.m = p.Batches * p.OutH * p.OutW
	c.direct = taps == 1 && p.StrideH == 1 && p.StrideW == 1 && p.PadH == 0 && p.PadW == 0 &&
		p.OutH == p.InH && p.OutW == p.InW && p.InC%2 == 0
	c.mTiles = (c.m + qTileM - 1) / qTileM
	c.byN = c.mTiles < 32 && c.panels > c.mTiles
	c.nBlock = max(1, blockBytes/(c.kt*tileN*2))
	if haveVNNI {
		c.u8 = newConvU8(c, inZero, filter, bias, &rq)
	}
	return c, nil
}

// Units is the number of independent work units; Run takes a range.
func (c *ConvInt8) Units() int {
	if c.byN {
		return c.panels
	}
	return c.mTiles
}

// Work is the number of multiply-adds of one whole run.
func (c *ConvInt8) Work() int64 { return int64(c.m) * int64(c.p.OutC) * int64(c.taps*c.p.InC) }

// Run computes units [lo, hi) of the convolution of x into y (NHWC, the
// plan's sizes). Disjoint ranges may run concurrently. It allocates nothing.
func (c *ConvInt8) Run(x, y []int8, lo, hi int) {
	p := &c.p
	if len(x) < p.inLen() || len(y) < p.outLen() || lo < 0 || hi > c.Units() {
		panic(fmt.Sprintf("kernels: ConvInt8.Run with %d inputs, %d outputs, units [%d, %d) of %d", len(x), len(y), lo, hi, c.Units()))
	}
	t0, t1, p0, p1 := lo, hi, 0, c.panels
	if c.byN {
		t0, t1, p0, p1 = 0, c.mTiles, lo, hi
	}
	if c.u8 != nil {
		c.u8.run(c, x, y, t0, t1, p0, p1)
		return
	}
	c.run16(x, y, t0, t1, p0, p1)
}

// run16 is Run on the int16 layout (its own frame, so that the byte
// path's goroutines do not carry this one's 64 KiB buffer).
func (c *ConvInt8) run16(x, y []int8, t0, t1, p0, p1 int) {
	p := &c.p
	var a [qTileM * maxQRow]int16
	var tmp [qTileM * tileN]int8
	oc := p.OutC
	for b0 := p0; b0 < p1; b0 += c.nBlock {
		b1 := min(b0+c.nBlock, p1)
		for t := t0; t < t1; t++ {
			r0 := t * qTileM
			rows := min(qTileM, c.m-r0)
			c.gather(&a, x, r0, rows)
			for pn := b0; pn < b1; pn++ {
				w := c.packed[pn*c.kt*tileN:][:c.kt*tileN]
				rq := c.rq[2*pn:][:2]
				cols := min(tileN, oc-pn*tileN)
				if rows == qTileM && cols == tileN {
					qtile(&a, c.kt, w, rq, y[r0*oc+pn*tileN:], oc)
					continue
				}
				qtile(&a, c.kt, w, rq, tmp[:], tileN)
				for r := 0; r < rows; r++ {
					copy(y[(r0+r)*oc+pn*tileN:][:cols], tmp[r*tileN:][:cols])
				}
			}
		}
	}
}

// gather writes the widened input windows of output pixels r0 to
// r0+rows-1 into rows of a (kt int16s each, row r at r*kt); rows past the
// last pixel repeat it.
func (c *ConvInt8) gather(a *[qTileM * maxQRow]int16, x []int8, r0, rows int) {
	p := &c.p
	if c.direct && rows == qTileM {
		// The tile's windows are qTileM consecutive input rows.
		n := qTileM * p.InC
		widen(a[:n], x[r0*p.InC:][:n], c.inOff)
		return
	}
	hw := p.OutH * p.OutW
	b, rem := r0/hw, r0%hw
	oy, ox := rem/p.OutW, rem%p.OutW
	for r := 0; r < qTileM; r++ {
		row := a[r*c.kt:][:c.kt]
		if r >= rows {
			copy(row, a[(rows-1)*c.kt:][:c.kt])
			continue
		}
		if r > 0 {
			if ox++; ox == p.OutW {
				ox = 0
				if oy++; oy == p.OutH {
					oy = 0
					b++
				}
			}
		}
		y0, x0 := oy*p.StrideH-p.PadH, ox*p.StrideW-p.PadW
		inside := x0 >= 0 && x0+(p.KW-1)*p.DilW < p.InW
		for fy := 0; fy < p.KH; fy++ {
			seg := row[fy*c.rowLen:][:c.rowLen]
			iy := y0 + fy*p.DilH
			if iy < 0 || iy >= p.InH {
				clear(seg)
				continue
			}
			srcOff := ((b*p.InH + iy) * p.InW) * p.InC
			src := x[srcOff:][:p.InW*p.InC]
			if inside && p.DilW == 1 {
				n := p.KW * p.InC
				segOff := r*c.kt + fy*c.rowLen
				switch {
				case n >= 16:
					widen(seg[:n], src[x0*p.InC:][:n], c.inOff)
				case haveAVX2 && srcOff+x0*p.InC+16 <= len(x) && segOff+16 <= len(a):
					// A short row (a first layer's few channels): widen
					// 16 values anyway. The extra ones land on this row's
					// padding (zeroed below) or on values written after
					// this one, in this window or the next pixel's.
					widenAVX2(&a[segOff], &x[srcOff+x0*p.InC], 16, c.inOff)
				default:
					d := seg[:n]
					for i, v := range src[x0*p.InC:][:n] {
						d[i] = int16(int32(v) + c.inOff)
					}
				}
				for i := n; i < len(seg); i++ {
					seg[i] = 0
				}
				continue
			}
			clear(seg)
			for fx := 0; fx < p.KW; fx++ {
				if ix := x0 + fx*p.DilW; ix >= 0 && ix < p.InW {
					widen(seg[fx*c.fxStep:][:p.InC], src[ix*p.InC:][:p.InC], c.inOff)
				}
			}
		}
	}
}

// widen sets dst[i] = src[i] + off.
func widen(dst []int16, src []int8, off int32) {
	src = src[:len(dst)]
	i := 0
	if haveAVX2 && len(dst) >= 16 {
		i = len(dst) &^ 15
		widenAVX2(&dst[0], &src[0], i, off)
	}
	for ; i < len(dst); i++ {
		dst[i] = int16(int32(src[i]) + off)
	}
}

// qtile computes one qTileM x tileN block of int8 outputs from rows of a
// (kt int16s each) and the panel's weights w, into c with row stride ldc.
func qtile(a *[qTileM * maxQRow]int16, kt int, w []int16, rq []rqBlock, c []int8, ldc int) {
	_ = w[kt*tileN-1]
	_ = rq[1]
	_ = c[(qTileM-1)*ldc+tileN-1]
	switch {
	case haveVNNI:
		qtileVNNI(&a[0], kt*2, kt/2, &w[0], &rq[0], &c[0], ldc)
		return
	case haveAVX2:
		qtileAVX2(&a[0], kt*2, kt/2, &w[0], &rq[0], &c[0], ldc)
		qtileAVX2(&a[4*kt], kt*2, kt/2, &w[0], &rq[0], &c[4*ldc], ldc)
		return
	}
	qtileGo(a, kt, w, rq, c, ldc)
}

// qtileGo is the portable int8 tile kernel: one row by eight channels at
// a time in scalar sums.
func qtileGo(a *[qTileM * maxQRow]int16, kt int, w []int16, rq []rqBlock, c []int8, ldc int) {
	for r := 0; r < qTileM; r++ {
		row := a[r*kt : (r+1)*kt]
		for cb := 0; cb < tileN; cb += 8 {
			blk := &rq[cb/8]
			s0, s1, s2, s3 := blk.bias[0], blk.bias[1], blk.bias[2], blk.bias[3]
			s4, s5, s6, s7 := blk.bias[4], blk.bias[5], blk.bias[6], blk.bias[7]
			for k := 0; k+1 < kt; k += 2 {
				a0, a1 := int32(row[k]), int32(row[k+1])
				wk := w[k*tileN+2*cb : k*tileN+2*cb+16]
				s0 += int32(wk[0])*a0 + int32(wk[1])*a1
				s1 += int32(wk[2])*a0 + int32(wk[3])*a1
				s2 += int32(wk[4])*a0 + int32(wk[5])*a1
				s3 += int32(wk[6])*a0 + int32(wk[7])*a1
				s4 += int32(wk[8])*a0 + int32(wk[9])*a1
				s5 += int32(wk[10])*a0 + int32(wk[11])*a1
				s6 += int32(wk[12])*a0 + int32(wk[13])*a1
				s7 += int32(wk[14])*a0 + int32(wk[15])*a1
			}
			o := c[r*ldc+cb : r*ldc+cb+8]
			o[0], o[1], o[2], o[3] = requantGo(s0, blk, 0), requantGo(s1, blk, 1), requantGo(s2, blk, 2), requantGo(s3, blk, 3)
			o[4], o[5], o[6], o[7] = requantGo(s4, blk, 4), requantGo(s5, blk, 5), requantGo(s6, blk, 6), requantGo(s7, blk, 7)
		}
	}
}

// DepthwiseInt8 is a prepared int8 DEPTHWISE_CONV_2D with a depth
// multiplier of 1. The input zero point's share of each sum, which depends
// only on which taps fall inside the input, is folded into the bias: once
// for interior rows, per row near the top and bottom edges.
type DepthwiseInt8 struct {
	p     ConvParams
	inOff int32
	taps  int
	cpad  int       // channels rounded up to 8
	w     []int32   // [tap][cpad], the weight in the low 16 bits
	w8    []int8    // [tap][C], for the portable path
	bias  []int32   // cpad
	rq    []rqBlock // cpad/8
	// Interior output columns [oxA, oxB): every horizontal tap inside.
	oxA, oxB int
	// folds holds the folded bias of each set of in-range taps (a bit
	// mask) that the output positions use, computed at plan time.
	folds []fold
	// paired holds the weights of taps 2p and 2p+1 interleaved,
	// [pair][cpad][2] (a zero weight pairs with an odd last tap), for the
	// kernel that multiplies two taps at once on interior rows.
	paired []int16
	pairs  int
}

// fold is the bias of DepthwiseInt8 with the input zero point's share
// of the taps in mask folded in.
type fold struct {
	mask uint64
	bias []int32
}

// maxFolds bounds the precomputed folded biases; other tap sets (only
// on inputs smaller than the window) are folded when used.
const maxFolds = 64

// maxQChannels bounds DepthwiseInt8's per-row bias on the stack.
const maxQChannels = 4096

// NewDepthwiseInt8 copies filter ([1][KH][KW][C] int8) and bias (C int32s,
// nil for none) into a plan; inZero is the input's zero point.
func NewDepthwiseInt8(p ConvParams, inZero int32, filter []int8, bias []int32, rq Requant) (*DepthwiseInt8, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if p.InC != p.OutC {
		return nil, fmt.Errorf("%w: depth multiplier %d/%d, want 1", ErrGeometry, p.OutC, p.InC)
	}
	if err := rq.check(p.OutC); err != nil {
		return nil, err
	}
	taps, ch := p.KH*p.KW, p.OutC
	if len(filter) != taps*ch {
		return nil, fmt.Errorf("%w: filter of %d values, want %d", ErrGeometry, len(filter), taps*ch)
	}
	if bias != nil && len(bias) != ch {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), ch)
	}
	if ch > maxQChannels {
		return nil, fmt.Errorf("%w: %d channels is over %d", ErrGeometry, ch, maxQChannels)
	}
	if inZero < -128 || inZero > 127 {
		return nil, fmt.Errorf("%w: input zero point %d", ErrGeometry, inZero)
	}
	d := &DepthwiseInt8{p: p, inOff: -inZero, taps: taps, cpad: (ch + 7) &^ 7}
	d.w = make([]int32, taps*d.cpad)
	d.w8 = append([]int8(nil), filter...)
	for t := 0; t < taps; t++ {
		for c := 0; c < ch; c++ {
			d.w[t*d.cpad+c] = int32(uint16(int16(filter[t*ch+c])))
		}
	}
	d.bias = make([]int32, d.cpad)
	copy(d.bias, bias)
	d.rq = makeBlocks(&rq, nil, d.cpad/8)
	d.oxA = min(p.OutW, (p.PadW+p.StrideW-1)/p.StrideW)
	last := p.InW - 1 - (p.KW-1)*p.DilW + p.PadW
	if last >= 0 {
		d.oxB = min(p.OutW, last/p.StrideW+1)
	}
	d.oxB = max(d.oxB, d.oxA)
	d.planFolds()
	d.pairs = (taps + 1) / 2
	d.paired = make([]int16, d.pairs*d.cpad*2)
	for t := 0; t < taps; t++ {
		for c := 0; c < ch; c++ {
			d.paired[((t/2)*d.cpad+c)*2+t%2] = int16(filter[t*ch+c])
		}
	}
	return d, nil
}

// planFolds precomputes the folded bias of every tap set that Run meets
// in one batch image (all images meet the same ones).
func (d *DepthwiseInt8) planFolds() {
	p := &d.p
	var taps [maxTaps]int
	add := func(mask uint64) {
		for _, f := range d.folds {
			if f.mask == mask {
				return
			}
		}
		if len(d.folds) == maxFolds {
			return
		}
		n := 0
		for t := 0; t < d.taps; t++ {
			if mask&(1<<t) != 0 {
				taps[n] = t
				n++
			}
		}
		b := make([]int32, d.cpad)
		d.foldBias(b, taps[:n])
		d.folds = append(d.folds, fold{mask, b})
	}
	for oy := 0; oy < p.OutH; oy++ {
		for ox := 0; ox < p.OutW; ox++ {
			if ox > d.oxA && ox < d.oxB {
				continue // same taps as column oxA
			}
			add(d.tapMask(oy, ox))
		}
	}
}

// tapMask returns the set of taps of output (oy, ox) inside the input.
func (d *DepthwiseInt8) tapMask(oy, ox int) uint64 {
	p := &d.p
	var mask uint64
	y0, x0 := oy*p.StrideH-p.PadH, ox*p.StrideW-p.PadW
	for fy := 0; fy < p.KH; fy++ {
		iy := y0 + fy*p.DilH
		for fx := 0; fx < p.KW; fx++ {
			ix := x0 + fx*p.DilW
			if iy >= 0 && iy < p.InH && ix >= 0 && ix < p.InW {
				mask |= 1 << (fy*p.KW + fx)
			}
		}
	}
	return mask
}

// biasFor returns the folded bias of the tap set mask (taps lists it),
// precomputed or else folded into buf.
func (d *DepthwiseInt8) biasFor(mask uint64, taps []int, buf []int32) []int32 {
	for i := range d.folds {
		if d.folds[i].mask == mask {
			return d.folds[i].bias
		}
	}
	d.foldBias(buf, taps)
	return buf
}

// Units is the number of output rows (batches times output height).
func (d *DepthwiseInt8) Units() int { return d.p.Batches * d.p.OutH }

// Work is the number of multiply-adds of one whole run.
func (d *DepthwiseInt8) Work() int64 {
	return int64(d.p.Batches*d.p.OutH*d.p.OutW) * int64(d.p.OutC) * int64(d.taps)
}

// Run computes output rows [lo, hi) of the depthwise convolution of x into
// y. Disjoint ranges may run concurrently. It allocates nothing.
func (d *DepthwiseInt8) Run(x, y []int8, lo, hi int) {
	p := &d.p
	if len(x) < p.inLen() || len(y) < p.outLen() || lo < 0 || hi > d.Units() {
		panic(fmt.Sprintf("kernels: DepthwiseInt8.Run with %d inputs, %d outputs, rows [%d, %d) of %d", len(x), len(y), lo, hi, d.Units()))
	}
	var ins, ws [maxTaps]unsafe.Pointer
	var tapIdx [maxTaps]int
	var bias [maxQChannels]int32
	xb := unsafe.Pointer(unsafe.SliceData(x))
	wb := unsafe.Pointer(unsafe.SliceData(d.w))
	ch := p.OutC
	for r := lo; r < hi; r++ {
		b, oy := r/p.OutH, r%p.OutH
		y0 := oy*p.StrideH - p.PadH
		row := y[r*p.OutW*ch:][:p.OutW*ch]
		if d.oxB > d.oxA {
			x0 := d.oxA*p.StrideW - p.PadW
			n := 0
			var mask uint64
			for fy := 0; fy < p.KH; fy++ {
				iy := y0 + fy*p.DilH
				if iy < 0 || iy >= p.InH {
					continue
				}
				for fx := 0; fx < p.KW; fx++ {
					t := fy*p.KW + fx
					ins[n] = unsafe.Add(xb, ((b*p.InH+iy)*p.InW+x0+fx*p.DilW)*ch)
					ws[n] = unsafe.Add(wb, t*d.cpad*4)
					tapIdx[n] = t
					mask |= 1 << t
					n++
				}
			}
			fb := d.biasFor(mask, tapIdx[:n], bias[:d.cpad])
			if vec := ch &^ 15; n == d.taps && haveAVX2 && vec > 0 {
				// Every tap inside: two taps per multiply.
				if n%2 == 1 {
					ins[n] = ins[n-1] // pairs with a zero weight
				}
				// Direct calls: through a func value the arguments would escape.
				if haveVNNI {
					dwI8PairVNNI(d.oxB-d.oxA, &ins[0], &d.paired[0], d.pairs, p.StrideW*ch, vec, &fb[0], &d.rq[0],
						&row[d.oxA*ch], ch, d.cpad*4)
				} else {
					dwI8PairAVX2(d.oxB-d.oxA, &ins[0], &d.paired[0], d.pairs, p.StrideW*ch, vec, &fb[0], &d.rq[0],
						&row[d.oxA*ch], ch, d.cpad*4)
				}
				if vec < ch {
					d.pixelsFrom(vec, d.oxB-d.oxA, &ins, tapIdx[:n], p.StrideW*ch, fb, row[d.oxA*ch:])
				}
			} else {
				d.pixels(d.oxB-d.oxA, &ins, &ws, tapIdx[:n], p.StrideW*ch, fb, row[d.oxA*ch:])
			}
		}
		for ox := 0; ox < p.OutW; ox++ {
			if ox == d.oxA && d.oxB > d.oxA {
				ox = d.oxB - 1
				continue
			}
			x0 := ox*p.StrideW - p.PadW
			n := 0
			var mask uint64
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
					t := fy*p.KW + fx
					ins[n] = unsafe.Add(xb, ((b*p.InH+iy)*p.InW+ix)*ch)
					ws[n] = unsafe.Add(wb, t*d.cpad*4)
					tapIdx[n] = t
					mask |= 1 << t
					n++
				}
			}
			fb := d.biasFor(mask, tapIdx[:n], bias[:d.cpad])
			d.pixels(1, &ins, &ws, tapIdx[:n], 0, fb, row[ox*ch:])
		}
	}
}

// foldBias sets bias[c] = the model's bias + inOff * the sum of the
// weights of the given taps.
func (d *DepthwiseInt8) foldBias(bias []int32, taps []int) {
	copy(bias, d.bias)
	for _, t := range taps {
		w := d.w8[t*d.p.OutC:][:d.p.OutC]
		for c, v := range w {
			bias[c] += d.inOff * int32(v)
		}
	}
}

// pixels computes n output pixels, pixel i reading tap k's channels at
// ins[k] + i*step bytes.
func (d *DepthwiseInt8) pixels(n int, ins, ws *[maxTaps]unsafe.Pointer, taps []int, step int, bias []int32, out []int8) {
	ch := d.p.OutC
	_ = out[(n-1)*ch+ch-1]
	vec := 0
	if haveAVX2 {
		vec = ch &^ 7
		if vec > 0 {
			dwI8AVX2(n, &ins[0], &ws[0], len(taps), step, vec, &bias[0], &d.rq[0], &out[0], ch)
		}
	}
	if vec < ch {
		d.pixelsFrom(vec, n, ins, taps, step, bias, out)
	}
}

// pixelsFrom is the portable part of pixels, over channels [c0, C).
func (d *DepthwiseInt8) pixelsFrom(c0, n int, ins *[maxTaps]unsafe.Pointer, taps []int, step int, bias []int32, out []int8) {
	ch, vec := d.p.OutC, c0
	for i := 0; i < n; i++ {
		o := out[i*ch:][:ch]
		for c := vec; c < ch; c++ {
			acc := bias[c]
			for k, t := range taps {
				in := unsafe.Slice((*int8)(unsafe.Add(ins[k], i*step)), ch)
				acc += int32(in[c]) * int32(d.w8[t*ch+c])
			}
			o[c] = requantGo(acc, &d.rq[c/8], c%8)
		}
	}
}

// FullyConnectedInt8 is a prepared int8 FULLY_CONNECTED: each batch row of
// the input is widened once (zero point taken off), and each unit is an
// int16 dot product with its widened weights.
type FullyConnectedInt8 struct {
	units, depth, dpad int
	inOff              int32
	w                  []int16 // [units][dpad], weight - weight zero point
	rq                 []rqBlock
}

// maxQDepth bounds FullyConnectedInt8's widened input row on the stack.
const maxQDepth = 16384

// NewFullyConnectedInt8 prepares weights w ([units][depth] int8 with zero
// point wZero) and bias (units int32s, nil for none) for an input with zero
// point inZero.
func NewFullyConnectedInt8(units, depth int, inZero, wZero int32, w []int8, bias []int32, rq Requant) (*FullyConnectedInt8, error) {
	if units < 1 || depth < 1 || len(w) != units*depth {
		return nil, fmt.Errorf("%w: %d units of depth %d with %d weights", ErrGeometry, units, depth, len(w))
	}
	if depth > maxQDepth {
		return nil, fmt.Errorf("%w: depth %d is over %d", ErrGeometry, depth, maxQDepth)
	}
	if bias != nil && len(bias) != units {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), units)
	}
	if err := rq.check(units); err != nil {
		return nil, err
	}
	if inZero < -128 || inZero > 127 || wZero < -128 || wZero > 127 {
		return nil, fmt.Errorf("%w: zero points %d and %d", ErrGeometry, inZero, wZero)
	}
	f := &FullyConnectedInt8{units: units, depth: depth, dpad: (depth + 15) &^ 15, inOff: -inZero}
	f.w = make([]int16, units*f.dpad)
	for u := 0; u < units; u++ {
		for k := 0; k < depth; k++ {
			f.w[u*f.dpad+k] = int16(int32(w[u*depth+k]) - wZero)
		}
	}
	f.rq = makeBlocks(&rq, bias, 0)
	return f, nil
}

// Units is the number of output units.
func (f *FullyConnectedInt8) Units() int { return f.units }

// Work is the number of multiply-adds per batch row.
func (f *FullyConnectedInt8) Work() int64 { return int64(f.units) * int64(f.depth) }

// Run computes units [lo, hi) of every batch row of x (len(x)/depth rows)
// into y. Disjoint ranges may run concurrently. It allocates nothing.
func (f *FullyConnectedInt8) Run(x, y []int8, lo, hi int) {
	batches := len(x) / f.depth
	if len(x)%f.depth != 0 || len(y) < batches*f.units || lo < 0 || hi > f.units {
		panic(fmt.Sprintf("kernels: FullyConnectedInt8.Run with %d inputs, %d outputs, units [%d, %d) of %d", len(x), len(y), lo, hi, f.units))
	}
	var buf [maxQDepth]int16
	a := buf[:f.dpad]
	for bt := 0; bt < batches; bt++ {
		widen(a[:f.depth], x[bt*f.depth:][:f.depth], f.inOff)
		clear(a[f.depth:])
		out := y[bt*f.units:][:f.units]
		for u := lo; u < hi; u++ {
			acc := dotI16(a, f.w[u*f.dpad:][:f.dpad])
			b := &f.rq[u/8]
			out[u] = requantGo(acc+b.bias[u%8], b, u%8)
		}
	}
}

// dotI16 returns the int32 dot product of a and b (same length, a multiple
// of 16).
func dotI16(a, b []int16) int32 {
	b = b[:len(a)]
	if haveAVX2 {
		return dotI16AVX2(&a[0], &b[0], len(a))
	}
	var s int32
	for i, v := range a {
		s += int32(v) * int32(b[i])
	}
	return s
}
