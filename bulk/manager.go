package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/durable"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Options configures a Manager.
type Options struct {
	// Dir holds one directory per job. Required.
	Dir string
	// Source reads the records. Required.
	Source Source
	// Importer writes import jobs. Nil: imports are refused.
	Importer Importer
	// TTL is how long a finished job's files stay. Default 24h.
	TTL time.Duration
	// PageSize is the _count of every read. Default 250.
	PageSize int
	// Workers is how many jobs run at once. Default 2.
	Workers int
	// MaxActivePerRecord bounds the unfinished jobs of one record; more
	// are refused (429). Default 4.
	MaxActivePerRecord int
	// Settle is how long after the transaction time reading starts, so
	// that writes under way at that instant have committed. Default 1s.
	Settle time.Duration
	// Retries is how often a transient failure of one read is retried.
	// Default 5, with pauses from RetryPause doubling. Default pause 1s.
	Retries    int
	RetryPause time.Duration
	// Logger gets the jobs' failures. Default: no-op.
	Logger *zap.Logger

	// Shared, when set, is the state every node of a cluster shares
	// (PostgreSQL): jobs, their files and the leases of running jobs are
	// kept there, so that any node answers a job's status URL and serves
	// its files, and a job whose node died is finished by another once
	// its lease expired. Dir then holds only this node's working files.
	// Nil: everything is in Dir (one node).
	Shared kv.DB
	// Node names this node in the leases. Default: host, process id and
	// a random part.
	Node string
	// LeaseTTL is how long a running job's lease lasts unless renewed
	// (every third of it). Default 30s.
	LeaseTTL time.Duration
	// SweepEvery is how often jobs are looked through: expired ones
	// removed, unfinished ones that run nowhere resumed. Default 1m, or
	// half the lease with Shared.
	SweepEvery time.Duration
}

// Importer writes an import job's input (the file at run.Input) into its
// record, telling run.Progress what it is doing; the result is kept as
// the job's Result. It must be safe to run again after an interruption:
// what it records in the job's Import fields (run.Save) and in its kept
// files (run.Keep) is what the next run finds.
type Importer interface {
	Import(ctx context.Context, job *Job, run *ImportRun) (json.RawMessage, error)
}

// ImportRun is what an Importer is given to run one job.
type ImportRun struct {
	// Input is the path of the job's input (the upload).
	Input string
	// Dir is the job's working directory.
	Dir string
	// Progress says what the import is doing.
	Progress func(Progress)
	// Save stores the job durably (the importer changes its Import
	// fields). It fails once the job was cancelled or, in a cluster,
	// taken over by another node: the importer must then stop.
	Save func() error
	// Keep writes data to the file name in Dir durably (atomically) and
	// keeps it with the job (in a cluster, in the shared state); data nil
	// keeps the file name the importer wrote itself (synced).
	Keep func(name string, data []byte) error
	// Path is where a kept file is in Dir, fetched from the shared state
	// when this node does not have it; an error wrapping ErrNotFound when
	// there is none.
	Path func(name string) (string, error)
}

// Progress is what a running job has done so far.
type Progress struct {
	// Phase says what an import is doing.
	Phase string
	// TypeIndex is the position of Type in the job's types (from 0).
	TypeIndex int
	Type      string
	// Written counts the resources written so far, in all types.
	Written int
}

// Manager runs export jobs and keeps them in its directory.
type Manager struct {
	opts  Options
	store jobStore
	log   *zap.Logger
	queue chan string

	mu       sync.Mutex
	running  map[string]context.CancelFunc
	progress map[string]Progress
	queued   map[string]bool
	// left holds the jobs the first sweep found unfinished (an earlier
	// process left them): runJob counts them resumed once it holds their
	// claim and finds them still unfinished.
	left map[string]bool
}

