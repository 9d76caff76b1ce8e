// Package docs_test keeps the README and the pages of docs/ true: every
// shell command in them parses and names packages, directories and pfr
// commands that exist, and the walkthrough (docs/walkthrough.md) runs, twice in a row in
// a fresh folder against Caddyfile.example, printing what the page says
// it prints.
package docs_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// root is the repository root, seen from this package's directory.
const root = ".."

// pages are the documents whose commands are checked.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md (%v)", err)
	}
	return append([]string{filepath.Join(root, "README.md")}, docs...)
}

// block is one fenced code block of a Markdown file.
type block struct {
	info string // what follows the opening fence: "sh", "text again", …
	body string
	line int // the opening fence's line, 1-based
}

// blocks returns the fenced code blocks of text.
func blocks(text string) []block {
	var out []block
	var cur *block
	var body strings.Builder
	for i, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "```") {
			if cur != nil {
				body.WriteString(line)
				body.WriteByte('\n')
			}
			continue
		}
		if cur == nil {
			cur = &block{info: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: i + 1}
			body.Reset()
			continue
		}
		cur.body = body.String()
		out = append(out, *cur)
		cur = nil
	}
	return out
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// pfrBinary is the pfr command: $PFR_BIN when set (scripts/test.sh builds
// it), else built once for this test binary.
func pfrBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PFR_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "pfr-docs-bin-")
		if binErr != nil {
			return
		}
		binPath, binErr = pfrproc.Build(testkit.WaitContext(t), binDir)
	})
	if binErr != nil {
		t.Fatalf("building cmd/pfr: %v", binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	// goPath matches the package or directory a go command names.
	goPath = regexp.MustCompile(`\bgo (?:run|test|generate|build)(?: -[a-z]+(?:[ =][^\s.][^\s]*)?)* (\./[^\s;|&)]*)`)
	// cdPath matches a directory a subshell changes into.
	cdPath = regexp.MustCompile(`\(cd ([a-z][^\s&)]*) &&`)
	// pfrCommand matches a pfr subcommand run from the repository.
	pfrCommand = regexp.MustCompile(`go run \./cmd/pfr ([a-z-]+)`)
	// scriptPath matches a script run with bash.
	scriptPath = regexp.MustCompile(`\bbash (scripts/[^\s;|&]+)`)
)

// TestDocsCommandsParse checks every shell block of the README and docs/:
// bash can parse it, the packages and directories it names exist, and the
// pfr subcommands it runs are pfr's. The walkthrough (docs/walkthrough.md) is run for
// real by TestWalkthroughTwice.
func TestDocsCommandsParse(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is needed to check the docs' commands")
	}
	var pfrCommands []string
	for _, page := range pages(t) {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, page)
		n := 0
		for _, b := range blocks(string(raw)) {
			if b.info != "sh" {
				continue
			}
			n++
			where := fmt.Sprintf("%s:%d", name, b.line)
			cmd := exec.Command("bash", "-n")
			cmd.Stdin = strings.NewReader(b.body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: bash cannot parse the block: %v\n%s", where, err, out)
			}
			for _, m := range goPath.FindAllStringSubmatch(b.body, -1) {
				dir := strings.TrimSuffix(strings.TrimSuffix(m[1], "/..."), "/")
				if !hasGoFiles(filepath.Join(root, dir)) {
					t.Errorf("%s: %q names %s, which holds no Go package", where, m[0], dir)
				}
			}
			for _, m := range cdPath.FindAllStringSubmatch(b.body, -1) {
				if st, err := os.Stat(filepath.Join(root, m[1])); err != nil || !st.IsDir() {
					t.Errorf("%s: %q changes into %s, which is no directory", where, m[0], m[1])
				}
			}
			for _, m := range scriptPath.FindAllStringSubmatch(b.body, -1) {
				if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
					t.Errorf("%s: %q runs %s, which does not exist", where, m[0], m[1])
				}
			}
			for _, m := range pfrCommand.FindAllStringSubmatch(b.body, -1) {
				pfrCommands = append(pfrCommands, where+" "+m[1])
			}
		}
		if name == "README.md" && n == 0 {
			t.Errorf("README.md has no sh block")
		}
	}
	if len(pfrCommands) == 0 {
		t.Fatal("no `go run ./cmd/pfr <command>` in the docs: the pattern no longer matches")
	}
	bin := pfrBinary(t)
	for _, c := range pfrCommands {
		where, sub, _ := strings.Cut(c, " ")
		out, err := exec.Command(bin, "help", sub).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("unknown command")) {
			t.Errorf("%s: pfr has no command %q: %v\n%s", where, sub, err, out)
		}
	}
}

