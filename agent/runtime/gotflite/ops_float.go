package gotflite

import (
	"math"
)

// Float32 operators (and the type-agnostic RESHAPE), following the TFLite
// reference kernels' arithmetic: float32 accumulation in input order, bias
// added after the dot product, then the fused activation's clamp.

func init() {
	builtinOps[opFullyConnected] = prepFullyConnected
	builtinOps[opAdd] = prepAdd
	builtinOps[opRelu] = prepActivation
	builtinOps[opRelu6] = prepActivation
	builtinOps[opReluN1To1] = prepActivation
	builtinOps[opLogistic] = prepActivation
	builtinOps[opTanh] = prepActivation
	builtinOps[opReshape] = prepReshape
	builtinOps[opSqueeze] = prepReshape
	builtinOps[opSoftmax] = prepSoftmax
}

func prepFullyConnected(p *opPrep) (kernel, error) {
	if err := p.arity(2, 3, 1); err != nil {
		return nil, err
	}
	in, w, bias, out := p.ins[0], p.ins[1], p.in(2), p.outs[0]
	opts, ok, err := p.options(optFullyConnected)
	if err != nil {
		return nil, err
	}
	var act int8
	if ok {
		if act, err = opts.int8Field(0, 0); err != nil {
			return nil, bad("options: %v", err)
		}
		format, err := opts.int8Field(1, 0)
		if err != nil {
			return nil, bad("options: %v", err)
		}
		if format != 0 {
			return nil, unsupported("weights format %d", format)
		}
	}
	if len(w.shape) != 2 {
		return nil, bad("weights %s have shape %v, want rank 2", w, w.shape)
	}
	units, depth := w.shape[0], w.shape[1]
	if depth == 0 || in.n%depth != 0 {
		return nil, bad("input %s of %d elements is not a whole number of rows of %d", in, in.n, depth)
	}
	batches := in.n / depth
	if out.n != batches*units {
		return nil, bad("output %s has %d elements, want %d x %d", out, out.n, batches, units)
	}
	if bias != nil && bias.n != units {
		return nil, bad("bias %s has %d elements, want %d", bias, bias.n, units)
	}
	if in.typ != tFloat32 {
		return prepFullyConnectedQuant(p, act, batches, units, depth)
	}
	if err := types(w, "weights", tFloat32); err != nil {
		return nil, err
	}
	if err := types(out, "output", tFloat32); err != nil {
		return nil, err
	}
	if bias != nil {
		if err := types(bias, "bias", tFloat32); err != nil {
			return nil, err
		}
	}
	lo, hi, err := actRange(act)
	if err != nil {
		return nil, err
	}
	if k := fastFullyConnected(in, w, bias, out, units, depth, lo, hi); k != nil {
		return k, nil
	}
	fc := &fcFloat{ii: in.index, wi: w.index, oi: out.index, bi: indexOr(bias),
		batches: batches, units: units, depth: depth, lo: lo, hi: hi}
	work := int64(batches) * int64(w.n)
	return func(ex *executor) error {
		ex.parallel(units, work, fc)
		return nil
	}, nil
}

// fcFloat is a prepared float32 FULLY_CONNECTED; its rows are output units.
type fcFloat struct {
	ii, wi, oi, bi        int
	batches, units, depth int
	lo, hi                float32
}

func (fc *fcFloat) rows(ex *executor, u0, u1 int) {
	x, wt, y := ex.v.f32[fc.ii], ex.v.f32[fc.wi], ex.v.f32[fc.oi]
	var b []float32
	if fc.bi >= 0 {
		b = ex.v.f32[fc.bi]
	}
	depth, units := fc.depth, fc.units
	for bt := 0; bt < fc.batches; bt++ {
		row := x[bt*depth : (bt+1)*depth]
		for u := u0; u < u1; u++ {
			wr := wt[u*depth : (u+1)*depth]
			wr = wr[:len(row)]
			var s float32
			for k, v := range row {
				s += v * wr[k]
			}
			if b != nil {
				s += b[u]
			}
			y[bt*units+u] = clampf(s, fc.lo, fc.hi)
		}
	}
}

func prepAdd(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	a, b, out := p.ins[0], p.ins[1], p.outs[0]
	opts, ok, err := p.options(optAdd)
	if err != nil {
		return nil, err
	}
	var act int8
	if ok {
		if act, err = opts.int8Field(0, 0); err != nil {
			return nil, bad("options: %v", err)
		}
	}
	return prepBinary(p, binAdd, a, b, out, act)
}

// binaryOp names an elementwise binary operation.
type binaryOp int

const (
	binAdd binaryOp = iota
	binSub
	binMul
)