// NewManager checks o and returns a Manager; jobs run once Run is called.
func NewManager(o Options) (*Manager, error) {
	if o.Dir == "" || o.Source == nil {
		return nil, errors.New("bulk: a directory and a source are required")
	}
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	if o.PageSize <= 0 {
		o.PageSize = 250
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.MaxActivePerRecord <= 0 {
		o.MaxActivePerRecord = 4
	}
	if o.Settle < 0 {
		o.Settle = 0
	} else if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.RetryPause <= 0 {
		o.RetryPause = time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
		if o.Shared != nil {
			o.SweepEvery = o.LeaseTTL / 2
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("bulk: %w", err)
	}
	var store jobStore = fileStore{dir: o.Dir, stale: stagingStale}
	if o.Shared != nil {
		shared, err := newSharedStore(o.Shared, o.Dir, o.Node, o.LeaseTTL)
		if err != nil {
			return nil, err
		}
		store = shared
	}
	return &Manager{
		opts: o, store: store, log: o.Logger, queue: make(chan string, 4096),
		running: map[string]context.CancelFunc{}, progress: map[string]Progress{}, queued: map[string]bool{},
		left: map[string]bool{},
	}, nil
}

// TTL is how long finished jobs are kept.
func (m *Manager) TTL() time.Duration { return m.opts.TTL }

// ErrTooMany is returned by Submit when the record has too many
// unfinished jobs.
var ErrTooMany = errors.New("bulk: too many unfinished exports of this record")

// Submit stores a new job (its id, transaction time and status are set
// here) and queues it. The job is durable when Submit returns.
func (m *Manager) Submit(j *Job) (*Job, error) {
	jobs, _ := m.store.list()
	active := 0
	for _, o := range jobs {
		if o.RecordID == j.RecordID && o.Status == StatusInProgress {
			active++
		}
	}
	if active >= m.opts.MaxActivePerRecord {
		return nil, ErrTooMany
	}
	id, err := newJobID()
	if err != nil {
		return nil, fmt.Errorf("bulk: %w", err)
	}
	now := time.Now()
	j.ID, j.Status, j.Created = id, StatusInProgress, now
	j.TransactionTime = now.Truncate(time.Millisecond)
	if err := m.store.create(j, nil); err != nil {
		return nil, err
	}
	m.enqueue(id)
	return j, nil
}

// SubmitImport stores a new import job with its input (read to the end,
// at most maxBytes) and queues it; both are durable when it returns.
func (m *Manager) SubmitImport(j *Job, input io.Reader, maxBytes int64) (*Job, error) {
	if m.opts.Importer == nil {
		return nil, errors.New("bulk: imports are not enabled")
	}
	id, err := newJobID()
	if err != nil {
		return nil, fmt.Errorf("bulk: %w", err)
	}
	now := time.Now()
	j.ID, j.Kind, j.Status, j.Created, j.TransactionTime = id, KindImport, StatusInProgress, now, now.Truncate(time.Millisecond)
	// The job appears with its whole input: a directory with an input
	// and no job is what a crash left, and a sweep removes it.
	err = m.store.create(j, func(path string) error {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(f, io.LimitReader(input, maxBytes+1))
		if err == nil && n > maxBytes {
			err = ErrInputTooLarge
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		_ = m.store.remove(id)
		return nil, err
	}
	m.enqueue(id)
	return j, nil
}

// ErrInputTooLarge is returned by SubmitImport for an input over the limit.
var ErrInputTooLarge = errors.New("bulk: the import is larger than allowed")

func (m *Manager) enqueue(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.queued[id] {
		return
	}
	select {
	case m.queue <- id:
		m.queued[id] = true
	default:
		// Full: the job stays in progress on disk and is picked up by
		// the next sweep.
	}
}

// Job returns a stored job and, while it runs, its progress. An expired
// job is removed and reported as not found.
func (m *Manager) Job(id string) (*Job, Progress, error) {
	j, err := m.store.load(id)
	if err != nil {
		return nil, Progress{}, err
	}
	if j.Status != StatusInProgress && !j.Expires.IsZero() && time.Now().After(j.Expires) {
		_ = m.remove(id)
		return nil, Progress{}, ErrNotFound
	}
	m.mu.Lock()
	p, here := m.progress[id]
	m.mu.Unlock()
	if !here && j.Status == StatusInProgress {
		// Running on another node of a cluster: what its lease says.
		p, _ = m.store.progress(id)
	}
	return j, p, nil
}

// Cancel stops a job if it runs and removes it with its files.
func (m *Manager) Cancel(id string) error {
	if _, err := m.store.load(id); err != nil {
		return err
	}
	return m.remove(id)
}

func (m *Manager) remove(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cancel, ok := m.running[id]; ok {
		cancel()
		delete(m.running, id)
	}
	delete(m.progress, id)
	return m.store.remove(id)
}

// Open opens a finished job's file by name (a type's NDJSON file or the
// error file).
func (m *Manager) Open(j *Job, name string) (io.ReadSeekCloser, error) {
	if j.Status != StatusComplete {
		return nil, ErrNotFound
	}
	ok := name == ErrorFile && len(j.ErrorLines) > 0
	for _, d := range j.Done {
		ok = ok || d.File != "" && d.File == name
	}
	if !ok {
		return nil, ErrNotFound
	}
	return m.store.open(j.ID, name)
}

// Run works the queue with Options.Workers workers until ctx ends: jobs
// left in progress by an earlier process (it died or stopped) are resumed
// first; finished jobs are removed once they expire.
func (m *Manager) Run(ctx context.Context) error {
	m.sweep(true)
	var wg sync.WaitGroup
	for range m.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-m.queue:
					m.mu.Lock()
					delete(m.queued, id)
					m.mu.Unlock()
					m.runJob(ctx, id)
				}
			}
		}()
	}
	tick := time.NewTicker(m.opts.SweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			m.sweep(false)
		}
	}
}

