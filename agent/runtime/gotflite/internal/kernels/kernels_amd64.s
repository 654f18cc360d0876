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

// REQUANT applies one rqBlock (at base register B) to the eight int32
// sums in X (bias already added), leaving in X the values plus the output
// zero point, before the clamp (PACK16 applies that); T1, T2 are scratch
// and T3 is unused. Offsets are rqBlock's fields: mult 32, left 64,
// right 96, mask 128, half 160, multOdd 192, zero 224, nudge 320.
//
// The doubling high multiply is floor((x*m + 2^30) / 2^31), which equals
// the reference's round-half-away-from-zero form for both signs. Even
// lanes take bits 31-62 of the 64-bit product with a right shift by 31;
// odd lanes double theirs, which puts the same bits in the high dword.
#define REQUANT(X, B, T1, T2, T3) \
	VPSLLVD  64(B), X, X; \
	VPSRLQ   $32, X, T2; \
	VPMULDQ  32(B), X, T1; \
	VPMULDQ  192(B), T2, T2; \
	VPADDQ   320(B), T1, T1; \
	VPADDQ   320(B), T2, T2; \
	VPSRLQ   $31, T1, T1; \
	VPADDQ   T2, T2, T2; \
	VPBLENDD $0xAA, T2, T1, X; \
	VPAND    128(B), X, T1; \
	VPSRAD   $31, X, T2; \
	VPADDD   T2, T1, T1; \
	VPCMPGTD 160(B), T1, T1; \
	VPSRAVD  96(B), X, X; \
	VPSUBD   T1, X, X; \
	VPADDD   224(B), X, X

// PACK16 packs the 16 int32s of LO (channels 0-7) and HI (8-15) from
// REQUANT into 16 int8s in X (LO's XMM half): saturating to int16, then to
// int8, then clamping to lo8 (256(B)) and hi8 (288(B)). Saturation cannot
// change a result: the clamp range lies inside int8, so a saturated value
// clamps to the same bound. TX is a scratch XMM register.
#define PACK16(LO, HI, X, TX, B) \
	VPACKSSDW    HI, LO, LO; \
	VPERMQ       $0xD8, LO, LO; \
	VEXTRACTI128 $1, LO, TX; \
	VPACKSSWB    TX, X, X; \
	VPMAXSB      256(B), X, X; \
	VPMINSB      288(B), X, X

// func qtileAVX2(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int)
//
// A 4x16 int8 tile: rows of a are pairs of int16 inputs broadcast as one
// dword; w holds, per pair, 16 channels x 2 int16 weights. Row r's sums
// are in Y(2r) (channels 0-7) and Y(2r+1) (8-15).
TEXT ·qtileAVX2(SB), NOSPLIT, $0-56
	MOVQ    a+0(FP), R8
	MOVQ    lda+8(FP), AX
	LEAQ    (R8)(AX*1), R9
	LEAQ    (R9)(AX*1), R10
	LEAQ    (R10)(AX*1), R11
	MOVQ    kp+16(FP), CX
	MOVQ    w+24(FP), SI
	MOVQ    rq+32(FP), DX
	LEAQ    352(DX), DI
	VMOVDQU (DX), Y0
	VMOVDQU (DI), Y1
	VMOVDQA Y0, Y2
	VMOVDQA Y1, Y3
	VMOVDQA Y0, Y4
	VMOVDQA Y1, Y5
	VMOVDQA Y0, Y6
	VMOVDQA Y1, Y7
	XORQ    BX, BX

