package bulk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/durable"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// jobStore keeps jobs and their files. fileStore keeps them in the node's
// directory (one node); sharedStore in the cluster's shared state, so that
// any node answers a job's status URL and serves its files, and another
// node finishes a job whose node died.
type jobStore interface {
	// create stores a new job. When input is not nil, it writes the
	// job's input (InputFile) at the path it is given, synced: the job
	// is stored with its input, never seen without it.
	create(j *Job, input func(path string) error) error
	// update saves a job this process claimed (see claim): it fails with
	// errLeaseLost once the claim is not this process's any more, with
	// ErrNotFound when the job was removed (cancelled).
	update(j *Job) error
	load(id string) (*Job, error)
	list() ([]*Job, []error)
	remove(id string) error
	// workDir is the node's working directory of a job: the files being
	// written, an import's input while it runs.
	workDir(id string) string
	// claim takes the right to run a job: on one node a lock (a reload
	// runs two configs side by side), in a cluster a lease in the shared
	// state, renewed while the job runs. takeover is true when the lease
	// was another node's that had expired (that node died or stalled).
	// lost is closed when the lease was lost (the job must stop). Each
	// renewal also records what progress says, for the other nodes.
	claim(id string, progress func() Progress) (release func(), lost <-chan struct{}, takeover bool, ok bool)
	// progress is what the node running a job last said of it (a
	// cluster's other nodes see it with the lease); false when unknown.
	progress(id string) (Progress, bool)
	// keep makes a finished file of the job's working directory
	// available wherever the job is read.
	keep(id, name string) error
	// open opens a kept file.
	open(id, name string) (io.ReadSeekCloser, error)
	// fetch puts a kept file into the job's working directory (an
	// import's input on the node that runs it).
	fetch(id, name string) error
	// discard removes a file that is not needed any more (an import's
	// input once the import is done).
	discard(id, name string)
	// ended is told that a run of the job ended on this node, however
	// (finished, failed, cancelled, stopped, its lease lost): what only
	// this node's working directory held can go.
	ended(id string)
}

var (
	_ jobStore = fileStore{}
	_ jobStore = (*sharedStore)(nil)
)

// fileStore's jobStore methods beyond save, load, list and remove.

func (s fileStore) workDir(id string) string { return s.jobDir(id) }

func (s fileStore) claim(id string, _ func() Progress) (func(), <-chan struct{}, bool, bool) {
	unlock, ok := lockJob(s.jobDir(id))
	return unlock, nil, false, ok
}

func (s fileStore) progress(string) (Progress, bool) { return Progress{}, false }

func (s fileStore) keep(string, string) error { return nil }

func (s fileStore) open(id, name string) (io.ReadSeekCloser, error) {
	f, err := os.Open(filepath.Join(s.jobDir(id), name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

func (s fileStore) discard(id, name string) { _ = os.Remove(filepath.Join(s.jobDir(id), name)) }

func (s fileStore) ended(string) {}

func (s fileStore) fetch(id, name string) error {
	if _, err := os.Stat(filepath.Join(s.jobDir(id), name)); err != nil {
		return fmt.Errorf("bulk: job %s: %w", id, err)
	}
	return nil
}

// Buckets of the shared state.
var (
	bucketJobs   = []byte("bulk_jobs")   // job id → Job (JSON)
	bucketFiles  = []byte("bulk_files")  // job id/name/chunk (8 bytes, big endian) → bytes
	bucketLeases = []byte("bulk_leases") // job id → lease (JSON)
)

// chunkSize is the size of one stored piece of a file: what a download
// holds in memory at a time.
const chunkSize = 1 << 20

// lease says which node runs a job, until when, and how far it was at
// its last renewal.
type lease struct {
	Node     string    `json:"node"`
	Until    time.Time `json:"until"`
	Progress *Progress `json:"progress,omitempty"`
}

// sharedStore keeps jobs, their files (in chunks) and the leases of the
// running ones in a kv.DB every node of a cluster shares (PostgreSQL).
type sharedStore struct {
	db       kv.DB
	dir      string // this node's working directories
	node     string
	leaseTTL time.Duration
}

// kvOwner names this package in the shared state's errors.
const kvOwner = "bulk"

func newSharedStore(db kv.DB, dir, node string, leaseTTL time.Duration) (*sharedStore, error) {
	if err := db.CreateBuckets([][]byte{bucketJobs, bucketFiles, bucketLeases}); err != nil {
		return nil, fmt.Errorf("bulk: %w", err)
	}
	if node == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("bulk: %w", err)
		}
		host, _ := os.Hostname()
		node = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return &sharedStore{db: db, dir: dir, node: node, leaseTTL: leaseTTL}, nil
}

func (s *sharedStore) workDir(id string) string { return filepath.Join(s.dir, id) }

// errLeaseLost refuses a save by a node whose lease is gone: another node
// took it (this node stalled past it) and may have finished the job.
var errLeaseLost = errors.New("bulk: another node runs this job now")

// create keeps the job's input in the shared state (from this node's
// working directory, where the node that runs it finds it too), then
// stores the job.
func (s *sharedStore) create(j *Job, input func(path string) error) error {
	if input != nil {
		if err := os.MkdirAll(s.workDir(j.ID), 0o700); err != nil {
			return fmt.Errorf("bulk: job directory: %w", err)
		}
		if err := input(filepath.Join(s.workDir(j.ID), InputFile)); err != nil {
			return err
		}
		if err := s.keep(j.ID, InputFile); err != nil {
			return err
		}
	}
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("bulk: encoding job: %w", err)
	}
	return s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), data)
	})
}

