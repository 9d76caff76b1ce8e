package backend

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

var fuzzBases = []string{"http://hapi:8080/fhir", "http://h/fhir/p1", "http://h/fhir"}

// streamChunks rewrites in through a streamRewriter, cutting it at cuts.
func streamChunks(t testing.TB, rp *replacer, in []byte, cuts []int) string {
	var out bytes.Buffer
	s := newStreamRewriter(rp, &out)
	prev := 0
	for _, c := range cuts {
		if c < prev || c > len(in) {
			continue
		}
		if n, err := s.Write(in[prev:c]); err != nil || n != c-prev {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if len(s.carry) > rp.maxLen {
			t.Fatalf("carry %d bytes > longest pattern %d", len(s.carry), rp.maxLen)
		}
		prev = c
	}
	if _, err := s.Write(in[prev:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestStreamByteByByte(t *testing.T) {
	rp := newReplacer(fuzzBases, testPublic)
	in := []byte(`{"link":[{"url":"http://hapi:8080/fhir?_getpages=1"}],"entry":[` +
		`{"fullUrl":"http://h/fhir/p1/Patient/1","x":"http://h/fhir/p12","y":"http://h/fhir2",` +
		`"z":"http:\/\/hapi:8080\/fhir\/Observation\/2","end":"http://hapi:8080/fhir"}]} http://h/fhir/p1`)
	cuts := make([]int, len(in))
	for i := range cuts {
		cuts[i] = i
	}
	got := streamChunks(t, rp, in, cuts)
	if want := referenceRewrite(rp, string(in)); got != want {
		t.Fatalf("byte by byte:\n got %s\nwant %s", got, want)
	}
	for _, bad := range []string{"hapi:8080", "/fhir/p1/"} {
		if strings.Contains(got, bad) {
			t.Errorf("%q left in %s", bad, got)
		}
	}
	if !strings.Contains(got, `"http://h/fhir2"`) {
		t.Errorf("/fhir2 was mangled: %s", got)
	}
}

// Every split point of a body holding each base once.
func TestStreamEverySplit(t *testing.T) {
	rp := newReplacer(fuzzBases, testPublic)
	in := []byte(`a"http://hapi:8080/fhir/X"b http://h/fhir/p1?q http:\/\/h\/fhir\/p1\/Y htt http://h/fhir`)
	want := referenceRewrite(rp, string(in))
	for i := 0; i <= len(in); i++ {
		for _, j := range []int{i, i + 1, i + 7, len(in)} {
			if got := streamChunks(t, rp, in, []int{i, j}); got != want {
				t.Fatalf("cut at %d,%d:\n got %s\nwant %s", i, j, got, want)
			}
		}
	}
}

func TestStreamRandomChunkings(t *testing.T) {
	rp := newReplacer(fuzzBases, testPublic)
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"http://hapi:8080/fhir", "http://h/fhir", "/p1", "/", "?", `"`, "2", "h", "ht", "http",
		"x", `\/`, "https://", "://", "http:\\/\\/h\\/fhir", "/fhir"}
	for round := 0; round < 300; round++ {
		var in []byte
		for n := rng.IntN(60); n > 0; n-- {
			in = append(in, pieces[rng.IntN(len(pieces))]...)
		}
		want := referenceRewrite(rp, string(in))
		var cuts []int
		for c := 0; c < len(in); c += 1 + rng.IntN(12) {
			cuts = append(cuts, c)
		}
		if got := streamChunks(t, rp, in, cuts); got != want {
			t.Fatalf("input %q cuts %v:\n got %q\nwant %q", in, cuts, got, want)
		}
	}
}

// FuzzRewriter compares the streaming rewrite, cut at fuzzed points, with
// the reference rewrite of the whole input.
func FuzzRewriter(f *testing.F) {
	f.Add([]byte(`{"fullUrl":"http://hapi:8080/fhir/Patient/1"}`), []byte{3, 17, 1})
	f.Add([]byte(`http://h/fhir/p1http://h/fhir2 http:\/\/h\/fhir`), []byte{1, 1, 1, 1, 40})
	f.Add([]byte("htthttp://h/fhir"), []byte{2})
	rp := newReplacer(fuzzBases, testPublic)
	f.Fuzz(func(t *testing.T, in []byte, steps []byte) {
		var cuts []int
		c := 0
		for _, s := range steps {
			c += int(s)
			cuts = append(cuts, c)
		}
		want := referenceRewrite(rp, string(in))
		if got := streamChunks(t, rp, in, cuts); got != want {
			t.Fatalf("input %q cuts %v:\n got %q\nwant %q", in, cuts, got, want)
		}
	})
}

// TestRewriteByHostAgreesWithReference: finding candidates by their hosts
// (rewrite's bytes.Index for each host, then the scheme before it) gives
// the reference rewrite for bases of every shape — hosts that occur inside
// others and inside schemes ("h" in "https", "hapi"), an IPv6 literal, a
// host written in capitals, the escaped-slash form, more hosts than are
// looked for at once — for bodies made of the patterns' own pieces, whole
// and cut into random writes.
func TestRewriteByHostAgreesWithReference(t *testing.T) {
	many := []string{}
	for n := range maxFoundHosts + 2 {
		many = append(many, "http://host"+strings.Repeat("x", n)+":80/fhir")
	}
	for _, bases := range [][]string{
		fuzzBases,
		{"http://Upstream.example:8080/fhir", "https://[::1]/base", "http://127.0.0.1:8080/fhir"},
		many,
	} {
		rp := newReplacer(bases, testPublic)
		if len(bases) == len(many) && len(rp.hosts) <= maxFoundHosts {
			t.Fatalf("%d hosts: the fallback is not exercised", len(rp.hosts))
		}
		pieces := []string{"/", "?", `"`, "2", "h", "x", `\/`, ":", "://", `:\/\/`, "s", "http", "https://", "loinc.org", ","}
		for _, p := range rp.patterns {
			from := string(p.from)
			pieces = append(pieces, from, from[:len(from)/2], from[len(from)/2:], from[hostStart(p.from):])
		}
		rng := rand.New(rand.NewPCG(uint64(len(bases)), 9))
		for round := 0; round < 2000; round++ {
			var in []byte
			for n := rng.IntN(40); n > 0; n-- {
				in = append(in, pieces[rng.IntN(len(pieces))]...)
			}
			want := referenceRewrite(rp, string(in))
			if got, _ := rp.replaceString(string(in)); got != want {
				t.Fatalf("bases %v, input %q:\n got %q\nwant %q", bases, in, got, want)
			}
			var cuts []int
			for c := 0; c < len(in); c += 1 + rng.IntN(3*rp.maxLen) {
				cuts = append(cuts, c)
			}
			if got := streamChunks(t, rp, in, cuts); got != want {
				t.Fatalf("bases %v, input %q cut at %v:\n got %q\nwant %q", bases, in, cuts, got, want)
			}
		}
	}
}