qloop:
	VMOVDQU      (SI), Y8
	VMOVDQU      32(SI), Y9
	VPBROADCASTD (R8)(BX*4), Y10
	VPBROADCASTD (R9)(BX*4), Y13
	VPMADDWD     Y10, Y8, Y11
	VPMADDWD     Y10, Y9, Y12
	VPMADDWD     Y13, Y8, Y14
	VPMADDWD     Y13, Y9, Y15
	VPADDD       Y11, Y0, Y0
	VPADDD       Y12, Y1, Y1
	VPADDD       Y14, Y2, Y2
	VPADDD       Y15, Y3, Y3
	VPBROADCASTD (R10)(BX*4), Y10
	VPBROADCASTD (R11)(BX*4), Y13
	VPMADDWD     Y10, Y8, Y11
	VPMADDWD     Y10, Y9, Y12
	VPMADDWD     Y13, Y8, Y14
	VPMADDWD     Y13, Y9, Y15
	VPADDD       Y11, Y4, Y4
	VPADDD       Y12, Y5, Y5
	VPADDD       Y14, Y6, Y6
	VPADDD       Y15, Y7, Y7
	ADDQ         $64, SI
	INCQ         BX
	DECQ         CX
	JNZ          qloop

	REQUANT(Y0, DX, Y8, Y9, Y10)
	REQUANT(Y1, DI, Y8, Y9, Y10)
	REQUANT(Y2, DX, Y8, Y9, Y10)
	REQUANT(Y3, DI, Y8, Y9, Y10)
	REQUANT(Y4, DX, Y8, Y9, Y10)
	REQUANT(Y5, DI, Y8, Y9, Y10)
	REQUANT(Y6, DX, Y8, Y9, Y10)
	REQUANT(Y7, DI, Y8, Y9, Y10)

	MOVQ    c+40(FP), R8
	MOVQ    ldc+48(FP), AX
	PACK16(Y0, Y1, X0, X8, DX)
	VMOVDQU X0, (R8)
	ADDQ    AX, R8
	PACK16(Y2, Y3, X2, X8, DX)
	VMOVDQU X2, (R8)
	ADDQ    AX, R8
	PACK16(Y4, Y5, X4, X8, DX)
	VMOVDQU X4, (R8)
	ADDQ    AX, R8
	PACK16(Y6, Y7, X6, X8, DX)
	VMOVDQU X6, (R8)
	VZEROUPPER
	RET

