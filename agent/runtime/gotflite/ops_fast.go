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
