package main

import (
	"bytes"
	"strings"
	"testing"
)

// A stream as `go test -json` writes it: a package that passes, one whose
// subtest fails after a server logged on standard error, one that panics
// and one that does not build.
const stream = `{"Action":"start","Package":"m/ok"}
{"Action":"run","Package":"m/ok","Test":"TestA"}
{"Action":"output","Package":"m/ok","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"m/ok","Test":"TestA","Elapsed":0.1}
{"Action":"output","Package":"m/ok","Output":"ok  \tm/ok\t0.1s\n"}
{"Action":"pass","Package":"m/ok","Elapsed":0.1}
{"Action":"start","Package":"m/bad"}
{"Action":"output","Package":"m/bad","Test":"TestB","Output":"=== RUN   TestB\n"}
{"Action":"output","Package":"m/bad","Test":"TestB/sub","Output":"=== RUN   TestB/sub\n"}
{"Action":"output","Package":"m/bad","Test":"TestB/sub","Output":"{\"level\":\"info\",\"msg\":\"server running\"}\n"}
{"Action":"output","Package":"m/bad","Test":"TestB/sub","Output":"    b_test.go:12: status 500, want 200\n"}
{"Action":"output","Package":"m/bad","Test":"TestB/sub","Output":"    b_test.go:13: second error\n"}
{"Action":"fail","Package":"m/bad","Test":"TestB/sub","Elapsed":0.2}
{"Action":"fail","Package":"m/bad","Test":"TestB","Elapsed":0.2}
{"Action":"fail","Package":"m/bad","Elapsed":0.3}
{"Action":"start","Package":"m/panics"}
{"Action":"output","Package":"m/panics","Test":"TestP","Output":"=== RUN   TestP\n"}
{"Action":"output","Package":"m/panics","Test":"TestP","Output":"--- FAIL: TestP (0.00s)\n"}
{"Action":"output","Package":"m/panics","Test":"TestP","Output":"panic: assignment to entry in nil map\n"}
{"Action":"fail","Package":"m/panics","Test":"TestP","Elapsed":0}
{"Action":"fail","Package":"m/panics","Elapsed":0}
{"ImportPath":"m/broken [m/broken.test]","Action":"build-output","Output":"# m/broken [m/broken.test]\n"}
{"ImportPath":"m/broken [m/broken.test]","Action":"build-output","Output":"broken/x_test.go:3:28: undefined: y\n"}
{"ImportPath":"m/broken [m/broken.test]","Action":"build-fail"}
{"Action":"start","Package":"m/broken"}
{"Action":"output","Package":"m/broken","Output":"FAIL\tm/broken [build failed]\n"}
{"Action":"fail","Package":"m/broken","Elapsed":0,"FailedBuild":"m/broken [m/broken.test]"}
{"Action":"start","Package":"m/cut"}
`

func newReport() *report {
	return &report{output: map[testKey][]string{}, started: map[string]bool{}, finished: map[string]bool{}, builds: map[string][]string{}}
}

func TestSummaryNamesEachFailureWithItsFirstError(t *testing.T) {
	r := newReport()
	var log, progress, summary bytes.Buffer
	if err := r.read(strings.NewReader(stream), &log, &progress); err != nil {
		t.Fatal(err)
	}
	if !r.summary(&summary, "full.log") {
		t.Fatal("a failed run reported as passed")
	}
	out := summary.String()
	for _, want := range []string{
		"  m/bad TestB/sub\n      b_test.go:12: status 500, want 200\n",
		"  m/panics TestP\n      panic: assignment to entry in nil map\n",
		"broken/x_test.go:3:28: undefined: y",
		"  m/cut: did not finish\n",
		"Full output: full.log\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"m/bad TestB\n", "second error", "server running", "m/ok"} {
		if strings.Contains(out, not) {
			t.Errorf("summary has %q:\n%s", not, out)
		}
	}
	if !strings.Contains(progress.String(), "ok    m/ok (100ms)") || !strings.Contains(progress.String(), "FAIL  m/bad") {
		t.Errorf("progress lines:\n%s", progress.String())
	}
	if !strings.Contains(log.String(), "b_test.go:13: second error") || !strings.Contains(log.String(), "server running") {
		t.Errorf("the full log lacks output:\n%s", log.String())
	}
}

func TestSummaryOfAPassingRun(t *testing.T) {
	r := newReport()
	var log, progress, summary bytes.Buffer
	passing := strings.Join(strings.Split(stream, "\n")[:6], "\n")
	if err := r.read(strings.NewReader(passing), &log, &progress); err != nil {
		t.Fatal(err)
	}
	if r.summary(&summary, "") || summary.Len() != 0 {
		t.Errorf("a passing run: failed, or printed %q", summary.String())
	}
}