// func qtileVNNI(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int)
//
// func qtileVNNI(a *int16, lda, kp int, w *int16, rq *rqBlock, c *int8, ldc int)
//
// An 8x16 int8 tile with AVX512-VNNI's VPDPWSSD on YMM registers, which
// multiplies the int16 pairs and adds to the sums in one instruction. The
// sums live in Y16-Y31 (row r in Y(16+2r) and Y(17+2r)); the weights in
// Y0, Y1 and the broadcast inputs in Y2-Y9. Each row's sums move down to
// Y10, Y11 for the output stage, which uses VEX-only instructions.
TEXT ·qtileVNNI(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), R8
	MOVQ lda+8(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	LEAQ (R11)(AX*1), R12
	LEAQ (R12)(AX*1), R13
	LEAQ (R13)(AX*1), DX
	LEAQ (DX)(AX*1), AX
	MOVQ kp+16(FP), CX
	MOVQ w+24(FP), SI
	MOVQ rq+32(FP), DI

	VMOVDQU   (DI), Y0
	VMOVDQU   352(DI), Y1
	VMOVDQA64 Y0, Y16
	VMOVDQA64 Y1, Y17
	VMOVDQA64 Y0, Y18
	VMOVDQA64 Y1, Y19
	VMOVDQA64 Y0, Y20
	VMOVDQA64 Y1, Y21
	VMOVDQA64 Y0, Y22
	VMOVDQA64 Y1, Y23
	VMOVDQA64 Y0, Y24
	VMOVDQA64 Y1, Y25
	VMOVDQA64 Y0, Y26
	VMOVDQA64 Y1, Y27
	VMOVDQA64 Y0, Y28
	VMOVDQA64 Y1, Y29
	VMOVDQA64 Y0, Y30
	VMOVDQA64 Y1, Y31
	XORQ      BX, BX

vloop:
	VMOVDQU      (SI), Y0
	VMOVDQU      32(SI), Y1
	VPBROADCASTD (R8)(BX*4), Y2
	VPBROADCASTD (R9)(BX*4), Y3
	VPBROADCASTD (R10)(BX*4), Y4
	VPBROADCASTD (R11)(BX*4), Y5
	VPBROADCASTD (R12)(BX*4), Y6
	VPBROADCASTD (R13)(BX*4), Y7
	VPBROADCASTD (DX)(BX*4), Y8
	VPBROADCASTD (AX)(BX*4), Y9
	VPDPWSSD     Y2, Y0, Y16
	VPDPWSSD     Y2, Y1, Y17
	VPDPWSSD     Y3, Y0, Y18
	VPDPWSSD     Y3, Y1, Y19
	VPDPWSSD     Y4, Y0, Y20
	VPDPWSSD     Y4, Y1, Y21
	VPDPWSSD     Y5, Y0, Y22
	VPDPWSSD     Y5, Y1, Y23
	VPDPWSSD     Y6, Y0, Y24
	VPDPWSSD     Y6, Y1, Y25
	VPDPWSSD     Y7, Y0, Y26
	VPDPWSSD     Y7, Y1, Y27
	VPDPWSSD     Y8, Y0, Y28
	VPDPWSSD     Y8, Y1, Y29
	VPDPWSSD     Y9, Y0, Y30
	VPDPWSSD     Y9, Y1, Y31
	ADDQ         $64, SI
	INCQ         BX
	DECQ         CX
	JNZ          vloop

	LEAQ 352(DI), DX
	MOVQ c+40(FP), R8
	MOVQ ldc+48(FP), AX

#define VROW(A, B) \
	VMOVDQA64 A, Y10; \
	VMOVDQA64 B, Y11; \
	REQUANT(Y10, DI, Y12, Y13, Y14); \
	REQUANT(Y11, DX, Y12, Y13, Y14); \
	PACK16(Y10, Y11, X10, X12, DI); \
	VMOVDQU   X10, (R8); \
	ADDQ      AX, R8

	VROW(Y16, Y17)
	VROW(Y18, Y19)
	VROW(Y20, Y21)
	VROW(Y22, Y23)
	VROW(Y24, Y25)
	VROW(Y26, Y27)
	VROW(Y28, Y29)
	VROW(Y30, Y31)
	VZEROUPPER
	RET

// func qtileU8VNNI(a *byte, lda, kq int, w *int8, rq *rqBlock, c *int8, ldc int)
//
// qtileVNNI on bytes (see convU8): each broadcast dword holds four
// unsigned inputs and each weight dword four signed weights, which
// VPDPBUSD multiplies and adds to the sums in one instruction; kq counts
// the groups of four.
TEXT ·qtileU8VNNI(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), R8
	MOVQ lda+8(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	LEAQ (R11)(AX*1), R12
	LEAQ (R12)(AX*1), R13
	LEAQ (R13)(AX*1), DX
	LEAQ (DX)(AX*1), AX
	MOVQ kq+16(FP), CX
	MOVQ w+24(FP), SI
	MOVQ rq+32(FP), DI

	VMOVDQU   (DI), Y0
	VMOVDQU   352(DI), Y1
	VMOVDQA64 Y0, Y16
	VMOVDQA64 Y1, Y17
	VMOVDQA64 Y0, Y18
	VMOVDQA64 Y1, Y19
	VMOVDQA64 Y0, Y20
	VMOVDQA64 Y1, Y21
	VMOVDQA64 Y0, Y22
	VMOVDQA64 Y1, Y23
	VMOVDQA64 Y0, Y24
	VMOVDQA64 Y1, Y25
	VMOVDQA64 Y0, Y26
	VMOVDQA64 Y1, Y27
	VMOVDQA64 Y0, Y28
	VMOVDQA64 Y1, Y29
	VMOVDQA64 Y0, Y30
	VMOVDQA64 Y1, Y31
	XORQ      BX, BX

uloop:
	VMOVDQU      (SI), Y0
	VMOVDQU      32(SI), Y1
	VPBROADCASTD (R8)(BX*4), Y2
	VPBROADCASTD (R9)(BX*4), Y3
	VPBROADCASTD (R10)(BX*4), Y4
	VPBROADCASTD (R11)(BX*4), Y5
	VPBROADCASTD (R12)(BX*4), Y6
	VPBROADCASTD (R13)(BX*4), Y7
	VPBROADCASTD (DX)(BX*4), Y8
	VPBROADCASTD (AX)(BX*4), Y9
	VPDPBUSD     Y0, Y2, Y16
	VPDPBUSD     Y1, Y2, Y17
	VPDPBUSD     Y0, Y3, Y18
	VPDPBUSD     Y1, Y3, Y19
	VPDPBUSD     Y0, Y4, Y20
	VPDPBUSD     Y1, Y4, Y21
	VPDPBUSD     Y0, Y5, Y22
	VPDPBUSD     Y1, Y5, Y23
	VPDPBUSD     Y0, Y6, Y24
	VPDPBUSD     Y1, Y6, Y25
	VPDPBUSD     Y0, Y7, Y26
	VPDPBUSD     Y1, Y7, Y27
	VPDPBUSD     Y0, Y8, Y28
	VPDPBUSD     Y1, Y8, Y29
	VPDPBUSD     Y0, Y9, Y30
	VPDPBUSD     Y1, Y9, Y31
	ADDQ         $64, SI
	INCQ         BX
	DECQ         CX
	JNZ          uloop

	LEAQ 352(DI), DX
	MOVQ c+40(FP), R8
	MOVQ ldc+48(FP), AX

#define UROW(A, B) \
	VMOVDQA64 A, Y10; \
	VMOVDQA64 B, Y11; \
	REQUANT(Y10, DI, Y12, Y13, Y14); \
	REQUANT(Y11, DX, Y12, Y13, Y14); \
	PACK16(Y10, Y11, X10, X12, DI); \
	VMOVDQU   X10, (R8); \
	ADDQ      AX, R8

	UROW(Y16, Y17)
	UROW(Y18, Y19)
	UROW(Y20, Y21)
	UROW(Y22, Y23)
	UROW(Y24, Y25)
	UROW(Y26, Y27)
	UROW(Y28, Y29)
	UROW(Y30, Y31)
	VZEROUPPER
	RET

// func dwI8AVX2(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep int)
//
// Inputs are sign-extended to int32 lanes and multiplied with VPMADDWD
// against weights stored as int32 lanes with the weight in the low 16
// bits and zero above, so each lane is exactly input x weight.
TEXT ·dwI8AVX2(SB), NOSPLIT, $0-80
	MOVQ  n+0(FP), CX
	MOVQ  out+64(FP), R10
	XORQ  R9, R9
	TESTQ CX, CX
	JZ    dwdone

dwpixel:
	XORQ BX, BX
	MOVQ rq+56(FP), R11

dwc32:
	MOVQ    ch+40(FP), AX
	SUBQ    BX, AX
	CMPQ    AX, $32
	JLT     dwc16
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	VMOVDQU 64(DX)(BX*4), Y2
	VMOVDQU 96(DX)(BX*4), Y3
	MOVQ    ins+8(FP), SI
	MOVQ    ws+16(FP), DI
	MOVQ    taps+24(FP), DX
	TESTQ   DX, DX
	JZ      dwrq32

dwtap32:
	MOVQ      (SI), R12
	ADDQ      R9, R12
	ADDQ      BX, R12
	MOVQ      (DI), R13
	LEAQ      (R13)(BX*4), R13
	VPMOVSXBD (R12), Y4
	VPMOVSXBD 8(R12), Y5
	VPMOVSXBD 16(R12), Y6
	VPMOVSXBD 24(R12), Y7
	VPMADDWD  (R13), Y4, Y4
	VPMADDWD  32(R13), Y5, Y5
	VPMADDWD  64(R13), Y6, Y6
	VPMADDWD  96(R13), Y7, Y7
	VPADDD    Y4, Y0, Y0
	VPADDD    Y5, Y1, Y1
	VPADDD    Y6, Y2, Y2
	VPADDD    Y7, Y3, Y3
	ADDQ      $8, SI
	ADDQ      $8, DI
	DECQ      DX
	JNZ       dwtap32

dwrq32:
	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y8, Y9, Y10)
	REQUANT(Y1, R13, Y8, Y9, Y10)
	LEAQ    704(R11), R12
	LEAQ    1056(R11), R13
	REQUANT(Y2, R12, Y8, Y9, Y10)
	REQUANT(Y3, R13, Y8, Y9, Y10)
	PACK16(Y0, Y1, X0, X8, R11)
	PACK16(Y2, Y3, X2, X8, R11)
	VMOVDQU X0, (R10)(BX*1)
	VMOVDQU X2, 16(R10)(BX*1)
	ADDQ    $32, BX
	ADDQ    $1408, R11
	JMP     dwc32

dwc16:
	MOVQ    ch+40(FP), AX
	SUBQ    BX, AX
	CMPQ    AX, $16
	JLT     dwc8
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	MOVQ    ins+8(FP), SI
	MOVQ    ws+16(FP), DI
	MOVQ    taps+24(FP), DX
	TESTQ   DX, DX
	JZ      dwrq16

dwtap16:
	MOVQ      (SI), R12
	ADDQ      R9, R12
	MOVQ      (DI), R13
	VPMOVSXBD (R12)(BX*1), Y2
	VPMOVSXBD 8(R12)(BX*1), Y3
	VPMADDWD  (R13)(BX*4), Y2, Y2
	VPMADDWD  32(R13)(BX*4), Y3, Y3
	VPADDD    Y2, Y0, Y0
	VPADDD    Y3, Y1, Y1
	ADDQ      $8, SI
	ADDQ      $8, DI
	DECQ      DX
	JNZ       dwtap16

dwrq16:
	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y4, Y5, Y6)
	REQUANT(Y1, R13, Y4, Y5, Y6)
	PACK16(Y0, Y1, X0, X4, R11)
	VMOVDQU X0, (R10)(BX*1)
	ADDQ    $16, BX
	ADDQ    $704, R11
	JMP     dwc16