// hasGoFiles reports whether dir holds a .go file.
func hasGoFiles(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(files) > 0
}

// step is one shell block of the walkthrough and what it prints, on the
// first run and on the runs after it.
type step struct {
	line          int
	script        string
	first, second []string
}

// walkthroughPage is the page whose walkthrough TestWalkthroughTwice runs
// (scripts/it/quickstart.sh runs the same region).
const walkthroughPage = "docs/walkthrough.md"

// walkthrough returns the walkthrough of walkthroughPage: each sh block between the
// walkthrough markers with the text blocks after it. A "text" block is
// what the step prints on every run, unless a "text again" block says
// what it prints from the second run on.
func walkthrough(t *testing.T, readme string) []step {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "<!-- walkthrough:begin -->")
	region, _, ok2 := strings.Cut(rest, "<!-- walkthrough:end -->")
	if !ok || !ok2 {
		t.Fatal(walkthroughPage + " has no <!-- walkthrough:begin --> … <!-- walkthrough:end --> region")
	}
	var steps []step
	for _, b := range blocks(region) {
		lines := strings.Split(strings.TrimRight(b.body, "\n"), "\n")
		switch b.info {
		case "sh":
			steps = append(steps, step{line: b.line, script: b.body})
		case "text", "text again":
			if len(steps) == 0 {
				t.Fatalf("walkthrough: a text block (line %d) before any sh block", b.line)
			}
			s := &steps[len(steps)-1]
			if b.info == "text" {
				s.first = lines
				if s.second == nil {
					s.second = lines
				}
			} else {
				s.second = lines
			}
		default:
			t.Fatalf("walkthrough: a %q block (line %d); only sh, text and \"text again\" are known", b.info, b.line)
		}
	}
	if len(steps) == 0 {
		t.Fatal("the walkthrough has no sh block")
	}
	for _, s := range steps {
		if s.first == nil {
			t.Fatalf("walkthrough: the sh block at line %d shows no expected output (a text block after it)", s.line)
		}
	}
	return steps
}

// matches reports whether got matches want, in which "…" stands for any
// text (ids, times).
func matches(want, got string) bool {
	parts := strings.Split(want, "…")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$").MatchString(got)
}

