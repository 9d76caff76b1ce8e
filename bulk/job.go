// Package bulk is the FHIR Bulk Data Access engine of caddy-pfr: export
// jobs that read one record page by page through a Source (the gateway's
// own pipeline, so partitions, ownership and scope filters apply) into one
// NDJSON file per resource type, a consistent snapshot as of the job's
// transaction time; the job store that keeps them across restarts; their
// expiry. It knows nothing of HTTP routing or of Caddy.
package bulk

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/durable"
)

// Status is where a job stands.
type Status string

// Job statuses.
const (
	StatusInProgress Status = "in-progress"
	StatusComplete   Status = "complete"
	StatusFailed     Status = "failed"
)

// Level says what an export covers.
type Level string

// Export levels (Bulk Data Access 2.0).
const (
	// LevelSystem is [base]/$export: every resource of the record.
	LevelSystem Level = "system"
	// LevelPatient is [base]/Patient/$export: the resources of the
	// record's Patient compartment.
	LevelPatient Level = "patient"
)

// Output formats accepted in _outputFormat; the files are always
// application/fhir+ndjson.
var OutputFormats = []string{"application/fhir+ndjson", "application/ndjson", "ndjson"}

// Kind says what a job does.
type Kind string

// Job kinds.
const (
	KindExport Kind = "" // the default, for jobs stored before imports existed
	KindImport Kind = "import"
)

// Job is one export or import, as stored in its directory (job.json).
type Job struct {
	ID       string `json:"id"`
	Kind     Kind   `json:"kind,omitempty"`
	RecordID string `json:"recordId"`
	Slug     string `json:"slug"`
	// Base is the record's FHIR base URL as the client used it: where the
	// pages are read and the files are served.
	Base string `json:"base"`
	// Issuer and Subject identify who asked; only they read the status
	// and the files.
	Issuer  string   `json:"issuer"`
	Subject string   `json:"subject"`
	Scopes  []string `json:"scopes,omitempty"`
	// Request is the kick-off request URL (the manifest's request).
	Request string `json:"request"`
	Level   Level  `json:"level"`
	// Types are the resource types exported, in order.
	Types []string   `json:"types"`
	Since *time.Time `json:"since,omitempty"`
	// TransactionTime is the instant the export is a snapshot of.
	TransactionTime time.Time `json:"transactionTime"`
	Status          Status    `json:"status"`
	Created         time.Time `json:"created"`
	Finished        time.Time `json:"finished,omitzero"`
	// Expires is when the files are removed (set when the job ends).
	Expires time.Time `json:"expires,omitzero"`
	// Done lists the types finished, with their files (empty types have
	// none); a job resumed after a restart starts at the next type.
	Done []TypeResult `json:"done,omitempty"`
	// ErrorLines are the OperationOutcomes of the error file, written
	// with the manifest.
	ErrorLines []json.RawMessage `json:"errorLines,omitempty"`
	// Failure says why a failed job failed.
	Failure *Failure `json:"failure,omitempty"`
	// Resumed counts restarts of the job after the process died.
	Resumed int `json:"resumed,omitempty"`

	// Import: Format of the input file ("ndjson" or "bundle"), Force
	// (import although the Patient does not match) and, once complete,
	// the Result the Importer returned.
	Format string          `json:"format,omitempty"`
	Force  bool            `json:"force,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// An import written in chunks, each its own transaction: ImportChunks
	// counts the chunks committed (where each entry went is in the kept
	// file ImportChunkFile(k)); ImportPending lists the entries of the
	// chunk being written, whose commit a run interrupted before it
	// could record it looks for.
	ImportChunks  int   `json:"importChunks,omitempty"`
	ImportPending []int `json:"importPending,omitempty"`
	// ImportInput names the file the import reads when it is not the
	// upload (what a manifest's files held, fetched once and kept).
	ImportInput string `json:"importInput,omitempty"`
	// ImportUndo is set while a failed import takes out what its chunks
	// wrote: the failure the job ends with once they are gone.
	ImportUndo *Failure `json:"importUndo,omitempty"`
	// ImportLeft: what the failed import wrote could not all be taken out.
	ImportLeft bool `json:"importLeft,omitempty"`
}

// ImportChunkFile names the file of an import's chunk k (from 0): where
// its entries went.
func ImportChunkFile(k int) string { return fmt.Sprintf("chunk-%06d.json", k) }

// InputFile is the name of an import job's uploaded input.
const InputFile = "input"

// TypeResult is one finished type of an export.
type TypeResult struct {
	Type  string `json:"type"`
	Count int    `json:"count"`
	// File is the NDJSON file's name in the job directory; "" when the
	// type had nothing.
	File   string `json:"file,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
}

// Failure is why a job failed: the HTTP status its status URL answers and
// what went wrong.
type Failure struct {
	Status      int    `json:"status"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics"`
}

// ErrorFile is the name of the file holding a job's OperationOutcomes.
const ErrorFile = "errors.ndjson"