dwc8:
	CMPQ    AX, $8
	JLT     dwnext
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	MOVQ    ins+8(FP), SI
	MOVQ    ws+16(FP), DI
	MOVQ    taps+24(FP), DX
	TESTQ   DX, DX
	JZ      dwrq8

dwtap8:
	MOVQ      (SI), R12
	ADDQ      R9, R12
	MOVQ      (DI), R13
	VPMOVSXBD (R12)(BX*1), Y2
	VPMADDWD  (R13)(BX*4), Y2, Y2
	VPADDD    Y2, Y0, Y0
	ADDQ      $8, SI
	ADDQ      $8, DI
	DECQ      DX
	JNZ       dwtap8

dwrq8:
	REQUANT(Y0, R11, Y4, Y5, Y6)
	VPACKSSDW Y0, Y0, Y0
	VPERMQ    $0xD8, Y0, Y0
	VPACKSSWB X0, X0, X0
	VPMAXSB   256(R11), X0, X0
	VPMINSB   288(R11), X0, X0
	VMOVQ     X0, (R10)(BX*1)
	ADDQ      $8, BX
	ADDQ      $352, R11
	JMP       dwc16

dwnext:
	ADDQ step+32(FP), R9
	ADDQ outStep+72(FP), R10
	DECQ CX
	JNZ  dwpixel

