package kernels

import "unsafe"

// The x86 kernels, never called on arm64 (haveAVX2 and haveVNNI are false).

func tileAVX2(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32) {
	panic("kernels: no AVX2 on this architecture")
}

func dwAVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32) {
	panic("kernels: no AVX2 on this architecture")
}

func dotAVX2(a, b *float32, n int) float32 { panic("kernels: no AVX2 on this architecture") }

func qtileAVX2(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int) {
	panic("kernels: no AVX2 on this architecture")
}

func qtileVNNI(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int) {
	panic("kernels: no AVX512-VNNI on this architecture")
}

func dwI8AVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep int) {
	panic("kernels: no AVX2 on this architecture")
}

func dwI8PairAVX2(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int) {
	panic("kernels: no AVX2 on this architecture")
}

func widenAVX2(dst *int16, src *int8, n int, off int32) {
	panic("kernels: no AVX2 on this architecture")
}

func dotI16AVX2(a, b *int16, n int) int32 { panic("kernels: no AVX2 on this architecture") }

func addAVX2(x, y, z *float32, n int, lo, hi float32) { panic("kernels: no AVX2 on this architecture") }

func dwI8PairVNNI(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int) {
	panic("kernels: no AVX512-VNNI on this architecture")
}

func qtileU8VNNI(a *byte, lda, kq int, w *int8, rq *rqBlock, c *int8, ldc int) {
	panic("kernels: no AVX512-VNNI on this architecture")
}
