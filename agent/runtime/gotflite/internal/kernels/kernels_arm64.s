// NEON kernel for package kernels on arm64 (Advanced SIMD is part of
// every arm64 CPU). Hand-written; see kernels_arm64.go for the contract.

#include "textflag.h"

// func tileNEON(a *unsafe.Pointer, taps, k int, w, bias, c *float32, ldc int, lo, hi float32)
//
// Row r of the 6x16 tile sums in V(8+4r)..V(11+4r); V0-V3 hold the 16
// weights of one input channel, V4 and V5 broadcast inputs. FMAX and
// FMIN (vector), which the Go assembler does not name, are WORDs:
// 0x4E20F400 and 0x4EA0F400 | Rm<<16 | Rn<<5 | Rd; like the reference
// clamp they keep a NaN.
TEXT ·tileNEON(SB), NOSPLIT, $0-64
	MOVD a+0(FP), R0
	MOVD taps+8(FP), R1
	MOVD k+16(FP), R2
	MOVD w+24(FP), R3
	MOVD bias+32(FP), R4
	VLD1 (R4), [V0.S4, V1.S4, V2.S4, V3.S4]
	VMOV V0.B16, V8.B16
	VMOV V1.B16, V9.B16
	VMOV V2.B16, V10.B16
	VMOV V3.B16, V11.B16
	VMOV V0.B16, V12.B16
	VMOV V1.B16, V13.B16
	VMOV V2.B16, V14.B16
	VMOV V3.B16, V15.B16
	VMOV V0.B16, V16.B16
	VMOV V1.B16, V17.B16
	VMOV V2.B16, V18.B16
	VMOV V3.B16, V19.B16
	VMOV V0.B16, V20.B16
	VMOV V1.B16, V21.B16
	VMOV V2.B16, V22.B16
	VMOV V3.B16, V23.B16
	VMOV V0.B16, V24.B16
	VMOV V1.B16, V25.B16
	VMOV V2.B16, V26.B16
	VMOV V3.B16, V27.B16
	VMOV V0.B16, V28.B16
	VMOV V1.B16, V29.B16
	VMOV V2.B16, V30.B16
	VMOV V3.B16, V31.B16

tap:
	MOVD.P 8(R0), R5
	MOVD.P 8(R0), R6
	MOVD.P 8(R0), R7
	MOVD.P 8(R0), R8
	MOVD.P 8(R0), R9
	MOVD.P 8(R0), R10
	MOVD   R2, R11