// TestWalkthroughTwice runs `pfr run --config Caddyfile.example` in a fresh
// folder (on free ports instead of 8443 and 8080, so it runs beside a
// quickstart you have running), then the walkthrough twice in a row,
// each step's output checked against the page.
func TestWalkthroughTwice(t *testing.T) {
	testkit.Needs(t, "the real pfr binary and curl")
	for _, tool := range []string{"bash", "curl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the walkthrough", tool)
		}
	}
	page, err := os.ReadFile(filepath.Join(root, walkthroughPage))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.WaitContext(t)
	ex := startExample(ctx, t)
	steps := walkthrough(t, ex.local(string(page)))
	work, proc := ex.dir, ex.q
	shim := filepath.Join(work, ".shim")
	if err := os.Mkdir(shim, 0o755); err != nil {
		t.Fatal(err)
	}
	// The README says `go run ./cmd/pfr …`; the binary built from the same
	// source stands in, and any other go command fails the test.
	goShim := fmt.Sprintf("#!/usr/bin/env bash\n[ \"$1 $2\" = \"run ./cmd/pfr\" ] || { echo \"unexpected go command: $*\" >&2; exit 1; }\nshift 2\nexec %q \"$@\"\n", pfrBinary(t))
	if err := os.WriteFile(filepath.Join(shim, "go"), []byte(goShim), 0o755); err != nil {
		t.Fatal(err)
	}

	// One bash runs every step, as one terminal would; a marker line
	// separates the steps' output.
	var script strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&script, "echo '@@step %d@@'\n%s\n", i, s.script)
	}
	for run := 1; run <= 2; run++ {
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail")
		cmd.Dir = work
		// pfr records talks to https://pfr.localhost:8443 unless told
		// otherwise; here the example listens elsewhere.
		cmd.Env = append(os.Environ(), "PATH="+shim+string(os.PathListSeparator)+os.Getenv("PATH"),
			"PFR_API=https://pfr.localhost:"+ex.httpsPort, "PFR_TOKEN=", "PFR_CACERT=")
		cmd.Stdin = strings.NewReader(script.String())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("run %d: the walkthrough failed: %v\n%s%s\npfr's log:\n%s", run, err, out, stderr.Bytes(), proc.log())
		}
		got := splitSteps(string(out))
		for i, s := range steps {
			want := s.first
			if run > 1 {
				want = s.second
			}
			if msg := compare(want, got[i]); msg != "" {
				t.Errorf("run %d, "+walkthroughPage+" line %d: %s", run, s.line, msg)
			}
		}
	}
	// What the walkthrough wrote is under pfr-data, nothing beside it.
	entries, err := os.ReadDir(work)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "pfr-data", ".shim", "Caddyfile", "home":
		default:
			t.Errorf("the walkthrough left %s in the folder it runs in (its files belong under pfr-data/)", e.Name())
		}
	}
	// And the quickstart wrote nothing into the user's home (Caddy's
	// default data and config directories are there).
	_ = filepath.WalkDir(filepath.Join(work, "home"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("the quickstart wrote %s outside ./pfr-data", strings.TrimPrefix(path, work+"/"))
		}
		return nil
	})
}

// splitSteps splits the walkthrough's output at the step markers.
func splitSteps(out string) map[int][]string {
	got := map[int][]string{}
	cur := -1
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		var n int
		if _, err := fmt.Sscanf(line, "@@step %d@@", &n); err == nil {
			cur = n
			got[n] = []string{}
			continue
		}
		got[cur] = append(got[cur], line)
	}
	return got
}

// compare says how got differs from want ("" when it matches), shortly.
func compare(want, got []string) string {
	for i := 0; i < max(len(want), len(got)); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("printed %d lines, the page shows %d; missing:\n  %s", len(got), len(want), want[i])
		case i >= len(want):
			return fmt.Sprintf("printed %d lines, the page shows %d; extra:\n  %s", len(got), len(want), got[i])
		case !matches(want[i], got[i]):
			return fmt.Sprintf("line %d differs\n  page: %s\n  got:  %s", i+1, want[i], got[i])
		}
	}
	return ""
}

// quickstart is `pfr run --config Caddyfile` as a user starts it: in the
// folder, with HOME inside it (so anything written outside the folder's
// pfr-data shows), its output in a buffer.
type quickstart struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// example is Caddyfile.example running in a fresh folder, on free ports
// instead of 8443 and 8080.
type example struct {
	q                   *quickstart
	dir                 string
	httpsPort, httpPort string
	ready               string // the readiness line
}

// local rewrites the example's ports in s (a command, an expected output)
// to the ones this run listens on.
func (e *example) local(s string) string {
	s = regexp.MustCompile(`\b8443\b`).ReplaceAllString(s, e.httpsPort)
	return regexp.MustCompile(`\b8080\b`).ReplaceAllString(s, e.httpPort)
}

