package gotflite

// Shape-manipulating and elementwise operators: MEAN, PAD, CONCATENATION,
// HARD_SWISH, MUL and SUB.

func init() {
	builtinOps[opMean] = prepMean
	builtinOps[opPad] = prepPad
	builtinOps[opConcatenation] = prepConcatenation
	builtinOps[opHardSwish] = prepHardSwish
	builtinOps[opMul] = prepMul
	builtinOps[opSub] = prepSub
}

// constInts returns the values of a constant INT32 or INT64 tensor.
func constInts(t *tinfo, role string) ([]int, error) {
	if t.kind != kindConst {
		return nil, unsupported("%s %s is not a constant", role, t)
	}
	var out []int
	switch t.typ {
	case tInt32:
		for _, v := range t.c.i32[0] {
			out = append(out, int(v))
		}
	case tInt64:
		for _, v := range t.c.i64[0] {
			if v < -1<<31 || v > 1<<31 {
				return nil, bad("%s %s value %d out of range", role, t, v)
			}
			out = append(out, int(v))
		}
	default:
		return nil, bad("%s %s has type %s, want INT32 or INT64", role, t, t.typ)
	}
	return out, nil
}

// reduction describes a reduction over some axes of a tensor, as nested
// loops: for each of outer x inner output positions, reduce count input
// elements. Axes are sorted and unique; the general case is a list of
// (size, stride) pairs per input index.
type reduction struct {
	inShape []int
	reduce  [maxRank]bool
	count   int // input elements per output element
}

// outIndex maps an input element (by its index in row-major order) to its
// output element; precomputed once as a table at load.
func (r *reduction) table() []int32 {
	n := numElements(r.inShape)
	idx := make([]int32, n)
	var pos [maxRank]int
	rank := len(r.inShape)
	for i := 0; i < n; i++ {
		o := 0
		for d := 0; d < rank; d++ {
			if !r.reduce[d] {
				o = o*r.inShape[d] + pos[d]
			}
		}
		idx[i] = int32(o)
		for d := rank - 1; d >= 0; d-- {
			pos[d]++
			if pos[d] < r.inShape[d] {
				break
			}
			pos[d] = 0
		}
	}
	return idx
}

func prepMean(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	in, axesT, out := p.ins[0], p.ins[1], p.outs[0]
	axes, err := constInts(axesT, "axes")
	if err != nil {
		return nil, err
	}
	r := &reduction{inShape: in.shape, count: 1}
	rank := len(in.shape)
	for _, a := range axes {
		if a < 0 {
			a += rank
		}
		if a < 0 || a >= rank {
			return nil, bad("axis %d out of range for rank %d", a, rank)
		}
		if !r.reduce[a] {
			r.reduce[a] = true
			r.count *= in.shape[a]
		}
	}
	if r.count == 0 || out.n*r.count != in.n {
		return nil, bad("output %s has %d elements, want %d / %d", out, out.n, in.n, max(r.count, 1))
	}
	if in.typ != out.typ {
		return nil, bad("input type %s and output type %s differ", in.typ, out.typ)
	}
	// The reference kernel sums in input order into each output element.
	if int64(in.n) > 1<<31-1 {
		return nil, unsupported("input %s is too large to reduce", in)
	}
	tab := r.table()
	if in.typ != tFloat32 {
		return prepMeanQuant(p, in, out, tab, r.count)
	}
	ii, oi := in.index, out.index
	n := float32(r.count)
	return func(ex *executor) error {
		x, y := ex.v.f32[ii], ex.v.f32[oi]
		clear(y)
		tab := tab[:len(x)]
		for i, v := range x {
			y[tab[i]] += v
		}
		for i := range y {
			y[i] /= n
		}
		return nil
	}, nil
}

