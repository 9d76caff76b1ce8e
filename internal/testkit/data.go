package testkit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// SyntheaCount is how many Synthea patient Bundles testdata/fhir/synthea
// holds (infant to elderly).
const SyntheaCount = 6

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// Root is the repository's root (the folder of go.mod), found from the
// working directory, which `go test` sets to the package's folder.
func Root(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		for err == nil {
			if _, statErr := os.Stat(filepath.Join(dir, "go.mod")); statErr == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				err = os.ErrNotExist
				break
			}
			dir = parent
		}
		rootErr = err
	})
	if rootErr != nil {
		t.Fatalf("finding the repository root (go.mod) above the working directory: %v", rootErr)
	}
	return rootDir
}

// FHIRPath is the path of rel under testdata/fhir.
func FHIRPath(t testing.TB, rel string) string {
	t.Helper()
	return filepath.Join(Root(t), "testdata", "fhir", filepath.FromSlash(rel))
}

// ReadFHIR reads rel under testdata/fhir.
func ReadFHIR(t testing.TB, rel string) []byte {
	t.Helper()
	return ReadFile(t, FHIRPath(t, rel))
}

// SyntheaPaths are the paths of the Synthea patient Bundles (transaction
// Bundles, one patient's whole history each), sorted.
func SyntheaPaths(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(FHIRPath(t, "synthea/*.json"))
	if err != nil || len(files) != SyntheaCount {
		t.Fatalf("the Synthea Bundles: %d files %v (%v), want %d", len(files), files, err, SyntheaCount)
	}
	return files
}

// Synthea reads the Synthea patient Bundles, by file name.
func Synthea(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range SyntheaPaths(t) {
		out[filepath.Base(f)] = ReadFile(t, f)
	}
	return out
}

// DecodeFHIR decodes a FHIR JSON object as the gateway does: numbers stay
// json.Number, so decimals keep their digits.
func DecodeFHIR(t testing.TB, data []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding FHIR JSON: %v", err)
	}
	return m
}

// MustJSON encodes v, failing t when it cannot.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// JSONString is MustJSON as a string.
func JSONString(t testing.TB, v any) string {
	t.Helper()
	return string(MustJSON(t, v))
}

// ReadFile reads path, failing t when it cannot.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