// startExample runs Caddyfile.example in a fresh folder and waits for its
// readiness line.
func startExample(ctx context.Context, t *testing.T) *example {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	// The example's ports become two held for this test (testkit.Port: no
	// other process is given them while it runs; pfr, as Caddy, binds
	// with SO_REUSEPORT and listens on them).
	e := &example{dir: t.TempDir(), httpsPort: fmt.Sprint(testkit.Reserve(t).Number), httpPort: fmt.Sprint(testkit.Reserve(t).Number)}
	e.q = startQuickstart(ctx, t, pfrBinary(t), e.dir, e.local(string(raw)))
	if e.ready, err = e.q.waitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, e.q.log())
	}
	return e
}

// startQuickstart writes caddyfile to dir/Caddyfile and runs pfr on it in
// dir; the test's end stops it.
func startQuickstart(ctx context.Context, t *testing.T, bin, dir, caddyfile string) *quickstart {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	q := &quickstart{out: &syncBuffer{}, done: make(chan struct{})}
	q.cmd = exec.CommandContext(ctx, bin, "run", "--config", "Caddyfile")
	q.cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	q.cmd.Env = append(env, "HOME="+home)
	q.cmd.Stdout, q.cmd.Stderr = q.out, q.out
	q.cmd.Cancel = func() error { return q.cmd.Process.Signal(os.Interrupt) }
	q.cmd.WaitDelay = 10 * time.Second
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = q.cmd.Wait(); close(q.done) }()
	t.Cleanup(q.stop)
	return q
}

// stop interrupts pfr and waits for it to exit (killing it after 10 s).
func (q *quickstart) stop() {
	_ = q.cmd.Process.Signal(os.Interrupt)
	select {
	case <-q.done:
	case <-time.After(10 * time.Second):
		_ = q.cmd.Process.Kill()
		<-q.done
	}
}

// waitReady waits until pfr logs its readiness line and returns it, or
// fails when pfr exits first or ctx ends (testkit.WaitContext: the test's
// deadline is near).
func (q *quickstart) waitReady(ctx context.Context) (string, error) {
	for {
		for _, line := range strings.Split(q.out.String(), "\n") {
			if strings.Contains(line, "caddy-pfr ready") {
				return line, nil
			}
		}
		select {
		case <-q.done:
			return "", fmt.Errorf("pfr exited before it was ready")
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// log returns the end of pfr's output.
func (q *quickstart) log() string {
	lines := strings.Split(strings.TrimSpace(q.out.String()), "\n")
	return strings.Join(lines[max(len(lines)-15, 0):], "\n")
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDocsCaddyfilesAdapt adapts every whole Caddyfile shown in the README
// and docs/ (a block that starts with global options or a site address and
// leaves nothing out with "…"): what a reader copies must load. Fragments
// (a `dropoff { … }` block, an `issuer` line) are not whole files.
func TestDocsCaddyfilesAdapt(t *testing.T) {
	bin := pfrBinary(t)
	n := 0
	for _, page := range pages(t) {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, page)
		for _, b := range blocks(string(raw)) {
			if b.info != "caddyfile" || strings.Contains(b.body, "…") || !wholeCaddyfile(b.body) {
				continue
			}
			n++
			file := filepath.Join(t.TempDir(), "Caddyfile")
			if err := os.WriteFile(file, []byte(b.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "adapt", "--config", file).CombinedOutput(); err != nil {
				t.Errorf("%s:%d: the Caddyfile does not load: %v\n%s", name, b.line, err, tail(string(out), 3))
			}
		}
	}
	if n == 0 {
		t.Fatal("no whole Caddyfile found in the docs: the rule no longer matches")
	}
	t.Logf("%d whole Caddyfiles tried", n)
}

// wholeCaddyfile reports whether body's first line (comments and blank
// lines aside) opens global options or names a site address.
func wholeCaddyfile(body string) bool {
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return line == "{" || strings.HasPrefix(line, "https://") || strings.HasPrefix(line, "http://") || strings.HasPrefix(line, ":")
	}
	return false
}