dwdone:
	VZEROUPPER
	RET

// func widenAVX2(dst *int16, src *int8, n int, off int32)
// n is a positive multiple of 16.
TEXT ·widenAVX2(SB), NOSPLIT, $0-28
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVL         off+24(FP), AX
	VMOVD        AX, X1
	VPBROADCASTW X1, Y1

wloop:
	VPMOVSXBW (SI), Y0
	VPADDW    Y1, Y0, Y0
	VMOVDQU   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	SUBQ      $16, CX
	JNZ       wloop
	VZEROUPPER
	RET

// func dotI16AVX2(a, b *int16, n int) int32
// n is a positive multiple of 16.
TEXT ·dotI16AVX2(SB), NOSPLIT, $0-28
	MOVQ  a+0(FP), SI
	MOVQ  b+8(FP), DI
	MOVQ  n+16(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1

d32:
	CMPQ     CX, $32
	JLT      d16
	VMOVDQU  (SI), Y2
	VMOVDQU  32(SI), Y3
	VPMADDWD (DI), Y2, Y2
	VPMADDWD 32(DI), Y3, Y3
	VPADDD   Y2, Y0, Y0
	VPADDD   Y3, Y1, Y1
	ADDQ     $64, SI
	ADDQ     $64, DI
	SUBQ     $32, CX
	JMP      d32

d16:
	TESTQ    CX, CX
	JZ       dsum
	VMOVDQU  (SI), Y2
	VPMADDWD (DI), Y2, Y2
	VPADDD   Y2, Y0, Y0

dsum:
	VPADDD       Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD       X1, X0, X0
	VPSHUFD      $0x4E, X0, X1
	VPADDD       X1, X0, X0
	VPSHUFD      $0xB1, X0, X1
	VPADDD       X1, X0, X0
	VMOVD        X0, AX
	MOVL         AX, ret+24(FP)
	VZEROUPPER
	RET

// func dwI8PairAVX2(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int)
//
// The depthwise kernel for a full set of taps, two taps per VPMADDWD:
// the two taps' input bytes are interleaved (VPUNPCKLBW/HBW) and widened,
// so each int32 lane holds (tap a, tap b) for one channel, against
// weights stored the same way. ins has 2*pairs entries; w is
// [pair][channel][2] int16 with wstride bytes per pair. ch is a multiple
// of 16.
TEXT ·dwI8PairAVX2(SB), NOSPLIT, $0-88
	MOVQ  n+0(FP), CX
	MOVQ  out+64(FP), R10
	XORQ  R9, R9
	TESTQ CX, CX
	JZ    pdone

ppixel:
	XORQ BX, BX
	MOVQ rq+56(FP), R11

pc32:
	MOVQ    ch+40(FP), AX
	SUBQ    BX, AX
	CMPQ    AX, $32
	JLT     pc16
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	VMOVDQU 64(DX)(BX*4), Y2
	VMOVDQU 96(DX)(BX*4), Y3
	MOVQ    ins+8(FP), SI
	MOVQ    w+16(FP), DI
	MOVQ    pairs+24(FP), DX

ppair32:
	MOVQ       (SI), R12
	ADDQ       R9, R12
	MOVQ       8(SI), R13
	ADDQ       R9, R13
	VMOVDQU    (R12)(BX*1), X8
	VMOVDQU    (R13)(BX*1), X9
	VMOVDQU    16(R12)(BX*1), X10
	VMOVDQU    16(R13)(BX*1), X11
	VPUNPCKLBW X9, X8, X4
	VPUNPCKHBW X9, X8, X5
	VPUNPCKLBW X11, X10, X6
	VPUNPCKHBW X11, X10, X7
	VPMOVSXBW  X4, Y4
	VPMOVSXBW  X5, Y5
	VPMOVSXBW  X6, Y6
	VPMOVSXBW  X7, Y7
	VPMADDWD   (DI)(BX*4), Y4, Y4
	VPMADDWD   32(DI)(BX*4), Y5, Y5
	VPMADDWD   64(DI)(BX*4), Y6, Y6
	VPMADDWD   96(DI)(BX*4), Y7, Y7
	VPADDD     Y4, Y0, Y0
	VPADDD     Y5, Y1, Y1
	VPADDD     Y6, Y2, Y2
	VPADDD     Y7, Y3, Y3
	ADDQ       $16, SI
	ADDQ       wstride+80(FP), DI
	DECQ       DX
	JNZ        ppair32

	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y4, Y5, Y6)
	REQUANT(Y1, R13, Y4, Y5, Y6)
	LEAQ    704(R11), R12
	LEAQ    1056(R11), R13
	REQUANT(Y2, R12, Y4, Y5, Y6)
	REQUANT(Y3, R13, Y4, Y5, Y6)
	PACK16(Y0, Y1, X0, X4, R11)
	PACK16(Y2, Y3, X2, X4, R11)
	VMOVDQU X0, (R10)(BX*1)
	VMOVDQU X2, 16(R10)(BX*1)
	ADDQ    $32, BX
	ADDQ    $1408, R11
	JMP     pc32