// update stores j when the job is still there and this node holds its
// lease (lapsed or not, as long as no other node took it).
func (s *sharedStore) update(j *Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("bulk: encoding job: %w", err)
	}
	return s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
		if tx.Bucket(bucketJobs).Get([]byte(j.ID)) == nil {
			return ErrNotFound
		}
		if l, ok := readLease(tx, j.ID); !ok || l.Node != s.node {
			return errLeaseLost
		}
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), data)
	})
}

func (s *sharedStore) load(id string) (*Job, error) {
	if !ValidJobID(id) {
		return nil, ErrNotFound
	}
	var j *Job
	err := s.db.View(context.Background(), kvOwner, func(tx kv.Tx) error {
		raw := tx.Bucket(bucketJobs).Get([]byte(id))
		if raw == nil {
			return ErrNotFound
		}
		j = new(Job)
		if err := json.Unmarshal(raw, j); err != nil {
			return fmt.Errorf("bulk: job %s is unreadable: %w", id, err)
		}
		return nil
	})
	return j, err
}

func (s *sharedStore) list() ([]*Job, []error) {
	var jobs []*Job
	var errs []error
	err := s.db.View(context.Background(), kvOwner, func(tx kv.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			j := new(Job)
			if err := json.Unmarshal(v, j); err != nil {
				errs = append(errs, fmt.Errorf("bulk: job %s is unreadable: %w", k, err))
				return nil
			}
			jobs = append(jobs, j)
			return nil
		})
	})
	if err != nil {
		errs = append(errs, err)
	}
	return jobs, errs
}

// remove deletes a job, its files and its lease, in one transaction, and
// this node's working directory of it.
func (s *sharedStore) remove(id string) error {
	if !ValidJobID(id) {
		return ErrNotFound
	}
	err := s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
		if err := deletePrefix(tx.Bucket(bucketFiles), []byte(id+"/")); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLeases).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketJobs).Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	return os.RemoveAll(s.workDir(id))
}

func readLease(tx kv.Tx, id string) (lease, bool) {
	raw := tx.Bucket(bucketLeases).Get([]byte(id))
	if raw == nil {
		return lease{}, false
	}
	var l lease
	if json.Unmarshal(raw, &l) != nil {
		return lease{}, false
	}
	return l, true
}

// claim takes (or renews) the job's lease: free, expired, or this node's
// own. A goroutine renews it every third of its time until release; a
// renewal that finds another node's lease closes lost.
func (s *sharedStore) claim(id string, progress func() Progress) (func(), <-chan struct{}, bool, bool) {
	takeover := false
	take := func(first bool) error {
		var p *Progress
		if progress != nil && !first { // the first claim is made under the manager's lock
			cur := progress()
			p = &cur
		}
		return s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
			l, ok := readLease(tx, id)
			if ok && l.Node != s.node && time.Now().Before(l.Until) {
				return errLeaseLost
			}
			if first {
				takeover = ok && l.Node != s.node
			} else if !ok {
				return errLeaseLost // removed: the job was cancelled
			}
			raw, _ := json.Marshal(lease{Node: s.node, Until: time.Now().Add(s.leaseTTL), Progress: p})
			return tx.Bucket(bucketLeases).Put([]byte(id), raw)
		})
	}
	if err := take(true); err != nil {
		return nil, nil, false, false
	}
	lost := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.leaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := take(false); errors.Is(err, errLeaseLost) {
					close(lost)
					return
				}
			}
		}
	}()
	release := func() {
		close(stop)
		<-done
		_ = s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
			if l, ok := readLease(tx, id); ok && l.Node == s.node {
				return tx.Bucket(bucketLeases).Delete([]byte(id))
			}
			return nil
		})
	}
	return release, lost, takeover, true
}

