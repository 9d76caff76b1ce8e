package fhirjson

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestBlockTokensMatchesGo: the assembly finds the tokens and carries
// the state blockTokensGo does: every byte value at every position of a
// block, from every state a block can start in, and runs of random
// blocks (bytes drawn from what the classes turn on).
func TestBlockTokensMatchesGo(t *testing.T) {
	var b [64]byte
	check := func(st blockState) blockState {
		t.Helper()
		got, want := st, st
		gt := blockTokens(&b[0], &got)
		wt := blockTokensGo(&b, &want)
		if gt != wt || got != want {
			t.Fatalf("block %q from %+v: tokens %064b, state %+v; want %064b, %+v", b[:], st, gt, got, wt, want)
		}
		return got
	}
	starts := []blockState{{}, {inString: ^uint64(0)}, {escaped: 1}, {otherLast: 1}, {inString: ^uint64(0), escaped: 1}}
	for c := range 256 {
		for k := range b {
			for j := range b {
				b[j] = 'a'
			}
			b[k] = byte(c)
			for _, st := range starts {
				check(st)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	special := []byte("\"\\ \t\n\r,:[]{}\x00\x0c\x1a\x1f\x7f\x80\xff;<=>;zZ09+-.e")
	for range 20000 {
		var st blockState
		for range 1 + rng.IntN(8) {
			for k := range b {
				if rng.IntN(2) == 0 {
					b[k] = special[rng.IntN(len(special))]
				} else {
					b[k] = byte(rng.IntN(256))
				}
			}
			st = check(st)
		}
	}
}

// TestEscapedBitsMatchesByteRule: across blocks, the bytes escapedBits
// flags are those after an odd run of backslashes, as a byte loop finds
// them.
func TestEscapedBitsMatchesByteRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		const blocksN = 4
		var bs [blocksN]uint64
		density := rng.IntN(64) + 1
		for k := range blocksN * 64 {
			if rng.IntN(64) < density {
				bs[k/64] |= 1 << (k % 64)
			}
		}
		var want [blocksN]uint64
		escape := false
		for k := range blocksN * 64 {
			if escape {
				want[k/64] |= 1 << (k % 64)
				escape = false
			} else if bs[k/64]&(1<<(k%64)) != 0 {
				escape = true
			}
		}
		var carry uint64
		for blk := range blocksN {
			if got := escapedBits(bs[blk], &carry); got != want[blk] {
				t.Fatalf("backslashes %064b (block %d of %x): escaped %064b, want %064b", bs[blk], blk, bs, got, want[blk])
			}
		}
	}
}

// names records what a scanner tells its visitor.
type names []string

func (n *names) Name(depth int, name []byte, at int) {
	*n = append(*n, fmt.Sprintf("%d %s %d", depth, name, at))
}

// checkBlocks: where scanBlocks answers, scanBytes agrees (the length and
// every call to the visitor); and for a whole, valid object or array
// scanBlocks answers (it is the fast way for every document a server
// sends, not for some).
func checkBlocks(t *testing.T, data []byte) {
	t.Helper()
	var got, want names
	n, ok := scanBlocks(data, &got)
	wn, werr := scanBytes(data, &want)
	if ok && (werr != nil || n != wn || !reflect.DeepEqual(got, want)) {
		t.Fatalf("%q: scanBlocks %d, names %q; scanBytes %d %v, names %q", clip(data), n, got, wn, werr, want)
	}
	i := skipSpace(data, 0)
	if !ok && werr == nil && i < len(data) && (data[i] == '{' || data[i] == '[') {
		t.Fatalf("%q: scanBlocks leaves a valid value (%d bytes) to the byte loop", clip(data), wn)
	}
}

func clip(data []byte) []byte {
	if len(data) > 300 {
		return append(data[:150:150], append([]byte(" … "), data[len(data)-150:]...)...)
	}
	return data
}

// corpus returns the repository's FHIR test documents: vendors' IPS
// documents, Synthea records, the specification's examples.
func corpus(t testing.TB) [][]byte {
	t.Helper()
	var docs [][]byte
	err := filepath.WalkDir("../../testdata/fhir", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		data, err := os.ReadFile(path)
		docs = append(docs, data)
		return err
	})
	if err != nil || len(docs) < 20 {
		t.Fatalf("the test documents: %d, %v", len(docs), err)
	}
	return docs
}

