package kernels

import "unsafe"

// convU8 is ConvInt8's layout for CPUs with AVX512-VNNI: VPDPBUSD
// multiplies unsigned by signed bytes, four per int32 lane, twice the
// work of VPDPWSSD's int16 pairs, and the gathered windows stay bytes.
// Inputs are stored as x+128 (x XOR 0x80) and padded taps as
// inZero+128, so that
//
//	sum (x+128)*w over all taps = sum (x-inZero)*w over the taps inside
//	                              + (128+inZero) * sum w over all taps,
//
// and the second term, a constant per output channel, is taken off the
// bias at load. Sums of int32 products are exact, so the results are the
// reference's bit for bit.
type convU8 struct {
	fxStep, rowLen int // as ConvInt8's, rounded to 4 instead of 2
	kt             int // KH * rowLen, a multiple of 4
	packed         []int8
	rq             []rqBlock
	pad            byte // inZero + 128
	direct         bool // 1x1 stride 1 unpadded, InC a multiple of 4
}

// newConvU8 lays out filter and the bias for the VNNI byte path, or
// returns nil where the window is too long for the tile's stack buffer.
func newConvU8(c *ConvInt8, inZero int32, filter []int8, bias []int32, rq *Requant) *convU8 {
	p := &c.p
	u := &convU8{pad: byte(inZero + 128)}
	if p.DilW == 1 {
		u.fxStep, u.rowLen = p.InC, (p.KW*p.InC+3)&^3
	} else {
		u.fxStep = (p.InC + 3) &^ 3
		u.rowLen = p.KW * u.fxStep
	}
	u.kt = p.KH * u.rowLen
	if u.kt > 2*maxQRow {
		return nil
	}
	taps := c.taps
	u.packed = make([]int8, c.panels*u.kt*tileN)
	folded := make([]int32, p.OutC)
	for oc := 0; oc < p.OutC; oc++ {
		pn, j := oc/tileN, oc%tileN
		var sum int32
		for t := 0; t < taps; t++ {
			for ci := 0; ci < p.InC; ci++ {
				w := filter[(oc*taps+t)*p.InC+ci]
				k := t/p.KW*u.rowLen + t%p.KW*u.fxStep + ci
				u.packed[((pn*u.kt/4+k/4)*tileN+j)*4+k%4] = w
				sum += int32(w)
			}
		}
		if bias != nil {
			folded[oc] = bias[oc]
		}
		folded[oc] -= (128 + inZero) * sum
	}
	u.rq = makeBlocks(rq, folded, 2*c.panels)
	u.direct = c.direct && p.InC%4 == 0
	return u
}

// run is ConvInt8.Run on the byte path.
func (u *convU8) run(c *ConvInt8, x, y []int8, t0, t1, p0, p1 int) {
	p := &c.p
	var a [qTileM * 2 * maxQRow]byte
	var tmp [qTileM * tileN]int8
	oc := p.OutC
	for b0 := p0; b0 < p1; b0 += c.nBlock {
		b1 := min(b0+c.nBlock, p1)
		for t := t0; t < t1; t++ {
			r0 := t * qTileM
			rows := min(qTileM, c.m-r0)
			u.gather(c, &a, x, r0, rows)
			for pn := b0; pn < b1; pn++ {
				w := u.packed[pn*u.kt*tileN:][:u.kt*tileN]
				rq := u.rq[2*pn:][:2]
				cols := min(tileN, oc-pn*tileN)
				if rows == qTileM && cols == tileN {
					out := y[r0*oc+pn*tileN:][:(qTileM-1)*oc+tileN]
					qtileU8VNNI(&a[0], u.kt, u.kt/4, &w[0], &rq[0], &out[0], oc)
					continue
				}
				qtileU8VNNI(&a[0], u.kt, u.kt/4, &w[0], &rq[0], &tmp[0], tileN)
				for r := 0; r < rows; r++ {
					copy(y[(r0+r)*oc+pn*tileN:][:cols], tmp[r*tileN:][:cols])
				}
			}
		}
	}
}

// flip copies src to dst as bytes with the top bit flipped: x+128 for an
// int8 x.
func flip(dst []byte, src []int8) {
	src = src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		v := *(*uint64)(unsafe.Pointer(&src[i]))
		*(*uint64)(unsafe.Pointer(&dst[i])) = v ^ 0x8080808080808080
	}
	for ; i < len(dst); i++ {
		dst[i] = byte(src[i]) ^ 0x80
	}
}

// fill sets every byte of d to v.
func fill(d []byte, v byte) {
	for i := range d {
		d[i] = v
	}
}

// gather writes the input windows of output pixels r0 to r0+rows-1 into
// rows of a (kt bytes each); rows past the last pixel repeat it.
func (u *convU8) gather(c *ConvInt8, a *[qTileM * 2 * maxQRow]byte, x []int8, r0, rows int) {
	p := &c.p
	if u.direct && rows == qTileM {
		n := qTileM * p.InC
		flip(a[:n], x[r0*p.InC:][:n])
		return
	}
	hw := p.OutH * p.OutW
	b, rem := r0/hw, r0%hw
	oy, ox := rem/p.OutW, rem%p.OutW
	for r := 0; r < qTileM; r++ {
		row := a[r*u.kt:][:u.kt]
		if r >= rows {
			copy(row, a[(rows-1)*u.kt:][:u.kt])
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
			seg := row[fy*u.rowLen:][:u.rowLen]
			iy := y0 + fy*p.DilH
			if iy < 0 || iy >= p.InH {
				fill(seg, u.pad)
				continue
			}
			src := x[((b*p.InH+iy)*p.InW)*p.InC:][:p.InW*p.InC]
			if inside && p.DilW == 1 {
				n := p.KW * p.InC
				flip(seg[:n], src[x0*p.InC:][:n])
				fill(seg[n:], u.pad)
				continue
			}
			fill(seg, u.pad)
			for fx := 0; fx < p.KW; fx++ {
				if ix := x0 + fx*p.DilW; ix >= 0 && ix < p.InW {
					flip(seg[fx*u.fxStep:][:p.InC], src[ix*p.InC:][:p.InC])
				}
			}
		}
	}
}
