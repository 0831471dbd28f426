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

// func quadLeaf(b *[17]byte, zero int) int
//
// quadLeafGo's rules, step for step (quad.go). The masks: byte compares
// with '.', '"', '0', '2' and '5', and the ranges '0'-'9', '3'-'9' and
// '6'-'9' as the bytes whose difference from the range's first is at most
// its span (unsigned: min(v-lo, span) == v-lo). The constants are loaded
// unaligned into registers: SSE2's memory operands must be 16-byte
// aligned. Registers: R9 dots, R11 digits, R12 zeros, R13 the digits of
// fields above 255, BX the body, CX its length, DI what is wrong.
TEXT ·quadLeaf(SB), NOSPLIT, $0-24
	MOVQ $0, ret+16(FP)
	MOVQ b+0(FP), SI
	CMPB (SI), $0x22
	JNE  done
	MOVOU 1(SI), X0

	// Fields above 255 start with '3'-'9', or with '2' then '6'-'9', or
	// with "25" then '6'-'9': ge3 | two & (ge6>>1 | five>>1 & ge6>>2).
	MOVOU    X0, X1
	MOVOU    quadConst<>+96(SB), X2
	PSUBB    X2, X1
	MOVOU    quadConst<>+112(SB), X2
	PMINUB   X1, X2
	PCMPEQB  X1, X2
	PMOVMSKB X2, R13
	MOVOU    X0, X1
	MOVOU    quadConst<>+128(SB), X2
	PSUBB    X2, X1
	MOVOU    quadConst<>+144(SB), X2
	PMINUB   X1, X2
	PCMPEQB  X1, X2
	PMOVMSKB X2, AX
	MOVOU    quadConst<>+64(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, BX
	MOVOU    quadConst<>+80(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, DX
	MOVL     AX, CX
	SHRL     $2, CX
	SHRL     $1, DX
	ANDL     CX, DX
	SHRL     $1, AX
	ORL      DX, AX
	ANDL     BX, AX
	ORL      AX, R13

	// Dots, quotes, zeros and digits.
	MOVOU    quadConst<>+0(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, R9
	MOVOU    quadConst<>+16(SB), X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, R10
	MOVOU    quadConst<>+32(SB), X2
	MOVOU    X2, X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, R12
	PSUBB    X2, X0
	MOVOU    quadConst<>+48(SB), X1
	PMINUB   X0, X1
	PCMPEQB  X0, X1
	PMOVMSKB X1, R11

	// The body runs to the first quote: CX bytes, mask BX.
	ORL  $0x10000, R10
	BSFL R10, CX
	MOVL $1, BX
	SHLL CX, BX
	DECL BX
	ANDL BX, R9
	ANDL BX, R11

	// A byte that is neither digit nor dot.
	MOVL R9, DI
	ORL  R11, DI
	XORL BX, DI

	// Three dots: two cleared leave exactly one.
	MOVL  R9, AX
	LEAL  -1(AX), DX
	ANDL  DX, AX
	LEAL  -1(AX), DX
	ANDL  DX, AX
	TESTL AX, AX
	JEQ   done
	LEAL  -1(AX), DX
	TESTL DX, AX
	JNE   done

	// None first, last (the body's top bit) or after another.
	MOVL BX, DX
	SHRL $1, DX
	XORL BX, DX
	ORL  $1, DX
	MOVL R9, AX
	SHRL $1, AX
	ORL  AX, DX
	ANDL R9, DX
	ORL  DX, DI

	// No four digits in a row.
	MOVL R11, AX
	SHRL $1, AX
	ANDL R11, AX
	MOVL AX, DX
	SHRL $2, DX
	ANDL DX, AX
	ORL  AX, DI

	// The fields' starts (AX); a '0' that starts a field ends it; a
	// field of three digits is at most 255.
	LEAL (R9)(R9*1), AX
	ORL  $1, AX
	ANDL BX, AX
	MOVL R11, DX
	SHRL $1, DX
	MOVL R12, R10
	ANDL AX, R10
	ANDL DX, R10
	ORL  R10, DI
	MOVL R11, R10
	SHRL $2, R10
	ANDL DX, R10
	ANDL AX, R10
	ANDL R13, R10
	ORL  R10, DI

	// The last zero fields start with '0': the starts but their first
	// 4-zero; with one (ip_truncate to 24 bits, the usual), the last.
	MOVQ zero+8(FP), DX
	CMPQ DX, $1
	JNE  some
	MOVL CX, SI
	BSRL AX, CX
	MOVL $1, AX
	SHLL CX, AX
	MOVL SI, CX
	JMP  needed

some:
	NEGQ DX
	ADDQ $4, DX

need:
	TESTQ DX, DX
	JLE   needed
	LEAL  -1(AX), R10
	ANDL  R10, AX
	DECQ  DX
	JMP   need

needed:
	NOTL  R12
	ANDL  R12, AX
	ORL   AX, DI
	TESTL DI, DI
	JNE   done
	ADDQ  $2, CX
	MOVQ  CX, ret+16(FP)

done:
	RET
