// AVX2 + FMA kernels for package kernels. Hand-written; see the Go
// declarations in kernels_amd64.go for the contracts.

#include "textflag.h"

// func tileAVX2(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32)
//
// Accumulators: row r of the 6x16 tile in Y(2r) (columns 0-7) and Y(2r+1)
// (columns 8-15). Y12, Y13 hold the 16 weights of one input channel; Y14,
// Y15 the broadcast inputs.
TEXT ·tileAVX2(SB), NOSPLIT, $0-64
	MOVQ a+0(FP), DI
	MOVQ taps+8(FP), CX
	MOVQ k+16(FP), DX
	MOVQ w+24(FP), SI
	MOVQ bias+32(FP), AX
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	VMOVAPS Y0, Y2
	VMOVAPS Y1, Y3
	VMOVAPS Y0, Y4
	VMOVAPS Y1, Y5
	VMOVAPS Y0, Y6
	VMOVAPS Y1, Y7
	VMOVAPS Y0, Y8
	VMOVAPS Y1, Y9
	VMOVAPS Y0, Y10
	VMOVAPS Y1, Y11

tap:
	MOVQ 0(DI), R8
	MOVQ 8(DI), R9
	MOVQ 16(DI), R10
	MOVQ 24(DI), R11
	MOVQ 32(DI), R12
	MOVQ 40(DI), R13
	ADDQ $48, DI
	XORQ BX, BX
	MOVQ DX, AX

kloop:
	VMOVUPS      (SI), Y12
	VMOVUPS      32(SI), Y13
	VBROADCASTSS (R8)(BX*4), Y14
	VBROADCASTSS (R9)(BX*4), Y15
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS (R10)(BX*4), Y14
	VBROADCASTSS (R11)(BX*4), Y15
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS (R12)(BX*4), Y14
	VBROADCASTSS (R13)(BX*4), Y15
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11
	ADDQ         $64, SI
	INCQ         BX
	DECQ         AX
	JNZ          kloop

	DECQ CX
	JNZ  tap

	// Clamp: max(lo, x) then min(hi, x), with x as the second source so
	// that a NaN passes through as in the reference kernels.
	VBROADCASTSS lo+56(FP), Y12
	VBROADCASTSS hi+60(FP), Y13
	VMAXPS       Y0, Y12, Y0
	VMAXPS       Y1, Y12, Y1
	VMAXPS       Y2, Y12, Y2
	VMAXPS       Y3, Y12, Y3
	VMAXPS       Y4, Y12, Y4
	VMAXPS       Y5, Y12, Y5
	VMAXPS       Y6, Y12, Y6
	VMAXPS       Y7, Y12, Y7
	VMAXPS       Y8, Y12, Y8
	VMAXPS       Y9, Y12, Y9
	VMAXPS       Y10, Y12, Y10
	VMAXPS       Y11, Y12, Y11
	VMINPS       Y0, Y13, Y0
	VMINPS       Y1, Y13, Y1
	VMINPS       Y2, Y13, Y2
	VMINPS       Y3, Y13, Y3
	VMINPS       Y4, Y13, Y4
	VMINPS       Y5, Y13, Y5
	VMINPS       Y6, Y13, Y6
	VMINPS       Y7, Y13, Y7
	VMINPS       Y8, Y13, Y8
	VMINPS       Y9, Y13, Y9
	VMINPS       Y10, Y13, Y10
	VMINPS       Y11, Y13, Y11

	MOVQ    c+40(FP), DI
	MOVQ    ldc+48(FP), BX
	SHLQ    $2, BX
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ    BX, DI
	VMOVUPS Y2, (DI)
	VMOVUPS Y3, 32(DI)
	ADDQ    BX, DI
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	ADDQ    BX, DI
	VMOVUPS Y6, (DI)
	VMOVUPS Y7, 32(DI)
	ADDQ    BX, DI
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, 32(DI)
	ADDQ    BX, DI
	VMOVUPS Y10, (DI)
	VMOVUPS Y11, 32(DI)
	VZEROUPPER
	RET

