//go:build !linux

package dopu

import "os"

// dropCached is only advice, given on Linux (see bodyfiles_linux.go).
func dropCached(*os.File) {}
