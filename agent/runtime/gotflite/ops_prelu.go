package gotflite

func init() {
	builtinOps[opPrelu] = prepPrelu
}

// prepPrelu is PRELU in float32: y = x where x >= 0, else x * alpha, with
// alpha broadcast against x (usually one slope per channel), as TFLite's
// reference kernel computes it.
func prepPrelu(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	in, alpha, out := p.ins[0], p.ins[1], p.outs[0]
	if err := types(in, "input", tFloat32); err != nil {
		return nil, err
	}
	if alpha.typ != in.typ || out.typ != in.typ {
		return nil, bad("input type %s, alpha type %s and output type %s differ", in.typ, alpha.typ, out.typ)
	}
	bc, err := newBcast(in.shape, alpha.shape, out.shape)
	if err != nil {
		return nil, err
	}
	ii, ai, oi := in.index, alpha.index, out.index
	return func(ex *executor) error {
		x, a, y := ex.v.f32[ii], ex.v.f32[ai], ex.v.f32[oi]
		bc.each(func(o, ix, ia, n, sx, sa int) {
			for k := 0; k < n; k++ {
				v := x[ix+k*sx]
				if v < 0 {
					v *= a[ia+k*sa]
				}
				y[o+k] = v
			}
		})
		return nil
	}, nil
}
