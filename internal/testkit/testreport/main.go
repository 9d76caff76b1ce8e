// Command testreport reads `go test -json` on its standard input and keeps
// the terminal short: one line per package as it finishes, and at the end,
// for every failed test, its name and its first error line (for a package
// that failed outside any test, such as a build error, a panic or a
// timeout, its first lines of output). The full output, as `go test -v`
// would print it, goes to the file named by -log. It exits 1 when anything
// failed or the input ended before every package was done.
//
//	go test -json ./... | go run ./internal/testkit/testreport -log .build/go-test.log
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build events
	FailedBuild string
}

// testKey names one test of one package.
type testKey struct{ pkg, test string }

// report collects the outcome of a run.
type report struct {
	output   map[testKey][]string // output lines per test ("" test: the package's own)
	failed   []testKey            // failed tests and packages, in the order they failed
	started  map[string]bool      // packages that started
	finished map[string]bool      // packages with a pass, fail or skip
	builds   map[string][]string  // build output per import path
	broken   bool                 // something failed
}

func main() {
	logPath := flag.String("log", "", "write the full test output to this file")
	flag.Parse()
	var log io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(1)
		}
		defer f.Close()
		log = f
	}
	r := &report{output: map[testKey][]string{}, started: map[string]bool{}, finished: map[string]bool{}, builds: map[string][]string{}}
	if err := r.read(os.Stdin, log, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if r.summary(os.Stdout, *logPath) {
		os.Exit(1)
	}
}

// read consumes the event stream, writing the plain output to log and a
// line per finished package to out.
func (r *report) read(in io.Reader, log, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not an event (go vet's or the go command's own messages).
			fmt.Fprintln(log, string(line))
			r.output[testKey{}] = append(r.output[testKey{}], string(line))
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Fprint(log, e.Output)
			r.builds[e.ImportPath] = append(r.builds[e.ImportPath], strings.TrimRight(e.Output, "\n"))
		case "build-fail":
			r.broken = true
		case "start":
			r.started[e.Package] = true
		case "output":
			fmt.Fprint(log, e.Output)
			k := testKey{e.Package, e.Test}
			r.output[k] = append(r.output[k], strings.TrimRight(e.Output, "\n"))
		case "fail":
			r.broken = true
			r.failed = append(r.failed, testKey{e.Package, e.Test})
			if e.Test == "" {
				r.finished[e.Package] = true
				fmt.Fprintf(out, "FAIL  %s (%s)\n", e.Package, seconds(e.Elapsed))
			}
		case "pass", "skip":
			if e.Test == "" {
				r.finished[e.Package] = true
				if e.Action == "pass" && len(r.output[testKey{e.Package, ""}]) > 0 && !noTests(r.output[testKey{e.Package, ""}]) {
					fmt.Fprintf(out, "ok    %s (%s)\n", e.Package, seconds(e.Elapsed))
				}
			}
		}
	}
	return sc.Err()
}

// noTests reports whether a package's output says it has no test files.
func noTests(lines []string) bool {
	for _, l := range lines {
		if strings.Contains(l, "[no test files]") {
			return true
		}
	}
	return false
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}

// summary prints each failure with its first error and reports whether
// the run failed.
func (r *report) summary(out io.Writer, logPath string) bool {
	var unfinished []string
	for pkg := range r.started {
		if !r.finished[pkg] {
			unfinished = append(unfinished, pkg)
		}
	}
	sort.Strings(unfinished)
	if !r.broken && len(unfinished) == 0 {
		return false
	}
	fmt.Fprintln(out, "\nFailed:")
	// A parent test fails with its subtests: name the subtests only.
	leaf := func(k testKey) bool {
		for _, o := range r.failed {
			if o.pkg == k.pkg && strings.HasPrefix(o.test, k.test+"/") {
				return false
			}
		}
		return true
	}
	for _, k := range r.failed {
		if k.test == "" {
			// The package itself: only worth a line when no test says why
			// (a panic, a timeout, a TestMain failure).
			if r.anyTestFailed(k.pkg) {
				continue
			}
			fmt.Fprintf(out, "  %s:\n", k.pkg)
			for _, l := range firstLines(r.output[k], 6) {
				fmt.Fprintf(out, "      %s\n", l)
			}
			continue
		}
		if !leaf(k) {
			continue
		}
		fmt.Fprintf(out, "  %s %s\n      %s\n", k.pkg, k.test, firstError(r.output[k]))
	}
	var paths []string
	for p := range r.builds {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(out, "  build %s:\n", p)
		for _, l := range firstLines(r.builds[p], 6) {
			fmt.Fprintf(out, "      %s\n", l)
		}
	}
	for _, pkg := range unfinished {
		fmt.Fprintf(out, "  %s: did not finish\n", pkg)
	}
	if len(r.output[testKey{}]) > 0 && len(paths) == 0 {
		for _, l := range firstLines(r.output[testKey{}], 6) {
			fmt.Fprintf(out, "      %s\n", l)
		}
	}
	if logPath != "" {
		fmt.Fprintf(out, "Full output: %s\n", logPath)
	}
	return true
}

func (r *report) anyTestFailed(pkg string) bool {
	for _, k := range r.failed {
		if k.pkg == pkg && k.test != "" {
			return true
		}
	}
	return false
}

// testLine is a line the testing package prints for t.Error, t.Fatal and
// t.Log: "file_test.go:12: message".
var testLine = regexp.MustCompile(`^\S+\.go:\d+: `)

// firstError is the first line a failed test printed through t.Error,
// t.Fatal or t.Log; failing that (a panic), the first line that is not the
// test runner's own (=== RUN, --- FAIL, …). A server logging on the
// process's standard error then does not hide the test's own message.
func firstError(lines []string) string {
	for _, l := range lines {
		if t := strings.TrimSpace(l); testLine.MatchString(t) {
			return t
		}
	}
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		return t
	}
	return "(no output)"
}

// firstLines returns up to n lines that are not blank.
func firstLines(lines []string, n int) []string {
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "=== ") {
			continue
		}
		out = append(out, l)
		if len(out) == n {
			break
		}
	}
	return out
}