// prepBinary prepares ADD, SUB or MUL with broadcasting.
func prepBinary(p *opPrep, op binaryOp, a, b, out *tinfo, act int8) (kernel, error) {
	if a.typ != b.typ || a.typ != out.typ {
		return nil, bad("input types %s and %s and output type %s differ", a.typ, b.typ, out.typ)
	}
	bc, err := newBcast(a.shape, b.shape, out.shape)
	if err != nil {
		return nil, err
	}
	if a.typ != tFloat32 {
		return prepBinaryQuant(p, op, a, b, out, act, bc)
	}
	lo, hi, err := actRange(act)
	if err != nil {
		return nil, err
	}
	if k := fastBinaryFloat(op, bc, a, b, out, lo, hi); k != nil {
		return k, nil
	}
	ai, bi, oi := a.index, b.index, out.index
	var f func(x, y float32) float32
	switch op {
	case binAdd:
		f = func(x, y float32) float32 { return clampf(x+y, lo, hi) }
	case binSub:
		f = func(x, y float32) float32 { return clampf(x-y, lo, hi) }
	case binMul:
		f = func(x, y float32) float32 { return clampf(x*y, lo, hi) }
	}
	return func(ex *executor) error {
		x, y, z := ex.v.f32[ai], ex.v.f32[bi], ex.v.f32[oi]
		if bc.same {
			y, z = y[:len(x)], z[:len(x)]
			for i, v := range x {
				z[i] = f(v, y[i])
			}
			return nil
		}
		bc.each(func(o, ia, ib, n, sa, sb int) {
			for k := 0; k < n; k++ {
				z[o+k] = f(x[ia+k*sa], y[ib+k*sb])
			}
		})
		return nil
	}, nil
}

// prepActivation prepares the standalone activations RELU, RELU6,
// RELU_N1_TO_1, LOGISTIC and TANH.
func prepActivation(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	if in.typ != out.typ || in.n != out.n {
		return nil, bad("input %s (%s, %d elements) and output %s (%s, %d elements) differ", in, in.typ, in.n, out, out.typ, out.n)
	}
	if in.typ != tFloat32 {
		return prepActivationQuant(p, in, out)
	}
	var f func(float32) float32
	switch p.name {
	case "RELU":
		f = func(x float32) float32 { return max(x, 0) }
	case "RELU6":
		f = func(x float32) float32 { return clampf(x, 0, 6) }
	case "RELU_N1_TO_1":
		f = func(x float32) float32 { return clampf(x, -1, 1) }
	case "LOGISTIC":
		f = func(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
	case "TANH":
		f = func(x float32) float32 { return float32(math.Tanh(float64(x))) }
	}
	ii, oi := in.index, out.index
	return func(ex *executor) error {
		x, y := ex.v.f32[ii], ex.v.f32[oi]
		y = y[:len(x)]
		for i, v := range x {
			y[i] = f(v)
		}
		return nil
	}, nil
}

// prepReshape prepares RESHAPE and SQUEEZE: the output's static shape is
// authoritative, so both are a copy of the same elements.
func prepReshape(p *opPrep) (kernel, error) {
	if err := p.arity(1, 2, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	if in.typ != out.typ {
		return nil, bad("input type %s and output type %s differ", in.typ, out.typ)
	}
	if in.n != out.n {
		return nil, bad("input %s has %d elements, output %s has %d", in, in.n, out, out.n)
	}
	return copyKernel(in, out), nil
}

func prepSoftmax(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	opts, ok, err := p.options(optSoftmax)
	if err != nil {
		return nil, err
	}
	var beta float32
	if ok {
		if beta, err = opts.float32Field(0, 0); err != nil {
			return nil, bad("options: %v", err)
		}
	}
	if in.typ != out.typ || !sameShape(in.shape, out.shape) {
		return nil, bad("input %s (%s %v) and output %s (%s %v) differ", in, in.typ, in.shape, out, out.typ, out.shape)
	}
	if len(in.shape) == 0 {
		return nil, bad("input %s is a scalar", in)
	}
	depth := in.shape[len(in.shape)-1]
	if in.typ != tFloat32 {
		return prepSoftmaxQuant(p, in, out, beta, depth)
	}
	ii, oi := in.index, out.index
	return func(ex *executor) error {
		x, y := ex.v.f32[ii], ex.v.f32[oi]
		for r := 0; r+depth <= len(x) && depth > 0; r += depth {
			row, dst := x[r:r+depth], y[r:r+depth]
			m := row[0]
			for _, v := range row {
				m = max(m, v)
			}
			var sum float32
			for i, v := range row {
				e := float32(math.Exp(float64((v - m) * beta)))
				dst[i] = e
				sum += e
			}
			for i := range dst {
				dst[i] /= sum
			}
		}
		return nil
	}, nil
}