// sweep removes expired jobs and queues unfinished ones that are not
// running (at start: all of them, which an earlier process left).
func (m *Manager) sweep(start bool) {
	jobs, errs := m.store.list()
	for _, err := range errs {
		m.log.Error("unreadable bulk job", zap.Error(err))
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return a.Created.Compare(b.Created) })
	for _, j := range jobs {
		switch {
		case j.Status != StatusInProgress && !j.Expires.IsZero() && time.Now().After(j.Expires):
			if err := m.remove(j.ID); err != nil {
				m.log.Warn("removing an expired bulk job", zap.String("job", j.ID), zap.Error(err))
			}
		case j.Status == StatusInProgress:
			m.mu.Lock()
			_, running := m.running[j.ID]
			m.mu.Unlock()
			if !running {
				// What was read here may be stale by now (another
				// Manager on the directory, an older config, may have
				// finished the job): runJob decides, holding the claim.
				// In a cluster the job may run on another node: runJob
				// counts a takeover once it holds the lease.
				if _, shared := m.store.(*sharedStore); start && !shared {
					m.mu.Lock()
					m.left[j.ID] = true
					m.mu.Unlock()
				}
				m.enqueue(j.ID)
			}
		}
	}
}

// runJob runs one job to its end, saving after every type, so that a job
// interrupted anywhere resumes at the type it was writing.
//
// Whether the job is to run is read once its claim is held: until then
// another Manager (an older config on the same directory, another node of
// a cluster) may run it, and finish it.
func (m *Manager) runJob(parent context.Context, id string) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	m.mu.Lock()
	if _, dup := m.running[id]; dup {
		m.mu.Unlock()
		return
	}
	release, lost, takeover, ok := m.store.claim(id, func() Progress {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.progress[id]
	})
	if !ok {
		m.mu.Unlock()
		return // another process (an older config, another node) runs it
	}
	defer release()
	j, err := m.store.load(id)
	left := m.left[id]
	delete(m.left, id)
	if err != nil || j.Status != StatusInProgress {
		m.mu.Unlock()
		if err != nil && !errors.Is(err, ErrNotFound) {
			m.log.Error("loading a bulk job", zap.String("job", id), zap.Error(err))
		}
		return // finished (by another process) or removed meanwhile
	}
	m.running[id] = cancel
	m.mu.Unlock()
	if lost != nil {
		go func() {
			select {
			case <-lost: // another node took the job over: stop
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	defer func() {
		m.mu.Lock()
		delete(m.running, id)
		delete(m.progress, id)
		m.mu.Unlock()
		// Whatever ended the run here (the job finished, failed or was
		// cancelled, the process stops, another node took the lease),
		// what only this node's working directory holds goes: the next
		// run, here or elsewhere, starts from what the store keeps.
		m.store.ended(id)
	}()
	// save writes the job unless it was cancelled meanwhile or, in a
	// cluster, this node lost its lease.
	save := func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.running[id]; !ok || ctx.Err() != nil {
			return context.Canceled
		}
		err := m.store.update(j)
		if errors.Is(err, ErrNotFound) {
			return context.Canceled // cancelled by another process
		}
		return err
	}
	dir := m.store.workDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.fail(j, err, save)
		return
	}
	if takeover || left {
		if takeover {
			m.log.Info("resuming a bulk job whose node stopped", zap.String("job", id), zap.String("record", j.RecordID))
		} else {
			m.log.Info("resuming a bulk export left unfinished", zap.String("job", id), zap.String("record", j.RecordID))
		}
		j.Resumed++
		if err := save(); err != nil {
			return
		}
	}
	// What an interrupted run left half-written goes.
	parts, _ := filepath.Glob(filepath.Join(dir, "*.part"))
	for _, p := range parts {
		_ = os.Remove(p)
	}
	if j.Kind == KindImport {
		m.runImport(ctx, j, dir, save)
		return
	}
	if wait := time.Until(j.TransactionTime.Add(m.opts.Settle)); wait > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	written := 0
	for _, d := range j.Done {
		written += d.Count
	}
	e := &exporter{src: m.opts.Source, job: j, dir: dir, pageSize: m.opts.PageSize,
		retries: m.opts.Retries, backoff: m.opts.RetryPause}
	for i := len(j.Done); i < len(j.Types); i++ {
		typ := j.Types[i]
		m.setProgress(id, Progress{TypeIndex: i, Type: typ, Written: written})
		e.progress = func(n int) { m.setProgress(id, Progress{TypeIndex: i, Type: typ, Written: written + n}) }
		res, err := e.exportType(ctx, typ)
		if ctx.Err() != nil {
			return // cancelled, or the process stops: resumed later
		}
		if err != nil {
			m.fail(j, err, save)
			return
		}
		if res.File != "" {
			if err := m.store.keep(id, res.File); err != nil {
				m.fail(j, err, save)
				return
			}
		}
		written += res.Count
		j.Done = append(j.Done, res)
		if err := save(); err != nil {
			if !errors.Is(err, context.Canceled) {
				m.log.Error("saving a bulk job", zap.String("job", id), zap.Error(err))
			}
			return
		}
	}
	if len(j.ErrorLines) > 0 {
		var buf []byte
		for _, l := range j.ErrorLines {
			buf = append(append(buf, l...), '\n')
		}
		err := durable.WriteBytes(filepath.Join(dir, ErrorFile), buf)
		if err == nil {
			err = m.store.keep(id, ErrorFile)
		}
		if err != nil {
			m.fail(j, err, save)
			return
		}
	}
	j.Status, j.Finished = StatusComplete, time.Now()
	j.Expires = j.Finished.Add(m.opts.TTL)
	if err := save(); err != nil && !errors.Is(err, context.Canceled) {
		m.log.Error("saving a bulk job", zap.String("job", id), zap.Error(err))
	}
}

