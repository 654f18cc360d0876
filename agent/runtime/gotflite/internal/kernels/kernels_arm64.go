package kernels

import "unsafe"

// haveNEON selects the NEON float tile (kernels_arm64.s); every arm64 CPU
// has Advanced SIMD. A variable so tests can compare the portable path.
var haveNEON = true

// The x86 kernels are not built here.
const (
	haveAVX2 = false
	haveVNNI = false
)

// tileNEON is tile's NEON version.
//
//go:noescape
func tileNEON(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32)

// dwNEON is the vector part of Depthwise.pixels over channels [0, ch), ch
// a multiple of 4; outStep is in bytes.
//
//go:noescape
func dwNEON(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32)