kloop:
	VLD1.P 64(R3), [V0.S4, V1.S4, V2.S4, V3.S4]
	VLD1R.P 4(R5), [V4.S4]
	VLD1R.P 4(R6), [V5.S4]
	VFMLA V4.S4, V0.S4, V8.S4
	VFMLA V4.S4, V1.S4, V9.S4
	VFMLA V4.S4, V2.S4, V10.S4
	VFMLA V4.S4, V3.S4, V11.S4
	VFMLA V5.S4, V0.S4, V12.S4
	VFMLA V5.S4, V1.S4, V13.S4
	VFMLA V5.S4, V2.S4, V14.S4
	VFMLA V5.S4, V3.S4, V15.S4
	VLD1R.P 4(R7), [V4.S4]
	VLD1R.P 4(R8), [V5.S4]
	VFMLA V4.S4, V0.S4, V16.S4
	VFMLA V4.S4, V1.S4, V17.S4
	VFMLA V4.S4, V2.S4, V18.S4
	VFMLA V4.S4, V3.S4, V19.S4
	VFMLA V5.S4, V0.S4, V20.S4
	VFMLA V5.S4, V1.S4, V21.S4
	VFMLA V5.S4, V2.S4, V22.S4
	VFMLA V5.S4, V3.S4, V23.S4
	VLD1R.P 4(R9), [V4.S4]
	VLD1R.P 4(R10), [V5.S4]
	VFMLA V4.S4, V0.S4, V24.S4
	VFMLA V4.S4, V1.S4, V25.S4
	VFMLA V4.S4, V2.S4, V26.S4
	VFMLA V4.S4, V3.S4, V27.S4
	VFMLA V5.S4, V0.S4, V28.S4
	VFMLA V5.S4, V1.S4, V29.S4
	VFMLA V5.S4, V2.S4, V30.S4
	VFMLA V5.S4, V3.S4, V31.S4
	SUBS $1, R11, R11
	BNE  kloop
	SUBS $1, R1, R1
	BNE  tap

	MOVD  $lo+56(FP), R12
	VLD1R (R12), [V6.S4]
	MOVD  $hi+60(FP), R12
	VLD1R (R12), [V7.S4]
	WORD  $0x4e28f4c8 // FMAX V8.4S, V6.4S, V8.4S
	WORD  $0x4e29f4c9 // FMAX V9.4S, V6.4S, V9.4S
	WORD  $0x4e2af4ca // FMAX V10.4S, V6.4S, V10.4S
	WORD  $0x4e2bf4cb // FMAX V11.4S, V6.4S, V11.4S
	WORD  $0x4e2cf4cc // FMAX V12.4S, V6.4S, V12.4S
	WORD  $0x4e2df4cd // FMAX V13.4S, V6.4S, V13.4S
	WORD  $0x4e2ef4ce // FMAX V14.4S, V6.4S, V14.4S
	WORD  $0x4e2ff4cf // FMAX V15.4S, V6.4S, V15.4S
	WORD  $0x4e30f4d0 // FMAX V16.4S, V6.4S, V16.4S
	WORD  $0x4e31f4d1 // FMAX V17.4S, V6.4S, V17.4S
	WORD  $0x4e32f4d2 // FMAX V18.4S, V6.4S, V18.4S
	WORD  $0x4e33f4d3 // FMAX V19.4S, V6.4S, V19.4S
	WORD  $0x4e34f4d4 // FMAX V20.4S, V6.4S, V20.4S
	WORD  $0x4e35f4d5 // FMAX V21.4S, V6.4S, V21.4S
	WORD  $0x4e36f4d6 // FMAX V22.4S, V6.4S, V22.4S
	WORD  $0x4e37f4d7 // FMAX V23.4S, V6.4S, V23.4S
	WORD  $0x4e38f4d8 // FMAX V24.4S, V6.4S, V24.4S
	WORD  $0x4e39f4d9 // FMAX V25.4S, V6.4S, V25.4S
	WORD  $0x4e3af4da // FMAX V26.4S, V6.4S, V26.4S
	WORD  $0x4e3bf4db // FMAX V27.4S, V6.4S, V27.4S
	WORD  $0x4e3cf4dc // FMAX V28.4S, V6.4S, V28.4S
	WORD  $0x4e3df4dd // FMAX V29.4S, V6.4S, V29.4S
	WORD  $0x4e3ef4de // FMAX V30.4S, V6.4S, V30.4S
	WORD  $0x4e3ff4df // FMAX V31.4S, V6.4S, V31.4S
	WORD  $0x4ea8f4e8 // FMIN V8.4S, V7.4S, V8.4S
	WORD  $0x4ea9f4e9 // FMIN V9.4S, V7.4S, V9.4S
	WORD  $0x4eaaf4ea // FMIN V10.4S, V7.4S, V10.4S
	WORD  $0x4eabf4eb // FMIN V11.4S, V7.4S, V11.4S
	WORD  $0x4eacf4ec // FMIN V12.4S, V7.4S, V12.4S
	WORD  $0x4eadf4ed // FMIN V13.4S, V7.4S, V13.4S
	WORD  $0x4eaef4ee // FMIN V14.4S, V7.4S, V14.4S
	WORD  $0x4eaff4ef // FMIN V15.4S, V7.4S, V15.4S
	WORD  $0x4eb0f4f0 // FMIN V16.4S, V7.4S, V16.4S
	WORD  $0x4eb1f4f1 // FMIN V17.4S, V7.4S, V17.4S
	WORD  $0x4eb2f4f2 // FMIN V18.4S, V7.4S, V18.4S
	WORD  $0x4eb3f4f3 // FMIN V19.4S, V7.4S, V19.4S
	WORD  $0x4eb4f4f4 // FMIN V20.4S, V7.4S, V20.4S
	WORD  $0x4eb5f4f5 // FMIN V21.4S, V7.4S, V21.4S
	WORD  $0x4eb6f4f6 // FMIN V22.4S, V7.4S, V22.4S
	WORD  $0x4eb7f4f7 // FMIN V23.4S, V7.4S, V23.4S
	WORD  $0x4eb8f4f8 // FMIN V24.4S, V7.4S, V24.4S
	WORD  $0x4eb9f4f9 // FMIN V25.4S, V7.4S, V25.4S
	WORD  $0x4ebaf4fa // FMIN V26.4S, V7.4S, V26.4S
	WORD  $0x4ebbf4fb // FMIN V27.4S, V7.4S, V27.4S
	WORD  $0x4ebcf4fc // FMIN V28.4S, V7.4S, V28.4S
	WORD  $0x4ebdf4fd // FMIN V29.4S, V7.4S, V29.4S
	WORD  $0x4ebef4fe // FMIN V30.4S, V7.4S, V30.4S
	WORD  $0x4ebff4ff // FMIN V31.4S, V7.4S, V31.4S

	MOVD c+40(FP), R12
	MOVD ldc+48(FP), R13
	LSL  $2, R13, R13
	VST1 [V8.S4, V9.S4, V10.S4, V11.S4], (R12)
	ADD  R13, R12, R12
	VST1 [V12.S4, V13.S4, V14.S4, V15.S4], (R12)
	ADD  R13, R12, R12
	VST1 [V16.S4, V17.S4, V18.S4, V19.S4], (R12)
	ADD  R13, R12, R12
	VST1 [V20.S4, V21.S4, V22.S4, V23.S4], (R12)
	ADD  R13, R12, R12
	VST1 [V24.S4, V25.S4, V26.S4, V27.S4], (R12)
	ADD  R13, R12, R12
	VST1 [V28.S4, V29.S4, V30.S4, V31.S4], (R12)
	RET

