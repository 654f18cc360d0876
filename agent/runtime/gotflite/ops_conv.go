package gotflite

import "math"

// Spatial operators on NHWC tensors: CONV_2D, DEPTHWISE_CONV_2D,
// AVERAGE_POOL_2D and MAX_POOL_2D. Geometry (output size and padding)
// follows TFLite's ComputePaddingHeightWidth: SAME pads the total needed to
// cover the input, with the smaller half first; VALID pads nothing.

func init() {
	builtinOps[opConv2D] = prepConv2D
	builtinOps[opDepthwiseConv2D] = prepDepthwiseConv2D
	builtinOps[opAveragePool2D] = prepPool
	builtinOps[opMaxPool2D] = prepPool
}

// Padding modes (schema.fbs Padding).
const (
	padSame  = 0
	padValid = 1
)

// window is the geometry of a 2-D sliding window over an NHWC tensor.
type window struct {
	batches, inH, inW, inC int
	outH, outW, outC       int
	kH, kW                 int
	strideH, strideW       int
	dilH, dilW             int
	padH, padW             int // padding before the first row and column
}

// outSize is the output size of one spatial dimension.
func outSize(padding int8, in, k, stride, dil int) int {
	eff := (k-1)*dil + 1
	if padding == padSame {
		return (in + stride - 1) / stride
	}
	return (in - eff + stride) / stride
}

// padBefore is the padding before the first element of one dimension.
func padBefore(in, k, stride, dil, out int) int {
	eff := (k-1)*dil + 1
	total := (out-1)*stride + eff - in
	if total < 0 {
		return 0
	}
	return total / 2
}

// nhwc checks that t is a rank-4 tensor and returns its dimensions.
func nhwc(t *tinfo, role string) (n, h, w, c int, err error) {
	if len(t.shape) != 4 {
		return 0, 0, 0, 0, bad("%s %s has shape %v, want rank 4 (NHWC)", role, t, t.shape)
	}
	return t.shape[0], t.shape[1], t.shape[2], t.shape[3], nil
}

// newWindow checks the geometry of an operator and its output shape.
func newWindow(in, out *tinfo, padding int8, kH, kW, strideH, strideW, dilH, dilW int) (*window, error) {
	if padding != padSame && padding != padValid {
		return nil, bad("unknown padding %d", padding)
	}
	if kH <= 0 || kW <= 0 || strideH <= 0 || strideW <= 0 || dilH <= 0 || dilW <= 0 {
		return nil, bad("window %dx%d, stride %dx%d, dilation %dx%d: all must be positive", kH, kW, strideH, strideW, dilH, dilW)
	}
	const limit = 1 << 20
	if kH > limit || kW > limit || strideH > limit || strideW > limit || dilH > limit || dilW > limit {
		return nil, bad("window %dx%d, stride %dx%d, dilation %dx%d: too large", kH, kW, strideH, strideW, dilH, dilW)
	}
	w := &window{kH: kH, kW: kW, strideH: strideH, strideW: strideW, dilH: dilH, dilW: dilW}
	var err error
	if w.batches, w.inH, w.inW, w.inC, err = nhwc(in, "input"); err != nil {
		return nil, err
	}
	var ob int
	if ob, w.outH, w.outW, w.outC, err = nhwc(out, "output"); err != nil {
		return nil, err
	}
	wantH := outSize(padding, w.inH, kH, strideH, dilH)
	wantW := outSize(padding, w.inW, kW, strideW, dilW)
	if ob != w.batches || w.outH != wantH || w.outW != wantW {
		return nil, bad("output %s has shape %v, want [%d %d %d C] for input %v", out, out.shape, w.batches, wantH, wantW, in.shape)
	}
	if padding == padSame {
		w.padH = padBefore(w.inH, kH, strideH, dilH, w.outH)
		w.padW = padBefore(w.inW, kW, strideW, dilW, w.outW)
	}
	return w, nil
}

