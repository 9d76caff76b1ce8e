package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// hapiJar is the HAPI FHIR JPA test server that test/hapi builds.
const (
	hapiJar   = "../test/hapi/target/hapi-test-server.jar"
	hapiBuild = "cd test/hapi && mvn -q -B package"
	// hapiStartLimit bounds HAPI's startup: about half a minute on two
	// cores, several when other tests share them.
	hapiStartLimit = 4 * time.Minute
)

// hapiServer is one running HAPI FHIR JPA server process.
type hapiServer struct {
	addr    string // 127.0.0.1:port
	base    string // http://127.0.0.1:port/fhir
	logPath string
	cmd     *exec.Cmd
	stdin   io.WriteCloser // held open while HAPI should run
	exited  chan struct{}
	client  *http.Client
}

// startHAPI starts the HAPI test server in mode ("header" or "url") on a
// free loopback port, waits until it answers a search in its DEFAULT
// partition and stops it when the test ends. A missing jar fails the test
// with the build command.
//
// The probe is a search, not /fhir/metadata, on purpose: HAPI caches one
// CapabilityStatement for every caller, built with the address of the
// request that asked first, and the test needs that first request to come
// through the gateway.
func startHAPI(t *testing.T, mode string) *hapiServer {
	t.Helper()
	testkit.Needs(t, "Java and the HAPI FHIR test server (test/hapi)")
	jar, err := filepath.Abs(hapiJar)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(jar); err != nil {
		t.Fatalf("the HAPI FHIR test server is not built (%v): run `%s` first (scripts/test.sh does)", err, hapiBuild)
	}
	java := javaBinary(t)
	addr, err := testkit.FreeAddr() // Java binds without SO_REUSEPORT
	if err != nil {
		t.Fatal(err)
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	h := &hapiServer{
		addr: addr, base: "http://" + addr + "/fhir",
		logPath: filepath.Join(t.TempDir(), "hapi-"+mode+".log"),
		exited:  make(chan struct{}),
		client:  &http.Client{Timeout: 30 * time.Second},
	}
	logFile, err := os.Create(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(java, "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-jar", jar, mode, port, "--exit-on-stdin-eof")
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	// HAPI exits when this pipe closes: with the test process, even one
	// killed before its cleanups run.
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := h.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start HAPI: %v", err)
	}
	go func() {
		_ = h.cmd.Wait()
		logFile.Close()
		close(h.exited)
	}()
	t.Cleanup(h.stop)
	if err := h.waitReady(mode); err != nil {
		t.Fatalf("HAPI (%s mode) did not come up: %v\n%s", mode, err, h.logTail())
	}
	t.Logf("HAPI FHIR (%s mode) answered %.1fs after start", mode, time.Since(started).Seconds())
	return h
}

// javaBinary is $JAVA_HOME/bin/java when set, else java from PATH.
func javaBinary(t *testing.T) string {
	t.Helper()
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if java := filepath.Join(home, "bin", "java"); fileExists(java) {
			return java
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("java (17 or newer) is needed to run the HAPI FHIR test server: %v", err)
	}
	return java
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitReady searches Patient in the DEFAULT partition until HAPI answers
// 200, the process dies or hapiStartLimit passes.
func (h *hapiServer) waitReady(mode string) error {
	url := h.base + "/Patient?_count=1"
	if mode == "url" {
		url = h.base + "/DEFAULT/Patient?_count=1"
	}
	deadline := time.Now().Add(hapiStartLimit)
	probe := &http.Client{Timeout: 10 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			return errors.New("the process exited")
		case <-time.After(time.Second):
		}
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return err
		}
		if mode == "header" {
			req.Header.Set(partitionHeader, "DEFAULT")
		}
		res, err := probe.Do(req)
		if err != nil {
			continue
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return nil
		}
	}
	return fmt.Errorf("no answer from %s within %v", url, hapiStartLimit)
}

// stop kills the process and waits (bounded) for it to go.
func (h *hapiServer) stop() {
	_ = h.stdin.Close()
	_ = h.cmd.Process.Kill()
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
	}
}

// logTail returns the end of the server's output, for failure messages.
func (h *hapiServer) logTail() string {
	raw, err := os.ReadFile(h.logPath)
	if err != nil {
		return err.Error()
	}
	const keep = 4000
	if len(raw) > keep {
		raw = raw[len(raw)-keep:]
	}
	return string(raw)
}