const jobFile = "job.json"

var jobIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidJobID reports whether id can name a job (and so a directory).
func ValidJobID(id string) bool { return jobIDRE.MatchString(id) }

// newJobID returns 128 random bits in hex: the job id is also a secret of
// the status URL (which still needs the caller's token).
func newJobID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// ErrNotFound is returned for a job that does not exist (or has expired).
var ErrNotFound = errors.New("bulk: no such job")

// fileStore keeps each job in its own directory under dir: job.json,
// written atomically (temporary file, fsync, rename, fsync of the
// directory), beside the job's NDJSON files. A job's directory appears
// whole (job.json and an import's input), renamed from a staging
// directory (stagingPrefix) where it was written.
type fileStore struct {
	dir string
	// stale is how old a staging directory is when list removes it: what
	// a crash left while a job was submitted.
	stale time.Duration
}

// stagingPrefix starts the names of the directories new jobs are written
// in before they appear under their id.
const stagingPrefix = ".new-"

// stagingStale is fileStore.stale: no submission takes that long.
const stagingStale = 24 * time.Hour

func (s fileStore) jobDir(id string) string { return filepath.Join(s.dir, id) }

func encodeJob(j *Job) ([]byte, error) {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bulk: encoding job: %w", err)
	}
	return data, nil
}

// create writes the new job j (and its input, when input is not nil) in a
// staging directory and renames it to the job's: list, which removes a
// job directory without job.json (what a crash left), never sees it half
// made.
func (s fileStore) create(j *Job, input func(path string) error) (err error) {
	data, err := encodeJob(j)
	if err != nil {
		return err
	}
	staging, err := os.MkdirTemp(s.dir, stagingPrefix+j.ID+"-")
	if err != nil {
		return fmt.Errorf("bulk: job directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(staging)
		}
	}()
	if input != nil {
		if err := input(filepath.Join(staging, InputFile)); err != nil {
			return err
		}
	}
	if err := durable.WriteBytes(filepath.Join(staging, jobFile), data); err != nil {
		return fmt.Errorf("bulk: saving job %s: %w", j.ID, err)
	}
	if err := os.Rename(staging, s.jobDir(j.ID)); err != nil {
		return fmt.Errorf("bulk: publishing job %s: %w", j.ID, err)
	}
	if err := durable.SyncDir(s.dir); err != nil {
		return fmt.Errorf("bulk: publishing job %s: %w", j.ID, err)
	}
	return nil
}

// update saves a job whose run lock this process holds; ErrNotFound when
// the job was removed (cancelled) meanwhile: its directory is not made
// again.
func (s fileStore) update(j *Job) error {
	data, err := encodeJob(j)
	if err != nil {
		return err
	}
	path := filepath.Join(s.jobDir(j.ID), jobFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	err = durable.WriteBytes(path, data)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound // the directory went meanwhile
	}
	if err != nil {
		return fmt.Errorf("bulk: saving job %s: %w", j.ID, err)
	}
	return nil
}

func (s fileStore) load(id string) (*Job, error) {
	if !ValidJobID(id) {
		return nil, ErrNotFound
	}
	data, err := os.ReadFile(filepath.Join(s.jobDir(id), jobFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("bulk: reading job %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("bulk: job %s is unreadable: %w", id, err)
	}
	return &j, nil
}

// list returns every stored job; unreadable ones are returned as errors
// beside the others.
func (s fileStore) list() ([]*Job, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var jobs []*Job
	var errs []error
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), stagingPrefix) {
			s.removeStale(filepath.Join(s.dir, e.Name()))
			continue
		}
		if !e.IsDir() || !ValidJobID(e.Name()) {
			continue
		}
		j, err := s.load(e.Name())
		switch {
		case errors.Is(err, ErrNotFound):
			// A directory without job.json: a job whose first save did
			// not complete, or one being removed.
			_ = os.RemoveAll(s.jobDir(e.Name()))
		case err != nil:
			errs = append(errs, err)
		default:
			jobs = append(jobs, j)
		}
	}
	return jobs, errs
}

// removeStale removes the staging directory dir when nothing in it changed
// for s.stale: a submission a crash interrupted.
func (s fileStore) removeStale(dir string) {
	entries, _ := os.ReadDir(dir)
	latest := time.Time{}
	if st, err := os.Stat(dir); err == nil {
		latest = st.ModTime()
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().After(latest) {
			latest = info.ModTime()
		}
	}
	if s.stale > 0 && !latest.IsZero() && time.Since(latest) > s.stale {
		_ = os.RemoveAll(dir)
	}
}

// remove deletes a job and its files: job.json first, so that a crash
// half-way leaves a directory list() cleans up, never a job without files.
func (s fileStore) remove(id string) error {
	if !ValidJobID(id) {
		return ErrNotFound
	}
	dir := s.jobDir(id)
	if err := os.Remove(filepath.Join(dir, jobFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.RemoveAll(dir)
}