// convOptions reads Conv2DOptions or DepthwiseConv2DOptions; depthwise
// tables have depth_multiplier in slot 3, shifting the rest by one.
func convOptions(p *opPrep, unionType uint8, depthwise bool) (padding int8, strideW, strideH, dilW, dilH int, act int8, err error) {
	opts, ok, err := p.options(unionType)
	if err != nil {
		return
	}
	strideW, strideH, dilW, dilH = 1, 1, 1, 1
	if !ok {
		return
	}
	shift := 0
	if depthwise {
		shift = 1
	}
	var sw, sh, dw, dh int32
	fields := []error{}
	padding, e1 := opts.int8Field(0, 0)
	sw, e2 := opts.int32Field(1, 0)
	sh, e3 := opts.int32Field(2, 0)
	act, e4 := opts.int8Field(3+shift, 0)
	dw, e5 := opts.int32Field(4+shift, 1)
	dh, e6 := opts.int32Field(5+shift, 1)
	fields = append(fields, e1, e2, e3, e4, e5, e6)
	for _, e := range fields {
		if e != nil {
			return 0, 0, 0, 0, 0, 0, bad("options: %v", e)
		}
	}
	return padding, int(sw), int(sh), int(dw), int(dh), act, nil
}

func prepConv2D(p *opPrep) (kernel, error) {
	if err := p.arity(2, 3, 1); err != nil {
		return nil, err
	}
	in, f, bias, out := p.ins[0], p.ins[1], p.in(2), p.outs[0]
	padding, sw, sh, dw, dh, act, err := convOptions(p, optConv2D, false)
	if err != nil {
		return nil, err
	}
	oc, kh, kw, fc, err := nhwc(f, "filter")
	if err != nil {
		return nil, err
	}
	w, err := newWindow(in, out, padding, kh, kw, sh, sw, dh, dw)
	if err != nil {
		return nil, err
	}
	if fc != w.inC {
		return nil, unsupported("filter %s has %d input channels, input has %d (grouped convolution)", f, fc, w.inC)
	}
	if oc != w.outC {
		return nil, bad("filter %s has %d output channels, output has %d", f, oc, w.outC)
	}
	if bias != nil && bias.n != oc {
		return nil, bad("bias %s has %d elements, want %d", bias, bias.n, oc)
	}
	if in.typ != tFloat32 {
		return prepConvQuant(p, w, in, f, bias, out, act, false)
	}
	if err := floatTypes(f, bias, out); err != nil {
		return nil, err
	}
	lo, hi, err := actRange(act)
	if err != nil {
		return nil, err
	}
	if k := fastConv(w, in, f, bias, out, lo, hi, false); k != nil {
		return k, nil
	}
	c := &convFloat{w: w, ii: in.index, fi: f.index, oi: out.index, bi: indexOr(bias), lo: lo, hi: hi}
	work := int64(out.n) * int64(kh*kw*fc)
	return func(ex *executor) error {
		ex.parallel(w.batches*w.outH, work, c)
		return nil
	}, nil
}

// convFloat is a prepared float32 CONV_2D or DEPTHWISE_CONV_2D; its rows
// are output rows (batch x height).
type convFloat struct {
	w              *window
	ii, fi, oi, bi int
	lo, hi         float32
	depthwise      bool
}

