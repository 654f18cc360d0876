package gotflite

import "github.com/starling-edge/starling/agent/runtime/gotflite/internal/kernels"

// Fast paths for the float32 operators that dominate vision models. When
// the weights are constants (as the converter writes them) the operator is
// prepared once into a plan of package kernels, which packs the weights for
// its vector loops; anything a plan does not cover (weights computed at run
// time, depth multipliers, very large windows) keeps the general loops in
// ops_conv.go and ops_float.go. The plans add with fused multiply-adds, so
// results move in the last bits, within the conformance tolerance.

// constF32 returns a constant float32 tensor's data, nil for an omitted
// tensor, and ok false for a tensor computed at run time.
func constF32(t *tinfo) (data []float32, ok bool) {
	if t == nil {
		return nil, true
	}
	if t.kind != kindConst || t.typ != tFloat32 {
		return nil, false
	}
	return t.c.f32[0], true
}

func convParams(w *window, lo, hi float32) kernels.ConvParams {
	return kernels.ConvParams{
		Batches: w.batches, InH: w.inH, InW: w.inW, InC: w.inC,
		OutH: w.outH, OutW: w.outW, OutC: w.outC,
		KH: w.kH, KW: w.kW, StrideH: w.strideH, StrideW: w.strideW,
		DilH: w.dilH, DilW: w.dilW, PadH: w.padH, PadW: w.padW,
		Lo: lo, Hi: hi,
	}
}

// plan is what the kernels plans have in common.
type plan interface {
	Units() int
	Work() int64
	Run(x, y []float32, lo, hi int)
}

// planKernel runs a plan over the executor's threads; its rows are the
// plan's units.
type planKernel struct {
	p      plan
	ii, oi int
}

func (k *planKernel) rows(ex *executor, lo, hi int) { k.p.Run(ex.v.f32[k.ii], ex.v.f32[k.oi], lo, hi) }

func (k *planKernel) kernel() kernel {
	units, work := k.p.Units(), k.p.Work()
	return func(ex *executor) error {
		ex.parallel(units, work, k)
		return nil
	}
}

// fastConv returns the plan-backed kernel of a float32 CONV_2D or
// DEPTHWISE_CONV_2D, or nil where the general loop must run.
func fastConv(w *window, in, f, bias, out *tinfo, lo, hi float32, depthwise bool) kernel {
	fd, ok1 := constF32(f)
	bd, ok2 := constF32(bias)
	if !ok1 || !ok2 || fd == nil {
		return nil
	}
	var (
		p   plan
		err error
	)
	if depthwise {
		p, err = kernels.NewDepthwise(convParams(w, lo, hi), fd, bd)
	} else {
		p, err = kernels.NewConv(convParams(w, lo, hi), fd, bd)
	}
	if err != nil {
		return nil
	}
	return (&planKernel{p: p, ii: in.index, oi: out.index}).kernel()
}

// fastFullyConnected returns the plan-backed kernel of a float32
// FULLY_CONNECTED, or nil where the general loop must run.
func fastFullyConnected(in, w, bias, out *tinfo, units, depth int, lo, hi float32) kernel {
	wd, ok1 := constF32(w)
	bd, ok2 := constF32(bias)
	if !ok1 || !ok2 || wd == nil {
		return nil
	}
	if batches := in.n / depth; batches > 1 {
		// Several rows (a batch plan): the rows times the weights are a
		// GEMM, which the 1x1 convolution tile computes with each weight
		// read once per tile of rows instead of once per row.
		c, err := kernels.NewConv(kernels.ConvParams{Batches: 1, InH: batches, InW: 1, InC: depth,
			OutH: batches, OutW: 1, OutC: units, KH: 1, KW: 1, StrideH: 1, StrideW: 1, DilH: 1, DilW: 1,
			Lo: lo, Hi: hi}, wd, bd)
		if err == nil {
			return (&planKernel{p: c, ii: in.index, oi: out.index}).kernel()
		}
	}
	p, err := kernels.NewFullyConnected(units, depth, wd, bd, lo, hi)
	if err != nil {
		return nil
	}
	return (&planKernel{p: &denseRows{p, in.n / depth}, ii: in.index, oi: out.index}).kernel()
}

// denseRows counts a FULLY_CONNECTED plan's work over all batch rows.
type denseRows struct {
	*kernels.FullyConnected
	batches int
}

func (d *denseRows) Work() int64 { return d.FullyConnected.Work() * int64(d.batches) }

// constI8 and constI32 are constF32 for the integer weight and bias types.
func constI8(t *tinfo) ([]int8, bool) {
	if t == nil || t.kind != kindConst || t.typ != tInt8 {
		return nil, false
	}
	return t.c.i8[0], true
}

func constI32(t *tinfo) ([]int32, bool) {
	if t == nil {
		return nil, true
	}
	if t.kind != kindConst || t.typ != tInt32 {
		return nil, false
	}
	return t.c.i32[0], true
}