// func dwAVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32)
//
// R9 is the current pixel's byte offset into every input row, R10 its
// output, BX the channel byte offset, R8 the end of the vector channels.
TEXT ·dwAVX2(SB), NOSPLIT, $0-80
	MOVQ         n+0(FP), CX
	MOVQ         out+56(FP), R10
	MOVQ         ch+40(FP), R8
	SHLQ         $2, R8
	XORQ         R9, R9
	VBROADCASTSS lo+72(FP), Y14
	VBROADCASTSS hi+76(FP), Y15
	TESTQ        CX, CX
	JZ           done

pixel:
	XORQ BX, BX

c32:
	MOVQ    R8, AX
	SUBQ    BX, AX
	CMPQ    AX, $128
	JLT     c8
	MOVQ    bias+48(FP), R11
	VMOVUPS (R11)(BX*1), Y0
	VMOVUPS 32(R11)(BX*1), Y1
	VMOVUPS 64(R11)(BX*1), Y2
	VMOVUPS 96(R11)(BX*1), Y3
	MOVQ    ins+8(FP), SI
	MOVQ    ws+16(FP), DI
	MOVQ    taps+24(FP), DX
	TESTQ   DX, DX
	JZ      store32

tap32:
	MOVQ        (SI), R12
	ADDQ        R9, R12
	ADDQ        BX, R12
	MOVQ        (DI), R13
	ADDQ        BX, R13
	VMOVUPS     (R12), Y4
	VMOVUPS     32(R12), Y5
	VMOVUPS     64(R12), Y6
	VMOVUPS     96(R12), Y7
	VFMADD231PS (R13), Y4, Y0
	VFMADD231PS 32(R13), Y5, Y1
	VFMADD231PS 64(R13), Y6, Y2
	VFMADD231PS 96(R13), Y7, Y3
	ADDQ        $8, SI
	ADDQ        $8, DI
	DECQ        DX
	JNZ         tap32

store32:
	VMAXPS  Y0, Y14, Y0
	VMAXPS  Y1, Y14, Y1
	VMAXPS  Y2, Y14, Y2
	VMAXPS  Y3, Y14, Y3
	VMINPS  Y0, Y15, Y0
	VMINPS  Y1, Y15, Y1
	VMINPS  Y2, Y15, Y2
	VMINPS  Y3, Y15, Y3
	VMOVUPS Y0, (R10)(BX*1)
	VMOVUPS Y1, 32(R10)(BX*1)
	VMOVUPS Y2, 64(R10)(BX*1)
	VMOVUPS Y3, 96(R10)(BX*1)
	ADDQ    $128, BX
	JMP     c32

c8:
	CMPQ    AX, $32
	JLT     next
	MOVQ    bias+48(FP), R11
	VMOVUPS (R11)(BX*1), Y0
	MOVQ    ins+8(FP), SI
	MOVQ    ws+16(FP), DI
	MOVQ    taps+24(FP), DX
	TESTQ   DX, DX
	JZ      store8

tap8:
	MOVQ        (SI), R12
	ADDQ        R9, R12
	ADDQ        BX, R12
	MOVQ        (DI), R13
	ADDQ        BX, R13
	VMOVUPS     (R12), Y4
	VFMADD231PS (R13), Y4, Y0
	ADDQ        $8, SI
	ADDQ        $8, DI
	DECQ        DX
	JNZ         tap8

store8:
	VMAXPS  Y0, Y14, Y0
	VMINPS  Y0, Y15, Y0
	VMOVUPS Y0, (R10)(BX*1)
	ADDQ    $32, BX
	SUBQ    $32, AX
	JMP     c8

next:
	ADDQ step+32(FP), R9
	ADDQ outStep+64(FP), R10
	DECQ CX
	JNZ  pixel

done:
	VZEROUPPER
	RET

// func dotAVX2(a, b *float32, n int) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ   a+0(FP), SI
	MOVQ   b+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop32:
	CMPQ        CX, $32
	JLT         loop8
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         loop32

loop8:
	CMPQ        CX, $8
	JLT         reduce
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         loop8

reduce:
	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0

tail:
	TESTQ       CX, CX
	JZ          ret
	VMOVSS      (SI), X4
	VFMADD231SS (DI), X4, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         tail

ret:
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET
