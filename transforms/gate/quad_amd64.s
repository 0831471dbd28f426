#include "textflag.h"

DATA quadConst<>+0(SB)/8, $0x2e2e2e2e2e2e2e2e
DATA quadConst<>+8(SB)/8, $0x2e2e2e2e2e2e2e2e
DATA quadConst<>+16(SB)/8, $0x2222222222222222
DATA quadConst<>+24(SB)/8, $0x2222222222222222
DATA quadConst<>+32(SB)/8, $0x3030303030303030
DATA quadConst<>+40(SB)/8, $0x3030303030303030
DATA quadConst<>+48(SB)/8, $0x0909090909090909
DATA quadConst<>+56(SB)/8, $0x0909090909090909
DATA quadConst<>+64(SB)/8, $0x3232323232323232
DATA quadConst<>+72(SB)/8, $0x3232323232323232
DATA quadConst<>+80(SB)/8, $0x3535353535353535
DATA quadConst<>+88(SB)/8, $0x3535353535353535
DATA quadConst<>+96(SB)/8, $0x3333333333333333
DATA quadConst<>+104(SB)/8, $0x3333333333333333
DATA quadConst<>+112(SB)/8, $0x0606060606060606
DATA quadConst<>+120(SB)/8, $0x0606060606060606
DATA quadConst<>+128(SB)/8, $0x3636363636363636
DATA quadConst<>+136(SB)/8, $0x3636363636363636
DATA quadConst<>+144(SB)/8, $0x0303030303030303
DATA quadConst<>+152(SB)/8, $0x0303030303030303
GLOBL quadConst<>(SB), RODATA|NOPTR, $160

// func quadMasks(p unsafe.Pointer) (lo, hi uint64)
//
// Byte compares with '.', '"', '0', '2' and '5', and the byte ranges
// '0'-'9', '3'-'9' and '6'-'9' as the bytes whose difference from the
// range's first is at most its span (unsigned: min(v-lo, span) == v-lo).
// The constants are loaded unaligned into registers: SSE2's memory
// operands must be 16-byte aligned.
TEXT ·quadMasks(SB), NOSPLIT, $0-24
	MOVQ     p+0(FP), SI
	MOVOU    (SI), X0

	// lo: dots, quotes, digits, zeros
	MOVOU    quadConst<>+0(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, AX
	MOVOU    quadConst<>+16(SB), X2
	PCMPEQB  X0, X2
	PMOVMSKB X2, BX
	SHLQ     $16, BX
	ORQ      BX, AX
	MOVOU    quadConst<>+32(SB), X3
	MOVOU    X3, X4
	PCMPEQB  X0, X4
	PMOVMSKB X4, BX
	SHLQ     $48, BX
	ORQ      BX, AX
	MOVOU    X0, X6
	PSUBB    X3, X6
	MOVOU    quadConst<>+48(SB), X5
	PMINUB   X6, X5
	PCMPEQB  X6, X5
	PMOVMSKB X5, BX
	SHLQ     $32, BX
	ORQ      BX, AX
	MOVQ     AX, lo+8(FP)

	// hi: '3'-'9', '2', '6'-'9', '5'
	MOVOU    X0, X6
	MOVOU    quadConst<>+96(SB), X7
	PSUBB    X7, X6
	MOVOU    quadConst<>+112(SB), X5
	PMINUB   X6, X5
	PCMPEQB  X6, X5
	PMOVMSKB X5, CX
	MOVOU    quadConst<>+64(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, BX
	SHLQ     $16, BX
	ORQ      BX, CX
	MOVOU    X0, X6
	MOVOU    quadConst<>+128(SB), X7
	PSUBB    X7, X6
	MOVOU    quadConst<>+144(SB), X5
	PMINUB   X6, X5
	PCMPEQB  X6, X5
	PMOVMSKB X5, BX
	SHLQ     $32, BX
	ORQ      BX, CX
	MOVOU    quadConst<>+80(SB), X2
	PCMPEQB  X0, X2
	PMOVMSKB X2, BX
	SHLQ     $48, BX
	ORQ      BX, CX
	MOVQ     CX, hi+16(FP)
	RET