// planI8 is what the int8 kernels plans have in common.
type planI8 interface {
	Units() int
	Work() int64
	Run(x, y []int8, lo, hi int)
}

// planI8Kernel is planKernel for int8 tensors.
type planI8Kernel struct {
	p      planI8
	ii, oi int
}

func (k *planI8Kernel) rows(ex *executor, lo, hi int) { k.p.Run(ex.v.i8[k.ii], ex.v.i8[k.oi], lo, hi) }

func (k *planI8Kernel) kernel() kernel {
	units, work := k.p.Units(), k.p.Work()
	return func(ex *executor) error {
		ex.parallel(units, work, k)
		return nil
	}
}

// fastConvQuant returns the plan-backed kernel of a prepared int8 CONV_2D
// or DEPTHWISE_CONV_2D (the same arithmetic, bit for bit), or nil where the
// general loop must run.
func fastConvQuant(c *convQuant, f, bias *tinfo) kernel {
	fd, ok1 := constI8(f)
	bd, ok2 := constI32(bias)
	if c.u8 || !ok1 || !ok2 || c.fOffset != 0 || (c.depthwise && c.depthMult != 1) {
		return nil
	}
	rq := kernels.Requant{Mult: c.mult, Shift: c.shift, OutZero: c.outOffset, Lo: c.lo, Hi: c.hi}
	var (
		p   planI8
		err error
	)
	if c.depthwise {
		p, err = kernels.NewDepthwiseInt8(convParams(c.w, 0, 0), -c.inOffset, fd, bd, rq)
	} else {
		p, err = kernels.NewConvInt8(convParams(c.w, 0, 0), -c.inOffset, fd, bd, rq)
	}
	if err != nil {
		return nil
	}
	return (&planI8Kernel{p: p, ii: c.ii, oi: c.oi}).kernel()
}

// fastFullyConnectedQuant returns the plan-backed kernel of a prepared int8
// FULLY_CONNECTED, or nil where the general loop must run.
func fastFullyConnectedQuant(fc *fcQuant, u8 bool, f, bias *tinfo) kernel {
	wd, ok1 := constI8(f)
	bd, ok2 := constI32(bias)
	if u8 || !ok1 || !ok2 {
		return nil
	}
	rq := kernels.Requant{Mult: fc.mult, Shift: fc.shift, OutZero: fc.outZero, Lo: fc.lo, Hi: fc.hi}
	p, err := kernels.NewFullyConnectedInt8(fc.units, fc.depth, -fc.inOff, -fc.fOff, wd, bd, rq)
	if err != nil {
		return nil
	}
	return (&planI8Kernel{p: &denseI8Rows{p, fc.batches}, ii: fc.ii, oi: fc.oi}).kernel()
}

// denseI8Rows counts an int8 FULLY_CONNECTED plan's work over all rows.
type denseI8Rows struct {
	*kernels.FullyConnectedInt8
	batches int
}

func (d *denseI8Rows) Work() int64 { return d.FullyConnectedInt8.Work() * int64(d.batches) }

// minTableElements is the least output size for which an int8 binary
// operator gets a lookup table: building one costs 65536 evaluations.
const minTableElements = 4096

// fastBinaryQuant returns a kernel for an int8 ADD, SUB or MUL of two
// same-shape tensors that reads a 64 KiB table of the output of every
// input pair, filled at load by the operator's own arithmetic (so it is
// exact), or nil where the general loop must run.
func fastBinaryQuant(q *binaryQuant, bc *bcast, a, b, out *tinfo) kernel {
	if a.typ != tInt8 || !bc.same || bc.n < minTableElements {
		return nil
	}
	tab := make([]int8, 1<<16)
	for x := -128; x < 128; x++ {
		for y := -128; y < 128; y++ {
			tab[int(uint8(x))<<8|int(uint8(y))] = int8(q.apply(int32(x), int32(y)))
		}
	}
	ai, bi, oi := a.index, b.index, out.index
	return func(ex *executor) error {
		x, y, z := ex.v.i8[ai], ex.v.i8[bi], ex.v.i8[oi]
		y, z = y[:len(x)], z[:len(x)]
		for i, v := range x {
			z[i] = tab[int(uint8(v))<<8|int(uint8(y[i]))]
		}
		return nil
	}
}

// fastBinaryFloat returns a vector kernel for a float32 ADD of two
// same-shape tensors (the residual connections), or nil where the general
// loop must run. The sums are the same bit for bit.
func fastBinaryFloat(op binaryOp, bc *bcast, a, b, out *tinfo, lo, hi float32) kernel {
	if op != binAdd || !bc.same {
		return nil
	}
	ai, bi, oi := a.index, b.index, out.index
	return func(ex *executor) error {
		kernels.AddF32(ex.v.f32[ai], ex.v.f32[bi], ex.v.f32[oi], lo, hi)
		return nil
	}
}
