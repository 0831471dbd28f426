#include "textflag.h"

// func fitsAVX2(p unsafe.Pointer, c *rangeChunk, n int) bool
//
// For each chunk: v = the 32 bytes at p+off; a byte fits when
// min(v-lo1, span1) == v-lo1 or min(v-lo2, span2) == v-lo2 (unsigned
// bytes, so v-lo wraps below lo). The fits of every chunk are ANDed and
// tested once at the end: most segments fit. Two chunks a turn (their
// loop count and pointer steps once for both), then the odd one.
TEXT ·fitsAVX2(SB), NOSPLIT, $0-25
	MOVQ p+0(FP), SI
	MOVQ c+8(FP), DI
	MOVQ n+16(FP), CX
	VPCMPEQB Y0, Y0, Y0
	SUBQ $2, CX
	JLT  odd

pair:
	MOVQ     0(DI), AX
	MOVQ     160(DI), BX
	VMOVDQU  (SI)(AX*1), Y1
	VMOVDQU  (SI)(BX*1), Y6
	VPSUBB   32(DI), Y1, Y2
	VPMINUB  64(DI), Y2, Y3
	VPCMPEQB Y2, Y3, Y3
	VPSUBB   96(DI), Y1, Y4
	VPMINUB  128(DI), Y4, Y5
	VPCMPEQB Y4, Y5, Y5
	VPOR     Y3, Y5, Y3
	VPAND    Y3, Y0, Y0
	VPSUBB   192(DI), Y6, Y2
	VPMINUB  224(DI), Y2, Y3
	VPCMPEQB Y2, Y3, Y3
	VPSUBB   256(DI), Y6, Y4
	VPMINUB  288(DI), Y4, Y5
	VPCMPEQB Y4, Y5, Y5
	VPOR     Y3, Y5, Y3
	VPAND    Y3, Y0, Y0
	ADDQ     $320, DI
	SUBQ     $2, CX
	JGE      pair

odd:
	// CX is -1 when one chunk is left, -2 when none.
	CMPQ     CX, $-1
	JNE      done
	MOVQ     0(DI), AX
	VMOVDQU  (SI)(AX*1), Y1
	VPSUBB   32(DI), Y1, Y2
	VPMINUB  64(DI), Y2, Y3
	VPCMPEQB Y2, Y3, Y3
	VPSUBB   96(DI), Y1, Y4
	VPMINUB  128(DI), Y4, Y5
	VPCMPEQB Y4, Y5, Y5
	VPOR     Y3, Y5, Y3
	VPAND    Y3, Y0, Y0

done:
	VPMOVMSKB Y0, AX
	VZEROUPPER
	CMPL      AX, $0xffffffff
	SETEQ     ret+24(FP)
	RET
