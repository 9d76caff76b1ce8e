package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/bulk"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// DefaultImportChunk is how many resources an import writes per
// transaction (BulkConfig.ImportChunk).
const DefaultImportChunk = 250

// maxImportLine bounds one resource of an import (a line of NDJSON, an
// entry of a Bundle).
const maxImportLine = 64 << 20

// importSource is an import's input read once from its file, entry by
// entry: where each entry lies in the file and what planning needs of it
// (dopu.Facts: ids and references), never the resources themselves. The
// entries are read again, one chunk at a time, when they are written.
type importSource struct {
	path       string
	ndjson     bool // an entry is a resource (a line) rather than a Bundle entry
	bundleType string
	spans      []span
	facts      []dopu.Facts
}

// span is where one entry lies in the input file.
type span struct {
	off int64
	n   int
}

// scanImport reads an import's input file (NDJSON, or a Bundle streamed
// entry by entry) through the strict JSON door: every entry is checked
// (fhirjson) and described (dopu.Facts); a bad line or entry refuses the
// whole import, naming it.
func scanImport(path string, ndjson bool) (*importSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import input: %w", err)
	}
	defer f.Close()
	src := &importSource{path: path, ndjson: ndjson, bundleType: "collection"}
	if ndjson {
		err = src.scanNDJSON(f)
	} else {
		err = src.scanBundle(f)
	}
	if err != nil {
		return nil, err
	}
	if len(src.spans) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "the import holds no resources")
	}
	return src, nil
}

// scanNDJSON reads one resource a line; empty lines are skipped.
func (src *importSource) scanNDJSON(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var off int64
	for line := 1; ; line++ {
		raw, err := readLine(br, maxImportLine)
		if err != nil && err != io.EOF {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "line %d: %v", line, err)
		}
		start := off
		off += int64(len(raw))
		lead := len(raw) - len(bytes.TrimLeft(raw, " \t\r\n"))
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) > 0 {
			if ferr := src.add(trimmed, span{off: start + int64(lead), n: len(trimmed)}, fmt.Sprintf("line %d", line)); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// errLineTooLong refuses a line over maxImportLine.
var errLineTooLong = fmt.Errorf("longer than %d bytes", maxImportLine)

// readLine reads up to and including the next newline, at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		part, err := br.ReadSlice('\n')
		if len(buf)+len(part) > max {
			return nil, errLineTooLong
		}
		buf = append(buf, part...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

// scanBundle streams a Bundle: its type and each entry, without holding
// more than one entry. Every member of the Bundle passes the strict door.
func (src *importSource) scanBundle(r io.Reader) error {
	notJSON := func(err error) error {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the import is not JSON: %v", err)
	}
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil {
		return notJSON(err)
	} else if tok != json.Delim('{') {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "the import must be a Bundle, NDJSON, or {\"manifest\": url}")
	}
	seen := map[string]bool{}
	resourceType := ""
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return notJSON(err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid JSON body, not valid JSON for FHIR: Bundle: the member %q is repeated", key)
		}
		seen[key] = true
		if key == "entry" {
			if err := src.scanEntries(dec); err != nil {
				return err
			}
			continue
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return notJSON(err)
		}
		if err := fhirjson.Check(raw); err != nil {
			fe := fhir.JSONError(err)
			fe.Issues[0].Diagnostics = fmt.Sprintf("Bundle.%s: %s", key, fe.Issues[0].Diagnostics)
			return fe
		}
		switch key {
		case "resourceType":
			_ = json.Unmarshal(raw, &resourceType)
		case "type":
			_ = json.Unmarshal(raw, &src.bundleType)
		}
	}
	if _, err := dec.Token(); err != nil {
		return notJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid JSON body, not valid JSON for FHIR: data after the Bundle")
	}
	if resourceType != "Bundle" {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "the import must be a Bundle, NDJSON, or {\"manifest\": url}")
	}
	return nil
}

