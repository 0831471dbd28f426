#include "textflag.h"

DATA quadConst<>+0(SB)/8, $0x2e2e2e2e2e2e2e2e
DATA quadConst<>+8(SB)/8, $0x2e2e2e2e2e2e2e2e
DATA quadConst<>+16(SB)/8, $0x2222222222222222
DATA quadConst<>+24(SB)/8, $0x2222222222222222
DATA quadConst<>+32(SB)/8, $0x3030303030303030
DATA quadConst<>+40(SB)/8, $0x3030303030303030
DATA quadConst<>+48(SB)/8, $0x0909090909090909
DATA quadConst<>+56(SB)/8, $0x0909090909090909
GLOBL quadConst<>(SB), RODATA|NOPTR, $64

// func quadMasks(p unsafe.Pointer) uint64
//
// Byte compares with '.', '"' and '0', and the digits as the bytes whose
// difference from '0' is at most 9 (unsigned: min(v-'0', 9) == v-'0').
// The constants are loaded unaligned into registers: SSE2's memory
// operands must be 16-byte aligned.
TEXT ·quadMasks(SB), NOSPLIT, $0-16
	MOVQ     p+0(FP), SI
	MOVOU    (SI), X0
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
	PSUBB    X3, X0
	MOVOU    quadConst<>+48(SB), X5
	PMINUB   X0, X5
	PCMPEQB  X0, X5
	PMOVMSKB X5, BX
	SHLQ     $32, BX
	ORQ      BX, AX
	MOVQ     AX, ret+8(FP)
	RET
