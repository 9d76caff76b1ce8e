// Package hapitest runs the HAPI FHIR JPA test server that test/hapi
// builds, as a child process of a test or benchmark: on a free loopback
// port, its output in a log file, stopped with the caller (it exits when
// its stdin closes, so even a killed test leaves no server behind).
//
// By default HAPI keeps its data in memory (H2). Options.JDBCURL puts it
// on PostgreSQL instead, as the cluster test needs: several gateway nodes
// in front of one HAPI whose data outlives any one of them.
package hapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// PartitionHeader is the header HAPI reads the partition from in header
// mode.
const PartitionHeader = "X-Request-Partition-IDs"

// Build is the command that builds the jar, for error messages.
const Build = "cd test/hapi && mvn -q -B package -DskipTests"

// StallLimit is how long HAPI may start without a sign of progress
// (its log growing, or the process using CPU) before Start gives up.
// There is no fixed limit on the start itself: HAPI answers about half a
// minute after start alone on two cores, and many minutes later when
// several JVMs start at once; the caller bounds it with ctx (StartT: the
// test's deadline).
const StallLimit = 2 * time.Minute

// stallCPU is the CPU time a process must use within StallLimit, without
// a line of log, to count as making progress: an idle JVM uses less.
const stallCPU = 2 * time.Second

// Options says how to run HAPI.
type Options struct {
	// Mode is "header" (partition named by PartitionHeader) or "url"
	// (partition as the first path segment).
	Mode string
	// Jar is the server jar: JarIn(the repository's root).
	Jar string
	// Dir holds the log file.
	Dir string
	// JDBCURL, when set, is a PostgreSQL DSN (postgres://user:pw@host:port/db)
	// HAPI keeps its data in instead of memory.
	JDBCURL string
	// JVMArgs, when set, replace the JVM options of a test server
	// (DefaultJVMArgs: a small heap and the quick compiler, so that it
	// starts fast): a benchmark gives HAPI the heap and the optimizing
	// compiler a deployment has.
	JVMArgs []string
}

// DefaultJVMArgs are the JVM options of a test server.
var DefaultJVMArgs = []string{"-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"}

// Server is one running HAPI process.
type Server struct {
	Addr    string // 127.0.0.1:port
	Base    string // http://127.0.0.1:port/fhir
	LogPath string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
}

// Start runs HAPI and waits until it answers a search in its DEFAULT
// partition (not /metadata: HAPI caches one CapabilityStatement, built
// for whoever asks first, and that should be the gateway), the process
// exits, ctx ends or it makes no progress for StallLimit. The caller
// stops it with Stop.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Mode != "header" && o.Mode != "url" {
		return nil, fmt.Errorf("hapitest: mode %q, want header or url", o.Mode)
	}
	jar := o.Jar
	if jar == "" {
		return nil, errors.New("hapitest: no jar given (hapitest.JarIn(root))")
	}
	if _, err := os.Stat(jar); err != nil {
		return nil, fmt.Errorf("the HAPI FHIR test server is not built (%w): run `%s` first (scripts/test.sh does)", err, Build)
	}
	java, err := javaBinary()
	if err != nil {
		return nil, err
	}
	port, err := testkit.FreePort() // Java binds without SO_REUSEPORT
	if err != nil {
		return nil, fmt.Errorf("hapitest: %w", err)
	}
	env := os.Environ()
	if o.JDBCURL != "" {
		jdbc, user, password, err := jdbcFromDSN(o.JDBCURL)
		if err != nil {
			return nil, err
		}
		env = append(env, "HAPI_JDBC_URL="+jdbc, "HAPI_JDBC_USER="+user, "HAPI_JDBC_PASSWORD="+password)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Addr: addr, Base: "http://" + addr + "/fhir", LogPath: filepath.Join(o.Dir, "hapi-"+o.Mode+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("hapitest: %w", err)
	}
	jvm := o.JVMArgs
	if len(jvm) == 0 {
		jvm = DefaultJVMArgs
	}
	s.cmd = exec.Command(java, append(slices.Clone(jvm), "-jar", jar, o.Mode, strconv.Itoa(port), "--exit-on-stdin-eof")...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// HAPI exits when this pipe closes: with the caller, even one killed
	// before its cleanups run.
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("hapitest: %w", err)
	}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("hapitest: start HAPI: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, o.Mode); err != nil {
		s.Stop()
		return nil, fmt.Errorf("HAPI (%s mode) did not come up: %w\n%s", o.Mode, err, s.LogTail())
	}
	return s, nil
}

