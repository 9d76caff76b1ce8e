//go:build !amd64 || purego

package fhirjson

import "unsafe"

// haveBlocks: without a vector classifier the byte loop is faster than
// scanBlocks with blockTokensGo, so ScanValueNames keeps to it.
const haveBlocks = false

func blockTokens(p *byte, st *blockState) uint64 {
	return blockTokensGo((*[64]byte)(unsafe.Pointer(p)), st)
}
