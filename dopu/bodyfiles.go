package dopu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/pfrgateway/caddy-pfr/internal/durable"
)

// FileBodyMin is the size from which a drop-off's body is kept in a file of
// its own beside the bbolt database instead of inside it (the store on
// PostgreSQL keeps every body in the database). For a 2 MB Bundle the file
// is written and synced while the body is checked, so the 202 waits for a
// small bbolt commit instead of a 2 MB one (which also grew and re-mapped
// the database file and wrote the body into fresh pages); small bodies are
// cheaper inside bbolt.
const FileBodyMin = 256 << 10

// bodyFiles keeps bodies of at least FileBodyMin bytes as files named by
// their drop-off id in dir. A body file is staged (written, synced, its
// directory synced) before the transaction that creates the drop-off
// commits a reference to it (fileRef) in the bodies bucket; so a drop-off
// acknowledged with a 202 has its body on disk whatever happens after. A
// file whose reference never committed, or whose drop-off left pending
// (its reference deleted, the file removed after the commit), may be left
// behind by a crash; sweep removes them when the store opens.
type bodyFiles struct {
	dir string
}

// stagedBodies holds the paths of body files that intakes of this process
// have staged and not yet committed or discarded: sweep leaves them alone
// (Services of several configurations share one database across a reload).
var stagedBodies sync.Map

// fileRef is what the bodies bucket holds for a body kept in a file: a
// zero byte (no JSON body starts with one) and the body's size.
func fileRef(size int) []byte { return append([]byte{0}, "file "+strconv.Itoa(size)...) }

// parseFileRef returns the size a bodies bucket value refers to, and
// whether it is a reference at all (else it is the body itself).
func parseFileRef(v []byte) (size int, ok bool) {
	rest, found := bytes.CutPrefix(v, []byte("\x00file "))
	if !found {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest))
	if err != nil || n < 0 {
		return -1, true // a reference, but not one this code wrote
	}
	return n, true
}

// openBodyFiles returns the body files beside the bbolt file at dbPath,
// creating their directory (durably) if needed.
func openBodyFiles(dbPath string) (*bodyFiles, error) {
	dir := dbPath + ".dropoffs"
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("dopu: creating %s: %w", dir, err)
		}
		if err := durable.SyncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("dopu: creating %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("dopu: %w", err)
	}
	return &bodyFiles{dir: dir}, nil
}

// path is the file of drop-off id; ids are base64url (newID), so they are
// file names as they are.
func (f *bodyFiles) path(id string) (string, error) {
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("dopu: drop-off id %q cannot name a file", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("dopu: drop-off id %q cannot name a file", id)
		}
	}
	return filepath.Join(f.dir, id), nil
}

// stage writes body as the file of drop-off id and makes it durable. Call
// done once the transaction that was to refer to it has ended, with kept
// telling whether it committed a reference; if not, the file is removed.
func (f *bodyFiles) stage(id string, body []byte) (done func(kept bool), err error) {
	path, err := f.path(id)
	if err != nil {
		return nil, err
	}
	stagedBodies.Store(path, struct{}{}) // before the file exists: sweep must never see it unstaged
	done = func(kept bool) {
		if !kept {
			_ = os.Remove(path)
		}
		stagedBodies.Delete(path)
	}
	if err := writeSynced(path, body); err != nil {
		done(false)
		return nil, fmt.Errorf("dopu: storing a drop-off's body: %w", err)
	}
	if err := durable.SyncDir(f.dir); err != nil {
		done(false)
		return nil, fmt.Errorf("dopu: storing a drop-off's body: %w", err)
	}
	return done, nil
}

// staged reports whether the file of id was staged by this process with
// size bytes and is there.
func (f *bodyFiles) staged(id string, size int) bool {
	path, err := f.path(id)
	if err != nil {
		return false
	}
	if _, ok := stagedBodies.Load(path); !ok {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == int64(size)
}

// read returns the body of id, which must have size bytes.
func (f *bodyFiles) read(id string, size int) ([]byte, error) {
	path, err := f.path(id)
	if err != nil {
		return nil, err
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dopu: reading the body of drop-off %s: %w", id, err)
	}
	if len(body) != size {
		return nil, fmt.Errorf("dopu: the body of drop-off %s has %d bytes, not %d", id, len(body), size)
	}
	return body, nil
}

// remove removes the files of ids (their references are gone).
func (f *bodyFiles) remove(ids []string) {
	for _, id := range ids {
		if path, err := f.path(id); err == nil {
			_ = os.Remove(path)
		}
	}
}

// sweep removes the files that no reference in the bodies bucket names
// and no intake of this process has staged: what a crash left behind.
func (f *bodyFiles) sweep(referenced func(id string) bool) error {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return fmt.Errorf("dopu: listing %s: %w", f.dir, err)
	}
	for _, e := range entries {
		path := filepath.Join(f.dir, e.Name())
		if _, ok := stagedBodies.Load(path); ok {
			continue
		}
		if !referenced(e.Name()) {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("dopu: removing %s: %w", path, err)
			}
		}
	}
	return nil
}

// writeSynced writes data as a new file at path and syncs it, then lets
// the page cache drop it.
func writeSynced(path string, data []byte) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := file.Write(data); err != nil {
		file.Close()
		return err
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return err
	}
	dropCached(file)
	return file.Close()
}
