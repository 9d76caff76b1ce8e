package dopu

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCached tells the kernel that the synced file's pages need not stay
// in the page cache: a pending body is read once, maybe days later, at
// preview or pick-up. Without it every large drop-off adds its size to the
// page cache, and writing the next one allocates fresh memory (measured:
// several times the CPU of reusing freed pages, on the virtual machine
// the benchmarks run on). Only advice; an error changes nothing.
func dropCached(f *os.File) { _ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }
