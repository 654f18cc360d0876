package kernels

import "fmt"

// FullyConnected is a prepared float32 FULLY_CONNECTED: y[b][u] =
// clamp(dot(x[b], w[u]) + bias[u]). Output units are its work units. The
// plan refers to the weights and bias it was given, which must stay
// unchanged.
type FullyConnected struct {
	units, depth int
	w, bias      []float32
	lo, hi       float32
}

// NewFullyConnected prepares weights w ([units][depth]) and the optional
// bias (units values, nil for none), with the fused activation's clamp.
func NewFullyConnected(units, depth int, w, bias []float32, lo, hi float32) (*FullyConnected, error) {
	if units < 1 || depth < 1 || len(w) != units*depth {
		return nil, fmt.Errorf("%w: %d units of depth %d with %d weights", ErrGeometry, units, depth, len(w))
	}
	if bias != nil && len(bias) != units {
		return nil, fmt.Errorf("%w: bias of %d values, want %d", ErrGeometry, len(bias), units)
	}
	return &FullyConnected{units: units, depth: depth, w: w, bias: bias, lo: lo, hi: hi}, nil
}

// Units is the number of output units.
func (f *FullyConnected) Units() int { return f.units }

// Work is the number of multiply-adds per batch row.
func (f *FullyConnected) Work() int64 { return int64(f.units) * int64(f.depth) }

// Run computes units [lo, hi) of every batch row of x (len(x)/depth rows)
// into y. Disjoint ranges may run concurrently. It allocates nothing.
func (f *FullyConnected) Run(x, y []float32, lo, hi int) {
	batches := len(x) / f.depth
	if len(x)%f.depth != 0 || len(y) < batches*f.units || lo < 0 || hi > f.units {
		panic(fmt.Sprintf("kernels: FullyConnected.Run with %d inputs, %d outputs, units [%d, %d) of %d", len(x), len(y), lo, hi, f.units))
	}
	for bt := 0; bt < batches; bt++ {
		row := x[bt*f.depth:][:f.depth]
		out := y[bt*f.units:][:f.units]
		for u := lo; u < hi; u++ {
			s := Dot(row, f.w[u*f.depth:][:f.depth])
			if f.bias != nil {
				s += f.bias[u]
			}
			out[u] = clamp(s, f.lo, f.hi)
		}
	}
}

// Dot returns the dot product of a and b[:len(a)].
func Dot(a, b []float32) float32 {
	if len(a) == 0 {
		return 0
	}
	b = b[:len(a)]
	if haveAVX2 {
		return dotAVX2(&a[0], &b[0], len(a))
	}
	return dotGo(a, b)
}

// dotGo is the portable dot product, with four partial sums like the
// vector version so that long rows lose less precision.
func dotGo(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}
