package kernels

// setAVX2 switches the assembly kernels (here the NEON tile) off (false)
// or back on (true); setVNNI has nothing to switch on arm64.
func setAVX2(on bool) { haveNEON = on }

func setVNNI(bool) {}
