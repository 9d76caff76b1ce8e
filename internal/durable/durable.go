// Package durable writes files so that what was written survives a crash
// (kill -9, power loss) once the call returns: the data is synced before it
// is published under its name, and the directory entry is synced after.
package durable

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SyncDir makes the entries of directory dir (files created, renamed or
// removed in it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFile replaces the file at path with what write writes, atomically
// and durably: write fills a new file (mode 0600) beside path, which is
// synced, renamed to path and its directory synced. Readers see the old
// file or the whole new one, never part of it. When write or any step
// fails, path is left as it was and the new file is removed.
func WriteFile(path string, write func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("publishing %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteBytes is WriteFile of data.
func WriteBytes(path string, data []byte) error {
	return WriteFile(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