func (c *convFloat) rows(ex *executor, r0, r1 int) {
	x, flt, y := ex.v.f32[c.ii], ex.v.f32[c.fi], ex.v.f32[c.oi]
	var b []float32
	if c.bi >= 0 {
		b = ex.v.f32[c.bi]
	}
	if c.depthwise {
		c.depthwiseRows(x, flt, b, y, r0, r1)
		return
	}
	w := c.w
	kh, kw := w.kH, w.kW
	for r := r0; r < r1; r++ {
		bt, oy := r/w.outH, r%w.outH
		y0 := oy*w.strideH - w.padH
		for ox := 0; ox < w.outW; ox++ {
			x0 := ox*w.strideW - w.padW
			dst := y[((bt*w.outH+oy)*w.outW+ox)*w.outC:][:w.outC]
			for oc := range dst {
				var s float32
				fc := flt[oc*kh*kw*w.inC:]
				for fy := 0; fy < kh; fy++ {
					iy := y0 + fy*w.dilH
					if iy < 0 || iy >= w.inH {
						continue
					}
					for fx := 0; fx < kw; fx++ {
						ix := x0 + fx*w.dilW
						if ix < 0 || ix >= w.inW {
							continue
						}
						src := x[((bt*w.inH+iy)*w.inW+ix)*w.inC:][:w.inC]
						fr := fc[(fy*kw+fx)*w.inC:][:len(src)]
						for k, v := range src {
							s += v * fr[k]
						}
					}
				}
				if b != nil {
					s += b[oc]
				}
				dst[oc] = clampf(s, c.lo, c.hi)
			}
		}
	}
}

func (c *convFloat) depthwiseRows(x, flt, b, y []float32, r0, r1 int) {
	w := c.w
	kh, kw := w.kH, w.kW
	mult := w.outC / w.inC
	for r := r0; r < r1; r++ {
		bt, oy := r/w.outH, r%w.outH
		y0 := oy*w.strideH - w.padH
		for ox := 0; ox < w.outW; ox++ {
			x0 := ox*w.strideW - w.padW
			dst := y[((bt*w.outH+oy)*w.outW+ox)*w.outC:][:w.outC]
			for oc := range dst {
				ic := oc / mult
				var s float32
				for fy := 0; fy < kh; fy++ {
					iy := y0 + fy*w.dilH
					if iy < 0 || iy >= w.inH {
						continue
					}
					for fx := 0; fx < kw; fx++ {
						ix := x0 + fx*w.dilW
						if ix < 0 || ix >= w.inW {
							continue
						}
						s += x[((bt*w.inH+iy)*w.inW+ix)*w.inC+ic] * flt[(fy*kw+fx)*w.outC+oc]
					}
				}
				if b != nil {
					s += b[oc]
				}
				dst[oc] = clampf(s, c.lo, c.hi)
			}
		}
	}
}

func prepDepthwiseConv2D(p *opPrep) (kernel, error) {
	if err := p.arity(2, 3, 1); err != nil {
		return nil, err
	}
	in, f, bias, out := p.ins[0], p.ins[1], p.in(2), p.outs[0]
	padding, sw, sh, dw, dh, act, err := convOptions(p, optDepthwiseConv2D, true)
	if err != nil {
		return nil, err
	}
	one, kh, kw, fc, err := nhwc(f, "filter")
	if err != nil {
		return nil, err
	}
	w, err := newWindow(in, out, padding, kh, kw, sh, sw, dh, dw)
	if err != nil {
		return nil, err
	}
	if one != 1 || fc != w.outC || w.inC == 0 || w.outC%w.inC != 0 {
		return nil, bad("filter %s has shape %v, want [1 KH KW %d] with a multiple of the %d input channels", f, f.shape, w.outC, w.inC)
	}
	if bias != nil && bias.n != w.outC {
		return nil, bad("bias %s has %d elements, want %d", bias, bias.n, w.outC)
	}
	if in.typ != tFloat32 {
		return prepConvQuant(p, w, in, f, bias, out, act, true)
	}
	if err := floatTypes(f, bias, out); err != nil {
		return nil, err
	}
	lo, hi, err := actRange(act)
	if err != nil {
		return nil, err
	}
	if k := fastConv(w, in, f, bias, out, lo, hi, true); k != nil {
		return k, nil
	}
	c := &convFloat{w: w, ii: in.index, fi: f.index, oi: out.index, bi: indexOr(bias), lo: lo, hi: hi, depthwise: true}
	work := int64(out.n) * int64(kh*kw)
	return func(ex *executor) error {
		ex.parallel(w.batches*w.outH, work, c)
		return nil
	}, nil
}