pc16:
	CMPQ    BX, ch+40(FP)
	JGE     pnext
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	MOVQ    ins+8(FP), SI
	MOVQ    w+16(FP), DI
	MOVQ    pairs+24(FP), DX

ppair:
	MOVQ       (SI), R12
	ADDQ       R9, R12
	MOVQ       8(SI), R13
	ADDQ       R9, R13
	VMOVDQU    (R12)(BX*1), X2
	VMOVDQU    (R13)(BX*1), X3
	VPUNPCKLBW X3, X2, X4
	VPUNPCKHBW X3, X2, X5
	VPMOVSXBW  X4, Y4
	VPMOVSXBW  X5, Y5
	VPMADDWD   (DI)(BX*4), Y4, Y4
	VPMADDWD   32(DI)(BX*4), Y5, Y5
	VPADDD     Y4, Y0, Y0
	VPADDD     Y5, Y1, Y1
	ADDQ       $16, SI
	ADDQ       wstride+80(FP), DI
	DECQ       DX
	JNZ        ppair

	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y4, Y5, Y6)
	REQUANT(Y1, R13, Y4, Y5, Y6)
	PACK16(Y0, Y1, X0, X4, R11)
	VMOVDQU X0, (R10)(BX*1)
	ADDQ    $16, BX
	ADDQ    $704, R11
	JMP     pc16