// progress reads the progress a live lease holds.
func (s *sharedStore) progress(id string) (Progress, bool) {
	var p Progress
	found := false
	_ = s.db.View(context.Background(), kvOwner, func(tx kv.Tx) error {
		if l, ok := readLease(tx, id); ok && l.Progress != nil && time.Now().Before(l.Until) {
			p, found = *l.Progress, true
		}
		return nil
	})
	return p, found
}

func chunkKey(id, name string, i uint64) []byte {
	k := []byte(id + "/" + name + "/")
	return binary.BigEndian.AppendUint64(k, i)
}

// keep copies a file of the job's working directory into the shared
// state, chunk by chunk (a few chunks per transaction), replacing what an
// earlier, interrupted copy left.
func (s *sharedStore) keep(id, name string) error {
	f, err := os.Open(filepath.Join(s.workDir(id), name))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.drop(id, name); err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	for i := uint64(0); ; i++ {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if uerr := s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
				return tx.Bucket(bucketFiles).Put(chunkKey(id, name, i), buf[:n])
			}); uerr != nil {
				return uerr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *sharedStore) discard(id, name string) {
	_ = s.drop(id, name)
	_ = os.Remove(filepath.Join(s.workDir(id), name))
}

// ended removes this node's working directory of the job: its files are
// in the shared state.
func (s *sharedStore) ended(id string) { _ = os.RemoveAll(s.workDir(id)) }

// drop removes the chunks of one file.
func (s *sharedStore) drop(id, name string) error {
	return s.db.Update(context.Background(), kvOwner, func(tx kv.Tx) error {
		return deletePrefix(tx.Bucket(bucketFiles), []byte(id+"/"+name+"/"))
	})
}

// deletePrefix deletes the keys of b that start with prefix.
func deletePrefix(b kv.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// open returns a reader of a kept file that reads one chunk at a time.
func (s *sharedStore) open(id, name string) (io.ReadSeekCloser, error) {
	r := &chunkReader{s: s, id: id, name: name}
	err := s.db.View(context.Background(), kvOwner, func(tx kv.Tx) error {
		prefix := []byte(id + "/" + name + "/")
		c := tx.Bucket(bucketFiles).Cursor()
		var last []byte
		var lastLen int
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			last, lastLen = append(last[:0], k...), len(v)
		}
		if last == nil {
			return ErrNotFound
		}
		r.size = int64(binary.BigEndian.Uint64(last[len(prefix):]))*chunkSize + int64(lastLen)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// fetch writes a kept file into the job's working directory, unless it is
// there already (the node that received it).
func (s *sharedStore) fetch(id, name string) error {
	path := filepath.Join(s.workDir(id), name)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	r, err := s.open(id, name)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := os.MkdirAll(s.workDir(id), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(path, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// chunkReader reads a kept file from the shared state.
type chunkReader struct {
	s        *sharedStore
	id, name string
	size     int64
	off      int64
	chunk    []byte // the chunk numbered chunkNo, when loaded
	chunkNo  int64
	loaded   bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	no := r.off / chunkSize
	if !r.loaded || no != r.chunkNo {
		var got []byte
		err := r.s.db.View(context.Background(), kvOwner, func(tx kv.Tx) error {
			v := tx.Bucket(bucketFiles).Get(chunkKey(r.id, r.name, uint64(no)))
			if v == nil {
				return fmt.Errorf("bulk: %s of job %s lacks a piece (removed meanwhile?)", r.name, r.id)
			}
			got = append([]byte(nil), v...)
			return nil
		})
		if err != nil {
			return 0, err
		}
		r.chunk, r.chunkNo, r.loaded = got, no, true
	}
	n := copy(p, r.chunk[r.off-no*chunkSize:])
	r.off += int64(n)
	return n, nil
}

func (r *chunkReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("bulk: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("bulk: negative position")
	}
	r.off = offset
	return offset, nil
}

func (r *chunkReader) Close() error { return nil }