func prepPool(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	opts, ok, err := p.options(optPool2D)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, bad("has no Pool2DOptions")
	}
	padding, e1 := opts.int8Field(0, 0)
	sw, e2 := opts.int32Field(1, 0)
	sh, e3 := opts.int32Field(2, 0)
	fw, e4 := opts.int32Field(3, 0)
	fh, e5 := opts.int32Field(4, 0)
	act, e6 := opts.int8Field(5, 0)
	for _, e := range []error{e1, e2, e3, e4, e5, e6} {
		if e != nil {
			return nil, bad("options: %v", e)
		}
	}
	w, err := newWindow(in, out, padding, int(fh), int(fw), int(sh), int(sw), 1, 1)
	if err != nil {
		return nil, err
	}
	if w.outC != w.inC || in.typ != out.typ {
		return nil, bad("input %s (%s %v) and output %s (%s %v) differ in channels or type", in, in.typ, in.shape, out, out.typ, out.shape)
	}
	isMax := p.name == "MAX_POOL_2D"
	if in.typ != tFloat32 {
		return prepPoolQuant(p, w, in, out, act, isMax)
	}
	lo, hi, err := actRange(act)
	if err != nil {
		return nil, err
	}
	ii, oi := in.index, out.index
	return func(ex *executor) error {
		x, y := ex.v.f32[ii], ex.v.f32[oi]
		w.each(func(o, fy0, fy1, fx0, fx1, base int) {
			for c := 0; c < w.outC; c++ {
				var s float32
				if isMax {
					s = float32(math.Inf(-1))
				}
				for fy := fy0; fy < fy1; fy++ {
					for fx := fx0; fx < fx1; fx++ {
						v := x[base+(fy*w.inW+fx)*w.inC+c]
						if isMax {
							s = max(s, v)
						} else {
							s += v
						}
					}
				}
				if n := (fy1 - fy0) * (fx1 - fx0); !isMax && n > 0 {
					s /= float32(n)
				}
				y[o+c] = clampf(s, lo, hi)
			}
		})
		return nil
	}, nil
}

// each visits every output position of a pooling window: o is the output
// offset of channel 0, [fy0, fy1) x [fx0, fx1) the filter taps inside the
// input, and base the input offset of the window's origin (tap 0, 0),
// which may lie outside the input when padded.
func (w *window) each(f func(o, fy0, fy1, fx0, fx1, base int)) {
	for b := 0; b < w.batches; b++ {
		for oy := 0; oy < w.outH; oy++ {
			y0 := oy*w.strideH - w.padH
			fy0, fy1 := max(0, -y0), min(w.kH, w.inH-y0)
			for ox := 0; ox < w.outW; ox++ {
				x0 := ox*w.strideW - w.padW
				fx0, fx1 := max(0, -x0), min(w.kW, w.inW-x0)
				o := ((b*w.outH+oy)*w.outW + ox) * w.outC
				base := ((b*w.inH+y0)*w.inW + x0) * w.inC
				if fy0 >= fy1 || fx0 >= fx1 {
					fy0, fy1, fx0, fx1 = 0, 0, 0, 0
				}
				f(o, fy0, fy1, fx0, fx1, base)
			}
		}
	}
}

// indexOr returns t's index, or -1 for an omitted tensor.
func indexOr(t *tinfo) int {
	if t == nil {
		return -1
	}
	return t.index
}

// floatTypes checks that every given tensor (nil ones skipped) is float32.
func floatTypes(ts ...*tinfo) error {
	for _, t := range ts {
		if t != nil {
			if err := types(t, "tensor", tFloat32); err != nil {
				return err
			}
		}
	}
	return nil
}
