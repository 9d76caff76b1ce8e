//go:build unix

package bulk

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockJob takes the job's run lock, held while one process (one Caddy
// config: a reload runs the old and the new side by side for a while)
// runs it. ok is false when another holder has it.
func lockJob(dir string) (unlock func(), ok bool) {
	f, err := os.OpenFile(filepath.Join(dir, "run.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