// func dwNEON(n int, ins, ws *unsafe.Pointer, taps, step, ch int, bias, out *float32, outStep int, lo, hi float32)
//
// The vector part of Depthwise.pixels over channels [0, ch), ch a multiple
// of 4: 16 channels per pass (V0-V3), then 4. R3 is the pixel's byte
// offset into every input row, R1 its output, R5 the channel byte offset.
// V30 and V31 hold the clamp bounds (FMAX/FMIN as WORDs, see tileNEON).
TEXT ·dwNEON(SB), NOSPLIT, $0-80
	MOVD  n+0(FP), R0
	MOVD  out+56(FP), R1
	MOVD  ch+40(FP), R2
	LSL   $2, R2, R2
	MOVD  $0, R3
	MOVD  $lo+72(FP), R4
	VLD1R (R4), [V30.S4]
	MOVD  $hi+76(FP), R4
	VLD1R (R4), [V31.S4]
	CBZ   R0, dwndone

dwnpixel:
	MOVD $0, R5

dwn16:
	SUB  R5, R2, R6
	CMP  $64, R6
	BLT  dwn4
	MOVD bias+48(FP), R7
	ADD  R5, R7, R7
	VLD1 (R7), [V0.S4, V1.S4, V2.S4, V3.S4]
	MOVD ins+8(FP), R8
	MOVD ws+16(FP), R9
	MOVD taps+24(FP), R10
	CBZ  R10, dwnst16

dwnt16:
	MOVD.P 8(R8), R11
	ADD    R3, R11, R11
	ADD    R5, R11, R11
	MOVD.P 8(R9), R12
	ADD    R5, R12, R12
	VLD1   (R11), [V4.S4, V5.S4, V6.S4, V7.S4]
	VLD1   (R12), [V16.S4, V17.S4, V18.S4, V19.S4]
	VFMLA  V16.S4, V4.S4, V0.S4
	VFMLA  V17.S4, V5.S4, V1.S4
	VFMLA  V18.S4, V6.S4, V2.S4
	VFMLA  V19.S4, V7.S4, V3.S4
	SUBS   $1, R10, R10
	BNE    dwnt16

dwnst16:
	WORD $0x4e20f7c0 // FMAX V0.4S, V30.4S, V0.4S
	WORD $0x4e21f7c1 // FMAX V1.4S, V30.4S, V1.4S
	WORD $0x4e22f7c2 // FMAX V2.4S, V30.4S, V2.4S
	WORD $0x4e23f7c3 // FMAX V3.4S, V30.4S, V3.4S
	WORD $0x4ea0f7e0 // FMIN V0.4S, V31.4S, V0.4S
	WORD $0x4ea1f7e1 // FMIN V1.4S, V31.4S, V1.4S
	WORD $0x4ea2f7e2 // FMIN V2.4S, V31.4S, V2.4S
	WORD $0x4ea3f7e3 // FMIN V3.4S, V31.4S, V3.4S
	ADD  R5, R1, R13
	VST1 [V0.S4, V1.S4, V2.S4, V3.S4], (R13)
	ADD  $64, R5, R5
	B    dwn16

dwn4:
	SUB  R5, R2, R6
	CMP  $16, R6
	BLT  dwnnext
	MOVD bias+48(FP), R7
	ADD  R5, R7, R7
	VLD1 (R7), [V0.S4]
	MOVD ins+8(FP), R8
	MOVD ws+16(FP), R9
	MOVD taps+24(FP), R10
	CBZ  R10, dwnst4

dwnt4:
	MOVD.P 8(R8), R11
	ADD    R3, R11, R11
	ADD    R5, R11, R11
	MOVD.P 8(R9), R12
	ADD    R5, R12, R12
	VLD1   (R11), [V4.S4]
	VLD1   (R12), [V16.S4]
	VFMLA  V16.S4, V4.S4, V0.S4
	SUBS   $1, R10, R10
	BNE    dwnt4

dwnst4:
	WORD $0x4e20f7c0 // FMAX V0.4S, V30.4S, V0.4S
	WORD $0x4ea0f7e0 // FMIN V0.4S, V31.4S, V0.4S
	ADD  R5, R1, R13
	VST1 [V0.S4], (R13)
	ADD  $16, R5, R5
	B    dwn4

dwnnext:
	MOVD step+32(FP), R14
	ADD  R14, R3, R3
	MOVD outStep+64(FP), R14
	ADD  R14, R1, R1
	SUBS $1, R0, R0
	BNE  dwnpixel

dwndone:
	RET
