package kernels

// AddF32 sets z[i] = clamp(x[i] + y[i], lo, hi) for every i of x (y and z
// at least as long). The sums are rounded as the reference's are, so the
// results are the same bit for bit.
func AddF32(x, y, z []float32, lo, hi float32) {
	n := len(x)
	y, z = y[:n], z[:n]
	i := 0
	if haveAVX2 && n >= 8 {
		i = n &^ 7
		addAVX2(&x[0], &y[0], &z[0], i, lo, hi)
	}
	for ; i < n; i++ {
		z[i] = clamp(x[i]+y[i], lo, hi)
	}
}
