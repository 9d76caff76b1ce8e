//go:build !purego

package fhirjson

import "golang.org/x/sys/cpu"

// haveBlocks: this machine classifies 64 bytes at a time (AVX2, and
// PCLMULQDQ for the strings), so ScanValueNames walks objects and arrays
// from token to token (scanBlocks).
var haveBlocks = cpu.X86.HasAVX2 && cpu.X86.HasPCLMULQDQ

// blockTokens is blockTokensGo in assembly.
//
//go:noescape
func blockTokens(p *byte, st *blockState) uint64
