package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// syntheaBundle is a Synthea transaction Bundle read from testdata.
type syntheaBundle struct {
	name    string            // file name
	raw     []byte            // the file
	entries []json.RawMessage // Bundle.entry, encoded
	patient map[string]any    // its Patient, without id (for the record)
	counts  map[string]int    // entries by resourceType
}

// largestSynthea loads the largest Bundle in dir (Alda Carter's in the
// repository's testdata).
func largestSynthea(dir string) (*syntheaBundle, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no Synthea Bundles in %s (%v)", dir, err)
	}
	largest, size := "", int64(-1)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		if fi.Size() > size {
			largest, size = f, fi.Size()
		}
	}
	raw, err := os.ReadFile(largest)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", largest, err)
	}
	b, err := parseSynthea(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", largest, err)
	}
	b.name = filepath.Base(largest)
	return b, nil
}

// parseSynthea reads a transaction Bundle with exactly one Patient.
func parseSynthea(raw []byte) (*syntheaBundle, error) {
	var b struct {
		ResourceType string            `json:"resourceType"`
		Entry        []json.RawMessage `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("not a JSON Bundle: %w", err)
	}
	if b.ResourceType != "Bundle" || len(b.Entry) == 0 {
		return nil, errors.New("not a Bundle with entries")
	}
	out := &syntheaBundle{raw: raw, entries: b.Entry, counts: map[string]int{}}
	for i, e := range b.Entry {
		var entry struct {
			Resource map[string]any `json:"resource"`
		}
		if err := json.Unmarshal(e, &entry); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		typ, _ := entry.Resource["resourceType"].(string)
		if typ == "" {
			return nil, fmt.Errorf("entry %d has no resourceType", i)
		}
		out.counts[typ]++
		if typ == "Patient" {
			delete(entry.Resource, "id")
			out.patient = entry.Resource
		}
	}
	if out.counts["Patient"] != 1 {
		return nil, fmt.Errorf("%d Patients, want exactly one", out.counts["Patient"])
	}
	return out, nil
}

// uuidURN matches the urn:uuid names a transaction Bundle gives its
// entries and uses in its references.
var uuidURN = regexp.MustCompile(`urn:uuid:[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}`)

// isPatientEntry reports whether an encoded entry holds the Patient.
func isPatientEntry(e json.RawMessage) bool {
	var entry struct {
		Resource struct {
			ResourceType string `json:"resourceType"`
		} `json:"resource"`
	}
	return json.Unmarshal(e, &entry) == nil && entry.Resource.ResourceType == "Patient"
}

// fillEntries returns the encoded entries of src, in order, until they add
// up to at least size bytes. Past the end it starts over with a renamed
// copy of every entry but the Patient: each copy's urn:uuid names get a
// copy number in their first group, so entries stay unique while their
// references keep pointing into the same copy, and at the one Patient.
func fillEntries(src *syntheaBundle, size int) []json.RawMessage {
	patientURN := ""
	for _, e := range src.entries {
		if isPatientEntry(e) {
			var entry struct {
				FullURL string `json:"fullUrl"`
			}
			_ = json.Unmarshal(e, &entry) // parsed before
			patientURN = entry.FullURL
		}
	}
	var out []json.RawMessage
	total := 0
	for copyNo := 0; total < size; copyNo++ {
		for _, e := range src.entries {
			if total >= size {
				break
			}
			if copyNo > 0 {
				if isPatientEntry(e) {
					continue
				}
				e = uuidURN.ReplaceAllFunc(e, func(urn []byte) []byte {
					if string(urn) == patientURN {
						return urn
					}
					renamed := []byte(fmt.Sprintf("urn:uuid:%08x", copyNo))
					return append(renamed, urn[len("urn:uuid:")+8:]...)
				})
			}
			out = append(out, e)
			total += len(e) + 1
		}
	}
	return out
}

// bodyMaker makes distinct drop-off bodies with the same entries: only
// Bundle.identifier differs, so de-duplication (by the body's digest) never
// answers for the work.
type bodyMaker struct {
	head, tail []byte // the Bundle around the identifier's value
}

// newBodyMaker returns a maker of transaction Bundles of entries; nonce
// makes the identifiers of this run unlike any other's.
func newBodyMaker(entries []json.RawMessage, nonce string) *bodyMaker {
	head := []byte(`{"resourceType":"Bundle","type":"transaction","identifier":{"system":"urn:pfr:bench:dopu","value":"` + nonce + `-`)
	var tail bytes.Buffer
	tail.WriteString(`"},"entry":[`)
	for i, e := range entries {
		if i > 0 {
			tail.WriteByte(',')
		}
		tail.Write(e)
	}
	tail.WriteString("]}")
	return &bodyMaker{head: head, tail: tail.Bytes()}
}

// body returns the n-th Bundle.
func (m *bodyMaker) body(n int) []byte {
	seq := strconv.Itoa(n)
	out := make([]byte, 0, len(m.head)+len(seq)+len(m.tail))
	out = append(out, m.head...)
	out = append(out, seq...)
	return append(out, m.tail...)
}

// size is the length of a body (up to the sequence number's digits).
func (m *bodyMaker) size() int { return len(m.head) + len(m.tail) + 1 }
