//go:build !unix

package bulk

import "sync"

var runLocks sync.Map

// lockJob takes the job's run lock within this process (without flock,
// two processes sharing a directory could both run a job).
func lockJob(dir string) (unlock func(), ok bool) {
	if _, taken := runLocks.LoadOrStore(dir, true); taken {
		return nil, false
	}
	return func() { runLocks.Delete(dir) }, true
}
