package gotflite

// Quantized (int8/uint8) operators. Not yet implemented: each reports the
// operator and types it met.

func prepFullyConnectedQuant(p *opPrep, act int8, batches, units, depth int) (kernel, error) {
	return nil, unsupported("input %s has type %s", p.ins[0], p.ins[0].typ)
}

func prepBinaryQuant(p *opPrep, op binaryOp, a, b, out *tinfo, act int8, bc *bcast) (kernel, error) {
	return nil, unsupported("inputs have type %s", a.typ)
}

func prepActivationQuant(p *opPrep, in, out *tinfo) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func prepSoftmaxQuant(p *opPrep, in, out *tinfo, beta float32, depth int) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func prepConvQuant(p *opPrep, w *window, in, f, bias, out *tinfo, act int8, depthwise bool) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func prepPoolQuant(p *opPrep, w *window, in, out *tinfo, act int8, isMax bool) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func prepMeanQuant(p *opPrep, in, out *tinfo, tab []int32, count int) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}

func quantConcatCheck(p *opPrep, out *tinfo) error { return nil }

func prepHardSwishQuant(p *opPrep, in, out *tinfo) (kernel, error) {
	return nil, unsupported("input %s has type %s", in, in.typ)
}