// scanEntries reads the Bundle's entry array, one entry at a time.
func (src *importSource) scanEntries(dec *json.Decoder) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "Bundle.entry is not an array")
	}
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "Bundle.entry[%d]: %v", i, err)
		}
		if len(raw) > maxImportLine {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "Bundle.entry[%d]: %v", i, errLineTooLong)
		}
		end := dec.InputOffset()
		if err := src.add(raw, span{off: end - int64(len(raw)), n: len(raw)}, fmt.Sprintf("Bundle.entry[%d]", i)); err != nil {
			return err
		}
	}
	_, err := dec.Token() // ]
	return err
}

// add checks and describes one entry.
func (src *importSource) add(raw []byte, sp span, where string) error {
	e, err := dopu.DecodeEntry(raw, src.ndjson)
	if err != nil {
		fe := fhir.JSONError(err)
		fe.Issues[0].Diagnostics = fmt.Sprintf("%s: %s", where, fe.Issues[0].Diagnostics)
		return fe
	}
	if res := e.Resource(); src.ndjson || res != nil {
		if typ, _ := res["resourceType"].(string); !fhir.IsResourceType(typ) {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "%s is not a FHIR resource", where)
		}
	}
	src.spans = append(src.spans, sp)
	src.facts = append(src.facts, e.Facts())
	return nil
}

// entry reads entry i again from the file, decoded (numbers as
// json.Number).
func (src *importSource) entry(f *os.File, i int) (dopu.Entry, error) {
	sp := src.spans[i]
	raw := make([]byte, sp.n)
	if _, err := f.ReadAt(raw, sp.off); err != nil {
		return dopu.Entry{}, fmt.Errorf("import input: reading entry %d: %w", i, err)
	}
	return dopu.DecodeEntry(raw, src.ndjson)
}