pnext:
	ADDQ step+32(FP), R9
	ADDQ outStep+72(FP), R10
	DECQ CX
	JNZ  ppixel

pdone:
	VZEROUPPER
	RET

// func dwI8PairVNNI(n int, ins *unsafe.Pointer, w *int16, pairs, step, ch int, bias *int32, rq *rqBlock, out *int8, outStep, wstride int)
//
// dwI8PairAVX2 with AVX512-VNNI's VPDPWSSD, which multiplies and adds in
// one instruction.
//
// The depthwise kernel for a full set of taps, two taps per VPMADDWD:
// the two taps' input bytes are interleaved (VPUNPCKLBW/HBW) and widened,
// so each int32 lane holds (tap a, tap b) for one channel, against
// weights stored the same way. ins has 2*pairs entries; w is
// [pair][channel][2] int16 with wstride bytes per pair. ch is a multiple
// of 16.
TEXT ·dwI8PairVNNI(SB), NOSPLIT, $0-88
	MOVQ  n+0(FP), CX
	MOVQ  out+64(FP), R10
	XORQ  R9, R9
	TESTQ CX, CX
	JZ    vpdone

vppixel:
	XORQ BX, BX
	MOVQ rq+56(FP), R11

vpc32:
	MOVQ    ch+40(FP), AX
	SUBQ    BX, AX
	CMPQ    AX, $32
	JLT     vpc16
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	VMOVDQU 64(DX)(BX*4), Y2
	VMOVDQU 96(DX)(BX*4), Y3
	MOVQ    ins+8(FP), SI
	MOVQ    w+16(FP), DI
	MOVQ    pairs+24(FP), DX

vppair32:
	MOVQ       (SI), R12
	ADDQ       R9, R12
	MOVQ       8(SI), R13
	ADDQ       R9, R13
	VMOVDQU    (R12)(BX*1), X8
	VMOVDQU    (R13)(BX*1), X9
	VMOVDQU    16(R12)(BX*1), X10
	VMOVDQU    16(R13)(BX*1), X11
	VPUNPCKLBW X9, X8, X4
	VPUNPCKHBW X9, X8, X5
	VPUNPCKLBW X11, X10, X6
	VPUNPCKHBW X11, X10, X7
	VPMOVSXBW  X4, Y4
	VPMOVSXBW  X5, Y5
	VPMOVSXBW  X6, Y6
	VPMOVSXBW  X7, Y7
	VPDPWSSD   (DI)(BX*4), Y4, Y0
	VPDPWSSD   32(DI)(BX*4), Y5, Y1
	VPDPWSSD   64(DI)(BX*4), Y6, Y2
	VPDPWSSD   96(DI)(BX*4), Y7, Y3
	ADDQ       $16, SI
	ADDQ       wstride+80(FP), DI
	DECQ       DX
	JNZ        vppair32

	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y4, Y5, Y6)
	REQUANT(Y1, R13, Y4, Y5, Y6)
	LEAQ    704(R11), R12
	LEAQ    1056(R11), R13
	REQUANT(Y2, R12, Y4, Y5, Y6)
	REQUANT(Y3, R13, Y4, Y5, Y6)
	PACK16(Y0, Y1, X0, X4, R11)
	PACK16(Y2, Y3, X2, X4, R11)
	VMOVDQU X0, (R10)(BX*1)
	VMOVDQU X2, 16(R10)(BX*1)
	ADDQ    $32, BX
	ADDQ    $1408, R11
	JMP     vpc32

