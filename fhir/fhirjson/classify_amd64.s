//go:build !purego

#include "textflag.h"

// The constants of classify64, 32 bytes each (VPSHUFB looks up within
// each 16-byte lane, so its tables are written twice).
DATA quotes<>+0(SB)/8, $0x2222222222222222
DATA quotes<>+8(SB)/8, $0x2222222222222222
DATA quotes<>+16(SB)/8, $0x2222222222222222
DATA quotes<>+24(SB)/8, $0x2222222222222222
GLOBL quotes<>(SB), RODATA|NOPTR, $32

DATA backslashes<>+0(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA backslashes<>+8(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA backslashes<>+16(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA backslashes<>+24(SB)/8, $0x5c5c5c5c5c5c5c5c
GLOBL backslashes<>(SB), RODATA|NOPTR, $32

DATA controls<>+0(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA controls<>+8(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA controls<>+16(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA controls<>+24(SB)/8, $0x1f1f1f1f1f1f1f1f
GLOBL controls<>(SB), RODATA|NOPTR, $32

DATA bit5<>+0(SB)/8, $0x2020202020202020
DATA bit5<>+8(SB)/8, $0x2020202020202020
DATA bit5<>+16(SB)/8, $0x2020202020202020
DATA bit5<>+24(SB)/8, $0x2020202020202020
GLOBL bit5<>(SB), RODATA|NOPTR, $32

// spaces: indexed by a byte's low four bits, the whitespace byte with
// those low bits (' ' 0x20, '\t' 0x09, '\n' 0x0a, '\r' 0x0d), else 0xff
// (a byte equal to its entry is whitespace).
DATA spaces<>+0(SB)/8, $0xffffffffffffff20
DATA spaces<>+8(SB)/8, $0xffff0dffff0a09ff
DATA spaces<>+16(SB)/8, $0xffffffffffffff20
DATA spaces<>+24(SB)/8, $0xffff0dffff0a09ff
GLOBL spaces<>(SB), RODATA|NOPTR, $32

// ops: indexed by the low four bits of a byte with bit 5 set, the
// structural byte (also with bit 5 set) with those low bits: ':' 0x3a,
// '{' 0x7b (and '[' 0x5b), ',' 0x2c, '}' 0x7d (and ']' 0x5d), else 0
// (never equal: bit 5 is set in the bytes looked up).
DATA ops<>+0(SB)/8, $0x0000000000000000
DATA ops<>+8(SB)/8, $0x00007d2c7b3a0000
DATA ops<>+16(SB)/8, $0x0000000000000000
DATA ops<>+24(SB)/8, $0x00007d2c7b3a0000
GLOBL ops<>(SB), RODATA|NOPTR, $32

// func blockTokens(p *byte, st *blockState) uint64
//
// blockTokensGo in assembly: the 64 bytes at p classified with AVX2
// (compares, and VPSHUFB lookups for whitespace and structural bytes),
// then the escapes, strings and runs worked out with the state carried
// in st (the prefix XOR of the quotes is a carry-less multiplication).
TEXT ·blockTokens(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ st+8(FP), DI
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1

	// AX: quotes
	VMOVDQU quotes<>(SB), Y4
	VPCMPEQB Y4, Y0, Y2
	VPCMPEQB Y4, Y1, Y3
	VPMOVMSKB Y2, AX
	VPMOVMSKB Y3, R9
	SHLQ $32, R9
	ORQ R9, AX

	// BX: backslashes
	VMOVDQU backslashes<>(SB), Y4
	VPCMPEQB Y4, Y0, Y2
	VPCMPEQB Y4, Y1, Y3
	VPMOVMSKB Y2, BX
	VPMOVMSKB Y3, R9
	SHLQ $32, R9
	ORQ R9, BX

	// CX: structural bytes, ops[(b|0x20)&15] == b|0x20
	VMOVDQU bit5<>(SB), Y4
	VMOVDQU ops<>(SB), Y5
	VPOR Y4, Y0, Y6
	VPOR Y4, Y1, Y7
	VPSHUFB Y6, Y5, Y2
	VPSHUFB Y7, Y5, Y3
	VPCMPEQB Y6, Y2, Y2
	VPCMPEQB Y7, Y3, Y3
	VPMOVMSKB Y2, CX
	VPMOVMSKB Y3, R9
	SHLQ $32, R9
	ORQ R9, CX

	// DX: whitespace, spaces[b&15] == b (VPSHUFB gives 0 where b's
	// high bit is set)
	VMOVDQU spaces<>(SB), Y5
	VPSHUFB Y0, Y5, Y2
	VPSHUFB Y1, Y5, Y3
	VPCMPEQB Y0, Y2, Y2
	VPCMPEQB Y1, Y3, Y3
	VPMOVMSKB Y2, DX
	VPMOVMSKB Y3, R9
	SHLQ $32, R9
	ORQ R9, DX

	// R8: control characters, min(b, 0x1f) == b
	VMOVDQU controls<>(SB), Y4
	VPMINUB Y4, Y0, Y2
	VPMINUB Y4, Y1, Y3
	VPCMPEQB Y0, Y2, Y2
	VPCMPEQB Y1, Y3, Y3
	VPMOVMSKB Y2, R8
	VPMOVMSKB Y3, R9
	SHLQ $32, R9
	ORQ R9, R8
	VZEROUPPER

	// The escaped bytes (escapedBits), only where there are backslashes
	// or the block before ended with an escape.
	MOVQ BX, 24(DI)
	MOVQ 8(DI), R9
	MOVQ BX, R10
	ORQ R9, R10
	JZ strings
	MOVQ R9, R10
	NOTQ R10
	ANDQ R10, BX // backslash &^= carry
	MOVQ BX, R11
	SHLQ $1, R11
	ORQ R9, R11 // follows := backslash<<1 | carry
	MOVQ $0xaaaaaaaaaaaaaaaa, R12
	ANDQ BX, R12
	MOVQ R11, R10
	NOTQ R10
	ANDQ R10, R12 // oddStarts := backslash &^ evenBits &^ follows
	XORL R9, R9
	ADDQ BX, R12 // sum, carry = oddStarts + backslash
	ADCQ $0, R9
	MOVQ R9, 8(DI)
	SHLQ $1, R12
	MOVQ $0x5555555555555555, R10
	XORQ R10, R12
	ANDQ R11, R12 // escaped := (evenBits ^ sum<<1) & follows
	NOTQ R12
	ANDQ R12, AX // quote &^= escaped

strings:
	// R10: in := prefixXor(quote) ^ inString
	MOVQ AX, X0
	MOVQ $-1, R10
	MOVQ R10, X1
	PCLMULQDQ $0x00, X1, X0
	MOVQ X0, R10
	XORQ 0(DI), R10
	MOVQ R10, R11
	SARQ $63, R11
	MOVQ R11, 0(DI)
	ANDQ R10, R8
	MOVQ R8, 32(DI) // control & in

	// R11: other := ^(op | space | quote) &^ in
	MOVQ CX, R11
	ORQ DX, R11
	ORQ AX, R11
	ORQ R10, R11
	NOTQ R11
	// R12: starts := other &^ (other<<1 | otherLast)
	MOVQ R11, R12
	SHLQ $1, R12
	ORQ 16(DI), R12
	NOTQ R12
	ANDQ R11, R12
	SHRQ $63, R11
	MOVQ R11, 16(DI)

	// op &^ in | quote | starts
	NOTQ R10
	ANDQ R10, CX
	ORQ AX, CX
	ORQ R12, CX
	MOVQ CX, ret+16(FP)
	RET