// importChunks orders the entries to write (todo) into chunks of about
// size entries, each chunk one transaction, so that every entry comes in
// a chunk after, or in the same one as, every entry it references
// (targets). Entries that reference each other in a cycle (a Condition's
// encounter and that Encounter's reasonReference) are one strongly
// connected component and always share a chunk, which may then hold more
// than size. It keeps only ids: Tarjan's algorithm, iterative, emits each
// component after every component it references.
func importChunks(n int, todo []int, targets func(int) []int, size int) [][]int {
	index := make([]int32, n)
	low := make([]int32, n)
	state := make([]uint8, n) // 1: to do, 2: on the stack
	for i := range index {
		index[i] = -1
	}
	for _, i := range todo {
		state[i] = 1
	}
	var stack []int
	var chunks [][]int
	var cur []int
	emit := func(comp []int) {
		slices.Sort(comp)
		if len(cur) > 0 && len(cur)+len(comp) > size {
			chunks = append(chunks, cur)
			cur = nil
		}
		cur = append(cur, comp...)
	}
	type frame struct {
		v     int
		edges []int
		k     int
	}
	next := int32(0)
	visit := func(v int) frame {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		state[v] = 2
		return frame{v: v, edges: targets(v)}
	}
	for _, root := range todo {
		if index[root] >= 0 {
			continue
		}
		calls := []frame{visit(root)}
		for len(calls) > 0 {
			top := &calls[len(calls)-1]
			if top.k < len(top.edges) {
				w := top.edges[top.k]
				top.k++
				switch {
				case w < 0 || w >= n || state[w] == 0:
					// Written already, or not written at all.
				case index[w] < 0:
					calls = append(calls, visit(w))
				case state[w] == 2:
					low[top.v] = min(low[top.v], index[w])
				}
				continue
			}
			v := top.v
			calls = calls[:len(calls)-1]
			if len(calls) > 0 {
				p := calls[len(calls)-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] == index[v] {
				var comp []int
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					state[w] = 3
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				emit(comp)
			}
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// chunkRecord is the kept file of one committed chunk: its entries and
// where each went ("Type/id"): the map from the input's entries to the
// record's resources that later chunks, and a resumed run, reference.
type chunkRecord struct {
	Entries   []int    `json:"entries"`
	Locations []string `json:"locations"`
}

// loadChunks reads where the committed chunks' entries went.
func loadChunks(job *bulk.Job, run *bulk.ImportRun) (map[int]string, [][]int, error) {
	done := map[int]string{}
	var order [][]int
	for k := range job.ImportChunks {
		path, err := run.Path(bulk.ImportChunkFile(k))
		if err != nil {
			return nil, nil, err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		var c chunkRecord
		if err := json.Unmarshal(raw, &c); err != nil || len(c.Entries) != len(c.Locations) {
			return nil, nil, fmt.Errorf("import: the record of chunk %d is unreadable: %v", k, err)
		}
		for j, e := range c.Entries {
			done[e] = c.Locations[j]
		}
		order = append(order, c.Entries)
	}
	return done, order, nil
}

// notTagged wraps a record search so that it never sees what this import
// wrote (its tag): a resumed run decides every entry as the first run did,
// before any of its chunks was written.
func notTagged(search dopu.Search, tag string) dopu.Search {
	return func(typ string, params url.Values) ([]map[string]any, error) {
		found, err := search(typ, params)
		kept := found[:0]
		for _, res := range found {
			if !hasTag(res, dopu.TagSystem, tag) {
				kept = append(kept, res)
			}
		}
		return kept, err
	}
}

// hasTag reports whether res carries meta.tag system|code.
func hasTag(res map[string]any, system, code string) bool {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	for _, t := range tags {
		if m, _ := t.(map[string]any); m != nil && m["system"] == system && m["code"] == code {
			return true
		}
	}
	return false
}

// findWritten looks in the record for the resources a chunk of entries
// wrote, by each entry's content digest (its ContentTagSystem tag) among
// the resources carrying the import's tag, leaving out those already
// known (done): it tells whether a chunk whose answer was lost committed,
// and where its entries went. Entries of equal content are told apart by
// nothing else: they get the matches in turn.
func (g *Gateway) findWritten(rq *request, src *importSource, tag string, entries []int, done map[int]string) (map[int]string, error) {
	known := map[string]bool{}
	for _, loc := range done {
		known[loc] = true
	}
	byType := map[string]map[string][]int{} // type → digest → entries
	for _, i := range entries {
		f := src.facts[i]
		if f.Content() == "" {
			continue
		}
		if byType[f.Type()] == nil {
			byType[f.Type()] = map[string][]int{}
		}
		byType[f.Type()][f.Content()] = append(byType[f.Type()][f.Content()], i)
	}
	found := map[int]string{}
	const group = 25
	for typ, digests := range byType {
		keys := make([]string, 0, len(digests))
		for d := range digests {
			keys = append(keys, d)
		}
		slices.Sort(keys)
		for start := 0; start < len(keys); start += group {
			var tokens []string
			for _, d := range keys[start:min(start+group, len(keys))] {
				tokens = append(tokens, dopu.ContentTagSystem+"|"+d)
			}
			res, _, err := g.searchRecord(rq, typ, url.Values{"_tag": {strings.Join(tokens, ",")}}, maxCountPages)
			if err != nil {
				return nil, err
			}
			ids := map[string][]string{} // digest → "Type/id"
			for _, r := range res {
				id, _ := r["id"].(string)
				loc := typ + "/" + id
				if !fhir.IsID(id) || known[loc] || !hasTag(r, dopu.TagSystem, tag) {
					continue
				}
				for _, d := range keys[start:min(start+group, len(keys))] {
					if hasTag(r, dopu.ContentTagSystem, d) {
						ids[d] = append(ids[d], loc)
					}
				}
			}
			for d, locs := range ids {
				slices.Sort(locs)
				for k, i := range digests[d] {
					if k < len(locs) {
						found[i] = locs[k]
					}
				}
			}
		}
	}
	return found, nil
}