// runImport runs an import job through the Importer.
func (m *Manager) runImport(ctx context.Context, j *Job, dir string, save func() error) {
	if err := m.store.fetch(j.ID, InputFile); err != nil {
		m.fail(j, err, save)
		return
	}
	run := &ImportRun{
		Input: filepath.Join(dir, InputFile), Dir: dir,
		Progress: func(p Progress) { m.setProgress(j.ID, p) },
		Save:     save,
		Keep: func(name string, data []byte) error {
			if data != nil {
				if err := durable.WriteBytes(filepath.Join(dir, name), data); err != nil {
					return err
				}
			}
			return m.store.keep(j.ID, name)
		},
		Path: func(name string) (string, error) {
			err := m.store.fetch(j.ID, name)
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrNotFound) {
				return "", fmt.Errorf("bulk: job %s has no file %s: %w", j.ID, name, ErrNotFound)
			}
			if err != nil {
				return "", err
			}
			return filepath.Join(dir, name), nil
		},
	}
	res, err := m.opts.Importer.Import(ctx, j, run)
	if ctx.Err() != nil {
		return // cancelled, or the process stops: resumed later
	}
	if err != nil {
		m.fail(j, err, save)
		return
	}
	j.Result = res
	j.Status, j.Finished = StatusComplete, time.Now()
	j.Expires = j.Finished.Add(m.opts.TTL)
	if err := save(); err != nil {
		if !errors.Is(err, context.Canceled) {
			m.log.Error("saving a bulk job", zap.String("job", j.ID), zap.Error(err))
		}
		return
	}
	// The input is not needed any more.
	m.store.discard(j.ID, InputFile)
}

// fail ends j as failed, keeping why for its status URL.
func (m *Manager) fail(j *Job, err error, save func() error) {
	var fatal fatalError
	var ferr *fhir.Error
	fe := fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeException, "the job could not be completed: %v", err)
	if errors.As(err, &fatal) {
		fe = fatal.fe
	} else if errors.As(err, &ferr) {
		fe = ferr
	} else if _, full := fhir.StorageFull(err); full {
		fe = fhir.Errorf(http.StatusInsufficientStorage, fhir.CodeException, "the job could not be completed: the disk is full")
	}
	m.log.Warn("bulk job failed", zap.String("job", j.ID), zap.String("record", j.RecordID), zap.Error(err))
	issue := fe.Issues[0]
	j.Status, j.Finished = StatusFailed, time.Now()
	j.Expires = j.Finished.Add(m.opts.TTL)
	j.Failure = &Failure{Status: fe.Status, Code: issue.Code, Diagnostics: issue.Diagnostics}
	if err := save(); err != nil {
		if !errors.Is(err, context.Canceled) {
			m.log.Error("saving a failed bulk job", zap.String("job", j.ID), zap.Error(err))
		}
	}
}

func (m *Manager) setProgress(id string, p Progress) {
	m.mu.Lock()
	m.progress[id] = p
	m.mu.Unlock()
}