// TestScanBlocksOnDocuments: every test document, whole, shifted against
// the blocks and followed by more JSON, and each of its Bundle entries
// as the filter scans them (the rest of the Bundle after each).
func TestScanBlocksOnDocuments(t *testing.T) {
	for _, doc := range corpus(t) {
		for shift := range 3 {
			data := append(bytes.Repeat([]byte(" "), shift*31), doc...)
			checkBlocks(t, data)
			checkBlocks(t, append(data, `,{"next":1}`...))
		}
		i := bytes.Index(doc, []byte(`"entry"`))
		if i < 0 {
			continue
		}
		i = bytes.IndexByte(doc[i:], '[') + i + 1
		for range 200 {
			i = skipSpace(doc, i)
			if i >= len(doc) || doc[i] != '{' {
				break
			}
			checkBlocks(t, doc[i:])
			n, err := scanBytes(doc[i:], nil)
			if err != nil {
				t.Fatal(err)
			}
			i = skipSpace(doc, i+n)
			if i < len(doc) && doc[i] == ',' {
				i++
			}
		}
	}
}

// TestScanBlocksOnMutants: test documents cut short anywhere and with
// bytes changed, inserted and removed — above all the bytes the blocks
// classify — never get an answer from scanBlocks that scanBytes does not
// give.
func TestScanBlocksOnMutants(t *testing.T) {
	docs := corpus(t)
	rng := rand.New(rand.NewPCG(5, 6))
	special := []byte("\"\\\\ \t\n\r,:[]{}\x00\x0c\x1a\x1f0123456789-+.eEtrufalsn/u\x80")
	for range 30000 {
		doc := docs[rng.IntN(len(docs))]
		// A window of at most 3 kB starting at an object or array.
		start := rng.IntN(len(doc))
		for start < len(doc) && doc[start] != '{' && doc[start] != '[' {
			start++
		}
		if start == len(doc) {
			continue
		}
		data := bytes.Clone(doc[start:min(len(doc), start+1+rng.IntN(3000))])
		for range rng.IntN(4) {
			if len(data) < 2 {
				break
			}
			k := 1 + rng.IntN(len(data)-1)
			c := special[rng.IntN(len(special))]
			switch rng.IntN(3) {
			case 0:
				data[k] = c
			case 1:
				data = append(data[:k], append([]byte{c}, data[k:]...)...)
			default:
				data = append(data[:k], data[k+1:]...)
			}
		}
		checkBlocks(t, data)
	}
}

// TestScanBlocksOnEscapes: strings full of backslash runs and escaped
// quotes, at every alignment against the blocks.
func TestScanBlocksOnEscapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pieces := []string{`\\`, `\"`, `\\\"`, `\\\\`, `\u00e9`, `\n`, `x`, `"`, `\`, `\/`, `\ud83d\ude00`, `\u12g4`, "\x01", `}`, `]`, `,`, `:`}
	for range 20000 {
		var s strings.Builder
		s.WriteString(strings.Repeat(" ", rng.IntN(64)))
		s.WriteString(`{"a":[`)
		for m := range 1 + rng.IntN(6) {
			if m > 0 {
				s.WriteByte(',')
			}
			s.WriteByte('"')
			for range rng.IntN(40) {
				s.WriteString(pieces[rng.IntN(len(pieces))])
			}
			s.WriteByte('"')
		}
		s.WriteString(`],"b":{"c":1}}`)
		checkBlocks(t, []byte(s.String()))
	}
}

// FuzzScanBlocks: scanBlocks and scanBytes on any input, at three
// alignments.
func FuzzScanBlocks(f *testing.F) {
	for _, c := range scanCases {
		f.Add(c)
	}
	f.Add(`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}}`)
	f.Add(`{"a":"\\\"\\","b":[1,-2.5e3,true,null,{"c":"x\u00e9"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, pad := range []string{"", " ", strings.Repeat(" ", 63)} {
			checkBlocks(t, []byte(pad+s))
		}
	})
}

// BenchmarkScanDocuments: the test documents scanned by the block walk
// (ScanValue on this machine) and by the byte loop, for the ratio.
func BenchmarkScanDocuments(b *testing.B) {
	docs := corpus(b)
	total := 0
	for _, d := range docs {
		total += len(d)
	}
	for _, way := range []struct {
		name string
		scan func([]byte) (int, error)
	}{{"ScanValue", ScanValue}, {"bytes", func(d []byte) (int, error) { return scanBytes(d, nil) }}} {
		b.Run(way.name, func(b *testing.B) {
			b.SetBytes(int64(total))
			for b.Loop() {
				for _, d := range docs {
					if _, err := way.scan(d); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