vpc16:
	CMPQ    BX, ch+40(FP)
	JGE     vpnext
	MOVQ    bias+48(FP), DX
	VMOVDQU (DX)(BX*4), Y0
	VMOVDQU 32(DX)(BX*4), Y1
	MOVQ    ins+8(FP), SI
	MOVQ    w+16(FP), DI
	MOVQ    pairs+24(FP), DX

vppair:
	MOVQ       (SI), R12
	ADDQ       R9, R12
	MOVQ       8(SI), R13
	ADDQ       R9, R13
	VMOVDQU    (R12)(BX*1), X2
	VMOVDQU    (R13)(BX*1), X3
	VPUNPCKLBW X3, X2, X4
	VPUNPCKHBW X3, X2, X5
	VPMOVSXBW  X4, Y4
	VPMOVSXBW  X5, Y5
	VPDPWSSD   (DI)(BX*4), Y4, Y0
	VPDPWSSD   32(DI)(BX*4), Y5, Y1
	ADDQ       $16, SI
	ADDQ       wstride+80(FP), DI
	DECQ       DX
	JNZ        vppair

	LEAQ    352(R11), R13
	REQUANT(Y0, R11, Y4, Y5, Y6)
	REQUANT(Y1, R13, Y4, Y5, Y6)
	PACK16(Y0, Y1, X0, X4, R11)
	VMOVDQU X0, (R10)(BX*1)
	ADDQ    $16, BX
	ADDQ    $704, R11
	JMP     vpc16

vpnext:
	ADDQ step+32(FP), R9
	ADDQ outStep+72(FP), R10
	DECQ CX
	JNZ  vppixel

vpdone:
	VZEROUPPER
	RET

// func addAVX2(x, y, z *float32, n int, lo, hi float32)
// n is a positive multiple of 8. The clamp keeps NaN, as in REQUANT's
// float cousin in tileAVX2.
TEXT ·addAVX2(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         y+8(FP), DI
	MOVQ         z+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS lo+32(FP), Y14
	VBROADCASTSS hi+36(FP), Y15

add32:
	CMPQ    CX, $32
	JLT     add8
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VADDPS  (DI), Y0, Y0
	VADDPS  32(DI), Y1, Y1
	VADDPS  64(DI), Y2, Y2
	VADDPS  96(DI), Y3, Y3
	VMAXPS  Y0, Y14, Y0
	VMAXPS  Y1, Y14, Y1
	VMAXPS  Y2, Y14, Y2
	VMAXPS  Y3, Y14, Y3
	VMINPS  Y0, Y15, Y0
	VMINPS  Y1, Y15, Y1
	VMINPS  Y2, Y15, Y2
	VMINPS  Y3, Y15, Y3
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VMOVUPS Y2, 64(DX)
	VMOVUPS Y3, 96(DX)
	ADDQ    $128, SI
	ADDQ    $128, DI
	ADDQ    $128, DX
	SUBQ    $32, CX
	JMP     add32

add8:
	TESTQ   CX, CX
	JZ      adddone
	VMOVUPS (SI), Y0
	VADDPS  (DI), Y0, Y0
	VMAXPS  Y0, Y14, Y0
	VMINPS  Y0, Y15, Y0
	VMOVUPS Y0, (DX)
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $32, DX
	SUBQ    $8, CX
	JMP     add8

adddone:
	VZEROUPPER
	RET