func prepPad(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	in, padsT, out := p.ins[0], p.ins[1], p.outs[0]
	pads, err := constInts(padsT, "paddings")
	if err != nil {
		return nil, err
	}
	rank := len(in.shape)
	if len(pads) != 2*rank || len(out.shape) != rank {
		return nil, bad("paddings %s has %d values and output rank %d, want %d and %d", padsT, len(pads), len(out.shape), 2*rank, rank)
	}
	for d := 0; d < rank; d++ {
		if pads[2*d] < 0 || pads[2*d+1] < 0 {
			return nil, bad("negative padding %v", pads)
		}
		if out.shape[d] != in.shape[d]+pads[2*d]+pads[2*d+1] {
			return nil, bad("output %s has shape %v, want %v padded by %v", out, out.shape, in.shape, pads)
		}
	}
	if in.typ != out.typ {
		return nil, bad("input type %s and output type %s differ", in.typ, out.typ)
	}
	// Map every input element to its output position once.
	tab := make([]int32, in.n)
	var pos [maxRank]int
	for i := range tab {
		o := 0
		for d := 0; d < rank; d++ {
			o = o*out.shape[d] + pos[d] + pads[2*d]
		}
		tab[i] = int32(o)
		for d := rank - 1; d >= 0; d-- {
			pos[d]++
			if pos[d] < in.shape[d] {
				break
			}
			pos[d] = 0
		}
	}
	ii, oi := in.index, out.index
	switch in.typ {
	case tFloat32:
		return padKernel(ii, oi, tab, func(v *views) ([]float32, []float32) { return v.f32[ii], v.f32[oi] }, 0), nil
	case tInt8, tUint8:
		// Quantized padding is the output's zero point (real 0.0).
		si, zi, err := perTensor(in, "input")
		if err != nil {
			return nil, err
		}
		so, zo, err := perTensor(out, "output")
		if err != nil {
			return nil, err
		}
		if si != so || zi != zo {
			return nil, unsupported("input %s and output %s are quantized differently", in, out)
		}
		if in.typ == tInt8 {
			return padKernel(ii, oi, tab, func(v *views) ([]int8, []int8) { return v.i8[ii], v.i8[oi] }, int8(zo)), nil
		}
		return padKernel(ii, oi, tab, func(v *views) ([]uint8, []uint8) { return v.u8[ii], v.u8[oi] }, uint8(zo)), nil
	case tInt32:
		return padKernel(ii, oi, tab, func(v *views) ([]int32, []int32) { return v.i32[ii], v.i32[oi] }, 0), nil
	}
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func padKernel[T any](ii, oi int, tab []int32, get func(v *views) ([]T, []T), fill T) kernel {
	return func(ex *executor) error {
		x, y := get(&ex.v)
		for i := range y {
			y[i] = fill
		}
		tab := tab[:len(x)]
		for i, v := range x {
			y[tab[i]] = v
		}
		return nil
	}
}

func prepConcatenation(p *opPrep) (kernel, error) {
	if len(p.ins) == 0 || len(p.outs) != 1 {
		return nil, bad("has %d inputs and %d outputs, want at least 1 and 1", len(p.ins), len(p.outs))
	}
	out := p.outs[0]
	opts, ok, err := p.options(optConcatenation)
	if err != nil {
		return nil, err
	}
	var axis int32
	var act int8
	if ok {
		axis, err = opts.int32Field(0, 0)
		if err == nil {
			act, err = opts.int8Field(1, 0)
		}
		if err != nil {
			return nil, bad("options: %v", err)
		}
	}
	if act != actNone {
		return nil, unsupported("fused activation %d", act)
	}
	rank := len(out.shape)
	ax := int(axis)
	if ax < 0 {
		ax += rank
	}
	if ax < 0 || ax >= rank {
		return nil, bad("axis %d out of range for rank %d", axis, rank)
	}
	outer := numElements(out.shape[:ax])
	sum := 0
	blocks := make([]int, len(p.ins)) // elements each input contributes per outer index
	for i, in := range p.ins {
		if in == nil {
			return nil, bad("input %d is omitted", i)
		}
		if in.typ != out.typ {
			return nil, bad("input %s has type %s, output %s", in, in.typ, out.typ)
		}
		if len(in.shape) != rank {
			return nil, bad("input %s has shape %v, output %v", in, in.shape, out.shape)
		}
		for d := range rank {
			if d != ax && in.shape[d] != out.shape[d] {
				return nil, bad("input %s has shape %v, output %v", in, in.shape, out.shape)
			}
		}
		sum += in.shape[ax]
		blocks[i] = numElements(in.shape[ax:])
	}
	if sum != out.shape[ax] {
		return nil, bad("inputs add up to %d along axis %d, output has %d", sum, ax, out.shape[ax])
	}
	if out.typ != tFloat32 {
		if err := quantConcatCheck(p, out); err != nil {
			return nil, err
		}
	}
	idx := make([]int, len(p.ins))
	for i, in := range p.ins {
		idx[i] = in.index
	}
	oi := out.index
	switch out.typ {
	case tFloat32:
		return concatKernel(idx, oi, blocks, outer, func(v *views) [][]float32 { return v.f32 }), nil
	case tInt8:
		return concatKernel(idx, oi, blocks, outer, func(v *views) [][]int8 { return v.i8 }), nil
	case tUint8:
		return concatKernel(idx, oi, blocks, outer, func(v *views) [][]uint8 { return v.u8 }), nil
	case tInt32:
		return concatKernel(idx, oi, blocks, outer, func(v *views) [][]int32 { return v.i32 }), nil
	case tInt64:
		return concatKernel(idx, oi, blocks, outer, func(v *views) [][]int64 { return v.i64 }), nil
	}
	return nil, unsupported("output %s has type %s", out, out.typ)
}

func concatKernel[T any](idx []int, oi int, blocks []int, outer int, get func(v *views) [][]T) kernel {
	return func(ex *executor) error {
		all := get(&ex.v)
		y := all[oi]
		o := 0
		for k := 0; k < outer; k++ {
			for i, ti := range idx {
				n := blocks[i]
				copy(y[o:o+n], all[ti][k*n:(k+1)*n])
				o += n
			}
		}
		return nil
	}
}

func prepHardSwish(p *opPrep) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	if in.typ != out.typ || in.n != out.n {
		return nil, bad("input %s and output %s differ in type or size", in, out)
	}
	if in.typ != tFloat32 {
		return prepHardSwishQuant(p, in, out)
	}
	ii, oi := in.index, out.index
	return func(ex *executor) error {
		x, y := ex.v.f32[ii], ex.v.f32[oi]
		y = y[:len(x)]
		for i, v := range x {
			y[i] = v * min(6, max(0, v+3)) / 6
		}
		return nil
	}, nil
}

func prepMul(p *opPrep) (kernel, error) { return prepArith(p, binMul, optMul) }
func prepSub(p *opPrep) (kernel, error) { return prepArith(p, binSub, optSub) }
func prepArith(p *opPrep, op binaryOp, unionType uint8) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	opts, ok, err := p.options(unionType)
	if err != nil {
		return nil, err
	}
	var act int8
	if ok {
		if act, err = opts.int8Field(0, 0); err != nil {
			return nil, bad("options: %v", err)
		}
	}
	return prepBinary(p, op, p.ins[0], p.ins[1], p.outs[0], act)
}
