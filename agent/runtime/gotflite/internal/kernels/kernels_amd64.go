package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveAVX2 selects the assembly kernels: AVX2 and FMA, with the OS saving
// the YMM registers (x/sys/cpu checks that for HasAVX2).
var haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// haveVNNI selects the int8 tile that uses AVX512-VNNI on YMM registers
// (which needs AVX512VL, and the OS saving the AVX-512 state: x/sys/cpu
// checks that).
var haveVNNI = haveAVX2 && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL

// haveNEON is false on amd64.
const haveNEON = false

func tileNEON(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32) {
	panic("kernels: no NEON on this architecture")
}

// tileAVX2 is tile's assembly version (kernels_amd64.s).
//
//go:noescape
func tileAVX2(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32)

// dwAVX2 is the vector part of Depthwise.pixels, over channels [0, ch),
// ch a multiple of 8; outStep is in bytes.
//
//go:noescape
func dwAVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32)

// dotAVX2 returns the dot product of n floats at a and b.
//
//go:noescape
func dotAVX2(a, b *float32, n int) float32

// qtileAVX2 computes 4 rows of qtile; lda is in bytes, kp counts pairs.
//
//go:noescape
func qtileAVX2(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int)

// qtileVNNI is an 8-row qtileAVX2 with VPDPWSSD.
//
//go:noescape
func qtileVNNI(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int)

// dwI8AVX2 is the vector part of DepthwiseInt8.pixels over channels
// [0, ch), ch a multiple of 8.
//
//go:noescape
func dwI8AVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep int)

// widenAVX2 sets dst[i] = src[i] + off for n (a multiple of 16) values.
//
//go:noescape
func widenAVX2(dst *int16, src *int8, n int, off int32)

// dotI16AVX2 returns the int32 dot product of n (a multiple of 16) int16s.
//
//go:noescape
func dotI16AVX2(a, b *int16, n int) int32

// dwI8PairAVX2 is DepthwiseInt8's kernel for a full tap set, two taps per
// multiply; ch is a multiple of 16 and wstride the bytes per tap pair.
//
//go:noescape
func dwI8PairAVX2(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int)

// addAVX2 is AddF32's vector loop over n (a multiple of 8) values.
//
//go:noescape
func addAVX2(x, y, z *float32, n int, lo, hi float32)

func dwNEON(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32) {
	panic("kernels: no NEON on this architecture")
}

// dwI8PairVNNI is dwI8PairAVX2 with VPDPWSSD.
//
//go:noescape
func dwI8PairVNNI(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int)

// qtileU8VNNI is the byte tile of convU8; lda is in bytes, kq counts
// groups of four.
//
//go:noescape
func qtileU8VNNI(a *byte, lda, kq int, w *int8, rq *rqBlock, c *int8, ldc int)