// waitReady searches Patient in the DEFAULT partition until HAPI answers
// 200, as long as it makes progress (see progress).
func (s *Server) waitReady(ctx context.Context, mode string) error {
	target := s.Base + "/Patient?_count=1"
	if mode == "url" {
		target = s.Base + "/DEFAULT/Patient?_count=1"
	}
	probe := &http.Client{Timeout: 10 * time.Second}
	p := progress{log: s.LogPath, pid: s.cmd.Process.Pid}
	p.moved(time.Now())
	for {
		select {
		case <-s.exited:
			return errors.New("the process exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s: %w", target, ctx.Err())
		case <-time.After(time.Second):
		}
		if now := time.Now(); !p.moved(now) && now.Sub(p.last) > StallLimit {
			return fmt.Errorf("no answer from %s, and no progress (log output or %s of CPU) for %s", target, stallCPU, StallLimit)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		if mode == "header" {
			req.Header.Set(PartitionHeader, "DEFAULT")
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
}

// progress watches a starting process: it moved when its log grew, or
// when it used stallCPU of CPU time since it last moved.
type progress struct {
	log  string
	pid  int
	last time.Time // when it last moved
	size int64
	cpu  time.Duration
}

// moved reports whether the process made progress since it last moved,
// and if so notes now.
func (p *progress) moved(now time.Time) bool {
	size := int64(-1)
	if fi, err := os.Stat(p.log); err == nil {
		size = fi.Size()
	}
	cpu, cpuKnown := cpuTime(p.pid)
	if p.last.IsZero() || size > p.size || cpuKnown && cpu-p.cpu >= stallCPU {
		p.last, p.size, p.cpu = now, size, cpu
		return true
	}
	return false
}

// cpuTime is the CPU time (user and system, all threads) the process has
// used, from /proc (false where there is none).
func cpuTime(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(raw[i+1:]))
	// fields[0] is the state (field 3); utime and stime are fields 14, 15.
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const clockTicks = 100 // USER_HZ: 100 on every Linux Go runs on
	return time.Duration(utime+stime) * time.Second / clockTicks, true
}

// StartT starts HAPI for a test: bounded by the test's deadline as every
// wait in a test is (testkit.WaitContext: less a margin, so that a start
// that cannot finish fails with HAPI's log instead of the test binary's
// panic), failing the test when it does not come up, and stopped when the
// test ends.
func StartT(t testing.TB, o Options) *Server {
	t.Helper()
	s, err := Start(testkit.WaitContext(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the process and waits (bounded) for it to go.
func (s *Server) Stop() {
	_ = s.stdin.Close()
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
	}
}

// LogTail returns the end of the server's output, for failure messages.
func (s *Server) LogTail() string {
	raw, err := os.ReadFile(s.LogPath)
	if err != nil {
		return err.Error()
	}
	const keep = 4000
	if len(raw) > keep {
		raw = raw[len(raw)-keep:]
	}
	return string(raw)
}

// jdbcFromDSN turns a postgres:// DSN into HAPI's JDBC URL and
// credentials.
func jdbcFromDSN(dsn string) (jdbc, user, password string, err error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return "", "", "", fmt.Errorf("hapitest: %q is not a postgres:// DSN", dsn)
	}
	jdbc = "jdbc:postgresql://" + u.Host + u.Path
	if u.RawQuery != "" {
		jdbc += "?" + u.RawQuery
	}
	if u.User != nil {
		user = u.User.Username()
		password, _ = u.User.Password()
	}
	return jdbc, user, password, nil
}

// javaBinary is $JAVA_HOME/bin/java when set, else java from PATH.
func javaBinary() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(java); err == nil {
			return java, nil
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("java (17 or newer) is needed to run the HAPI FHIR test server: %w", err)
	}
	return java, nil
}

// JarIn is the jar that test/hapi builds in the repository at root.
func JarIn(root string) string {
	return filepath.Join(root, "test", "hapi", "target", "hapi-test-server.jar")
}

// ModuleJar is JarIn of the caddy-pfr module the go tool finds from the
// working directory: for commands (the benchmarks) run inside it.
func ModuleJar(ctx context.Context) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the caddy-pfr module for test/hapi's jar: %w", err)
	}
	return JarIn(strings.TrimSpace(string(root))), nil
}
