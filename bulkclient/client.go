// Package bulkclient is a FHIR Bulk Data Access client: it runs an export
// against any Bulk Data server (kick-off, polling, download with SHA-256
// checksums) and uploads an exported directory into a caddy-pfr record's
// import endpoint. The pfr command line wraps it.
package bulkclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/internal/durable"
)

// Event is one step of progress.
type Event struct {
	// Phase is "kick-off", "waiting", "download", "upload", "importing"
	// or "done".
	Phase string
	// Message says what happens, for people.
	Message string
	// Done and Total count bytes (download, upload); Total is 0 when
	// unknown.
	Done, Total int64
}

// Client talks to Bulk Data servers.
type Client struct {
	// HTTP is the client used; it must not follow redirects to other
	// hosts with the token (http.Client drops Authorization on those).
	HTTP *http.Client
	// Token is the bearer token; empty sends none. It is sent only to the
	// origin (scheme, host and port) of the server an export or import was
	// started at: a status or file URL elsewhere gets none, whatever the
	// manifest says.
	Token string
	// Header is sent with every request to that same origin (a server's
	// own needs: an API key, HAPI's partition header).
	Header http.Header
	// Progress, when not nil, is told every step.
	Progress func(Event)
	// PollMin and PollMax bound the wait between two polls whatever the
	// server's Retry-After says. Defaults 1s and 60s.
	PollMin, PollMax time.Duration
}

func (c *Client) progress(e Event) {
	if c.Progress != nil {
		c.Progress(e)
	}
}

func (c *Client) pollBounds() (time.Duration, time.Duration) {
	lo, hi := c.PollMin, c.PollMax
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = time.Minute
	}
	return lo, max(lo, hi)
}

// ExportOptions are the kick-off's parameters.
type ExportOptions struct {
	// Patient asks for [base]/Patient/$export instead of [base]/$export.
	Patient bool
	// Types is _type; empty: every type.
	Types []string
	// Since is _since (a FHIR instant); empty: everything.
	Since string
	// OutDir receives the files, manifest.json and SHA256SUMS. Required.
	OutDir string
}

// File is one downloaded file.
type File struct {
	Type   string `json:"type"`
	Name   string `json:"file"`
	URL    string `json:"url"`
	Count  int    `json:"count,omitempty"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Error marks a file of the manifest's error list (OperationOutcomes).
	Error bool `json:"error,omitempty"`
}

// ExportResult is what an export wrote.
type ExportResult struct {
	TransactionTime string `json:"transactionTime"`
	Request         string `json:"request"`
	Dir             string `json:"dir"`
	Files           []File `json:"files"`
	// Resources counts the lines of the output files.
	Resources int `json:"resources"`
}

// Manifest is a Bulk Data export manifest.
type Manifest struct {
	TransactionTime     string         `json:"transactionTime"`
	Request             string         `json:"request"`
	RequiresAccessToken bool           `json:"requiresAccessToken"`
	Output              []ManifestFile `json:"output"`
	Error               []ManifestFile `json:"error"`
}

// ManifestFile is one file of a manifest. The SHA-256 in Extension is
// caddy-pfr's; other servers leave it out.
type ManifestFile struct {
	Type      string `json:"type"`
	URL       string `json:"url"`
	Count     int    `json:"count,omitempty"`
	Extension struct {
		SHA256 string `json:"sha256,omitempty"`
	} `json:"extension"`
}

// Error is a server's refusal: the status and what its OperationOutcome
// says.
type Error struct {
	Status      int
	Diagnostics string
}

func (e *Error) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Diagnostics)
}

// Export runs a Bulk Data export of the server at base into opts.OutDir.
func (c *Client) Export(ctx context.Context, base string, opts ExportOptions) (*ExportResult, error) {
	if opts.OutDir == "" {
		return nil, errors.New("an output directory is required")
	}
	base = strings.TrimSuffix(base, "/")
	home := egress.Origin(base)
	kick := base + "/$export"
	if opts.Patient {
		kick = base + "/Patient/$export"
	}
	q := url.Values{}
	if len(opts.Types) > 0 {
		q.Set("_type", strings.Join(opts.Types, ","))
	}
	if opts.Since != "" {
		q.Set("_since", opts.Since)
	}
	if len(q) > 0 {
		kick += "?" + q.Encode()
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	c.progress(Event{Phase: "kick-off", Message: "GET " + kick})
	res, err := c.do(ctx, home, http.MethodGet, kick, nil, "application/fhir+json", map[string]string{"Prefer": "respond-async"})
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		return nil, httpError(res.StatusCode, body)
	}
	status := res.Header.Get("Content-Location")
	if status == "" {
		return nil, errors.New("the kick-off answered 202 without a Content-Location")
	}
	status = resolve(kick, status)
	c.progress(Event{Phase: "waiting", Message: "export accepted; status at " + status})
	m, err := c.poll(ctx, home, status)
	if err != nil {
		return nil, err
	}
	out := &ExportResult{TransactionTime: m.TransactionTime, Request: m.Request, Dir: opts.OutDir}
	names := map[string]int{}
	fetch := func(f ManifestFile, isErr bool) error {
		name := f.Type
		if isErr {
			name = "errors-" + f.Type
		}
		if !validName(name) {
			return fmt.Errorf("the manifest names a type %q that is not a resource type", f.Type)
		}
		names[name]++
		file := name + ".ndjson"
		if n := names[name]; n > 1 {
			file = fmt.Sprintf("%s.%d.ndjson", name, n)
		}
		got, err := c.download(ctx, home, resolve(status, f.URL), filepath.Join(opts.OutDir, file), m.RequiresAccessToken)
		if err != nil {
			return err
		}
		got.Type, got.Name, got.Count, got.Error = f.Type, file, f.Count, isErr
		if f.Extension.SHA256 != "" && !strings.EqualFold(f.Extension.SHA256, got.SHA256) {
			return fmt.Errorf("%s: the download's SHA-256 %s is not the manifest's %s", file, got.SHA256, f.Extension.SHA256)
		}
		if !isErr {
			lines, err := countLines(filepath.Join(opts.OutDir, file))
			if err != nil {
				return err
			}
			if f.Count > 0 && lines != f.Count {
				return fmt.Errorf("%s: %d resources downloaded, the manifest says %d", file, lines, f.Count)
			}
			got.Count = lines
			out.Resources += lines
		}
		out.Files = append(out.Files, *got)
		return nil
	}
	for _, f := range m.Output {
		if err := fetch(f, false); err != nil {
			return nil, err
		}
	}
	for _, f := range m.Error {
		if err := fetch(f, true); err != nil {
			return nil, err
		}
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(opts.OutDir, "manifest.json"), append(raw, '\n'), 0o644); err != nil {
		return nil, err
	}
	var sums bytes.Buffer
	for _, f := range out.Files {
		fmt.Fprintf(&sums, "%s  %s\n", f.SHA256, f.Name)
	}
	if err := os.WriteFile(filepath.Join(opts.OutDir, "SHA256SUMS"), sums.Bytes(), 0o644); err != nil {
		return nil, err
	}
	c.progress(Event{Phase: "done", Message: fmt.Sprintf("%d resources in %d files", out.Resources, len(out.Files))})
	return out, nil
}

// poll polls the status URL until the manifest comes.
func (c *Client) poll(ctx context.Context, home, status string) (*Manifest, error) {
	lo, hi := c.pollBounds()
	last := ""
	for {
		res, err := c.do(ctx, home, http.MethodGet, status, nil, "application/json", nil)
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		res.Body.Close()
		switch res.StatusCode {
		case http.StatusOK:
			var m Manifest
			if err := json.Unmarshal(body, &m); err != nil {
				return nil, fmt.Errorf("the manifest is unreadable: %w", err)
			}
			return &m, nil
		case http.StatusAccepted, http.StatusTooManyRequests:
			if p := res.Header.Get("X-Progress"); p != "" && p != last {
				c.progress(Event{Phase: "waiting", Message: p})
				last = p
			}
			wait := retryAfter(res.Header.Get("Retry-After"), lo)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(min(max(wait, lo), hi)):
			}
		default:
			return nil, httpError(res.StatusCode, body)
		}
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(h string, def time.Duration) time.Duration {
	if h == "" {
		return def
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return time.Until(t)
	}
	return def
}

// download streams u into path (through a temporary file), computing its
// SHA-256. The token goes along when the manifest asks for it and u is
// at home (the origin the export was started at).
func (c *Client) download(ctx context.Context, home, u, path string, token bool) (*File, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c.credentials(req, home, token)
	req.Header.Set("Accept", "application/fhir+ndjson")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return nil, httpError(res.StatusCode, body)
	}
	h := sha256.New()
	pw := &progressWriter{c: c, name: filepath.Base(path), total: res.ContentLength}
	var n int64
	err = durable.WriteFile(path, func(w io.Writer) error {
		var err error
		n, err = io.Copy(io.MultiWriter(w, h, pw), res.Body)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", u, err)
	}
	pw.finish()
	return &File{URL: u, Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// progressWriter reports a transfer's bytes, at most every 256 KiB.
type progressWriter struct {
	c           *Client
	name        string
	done, total int64
	last        int64
	phase       string
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.done-p.last >= 256<<10 {
		p.last = p.done
		p.c.progress(Event{Phase: cmpOr(p.phase, "download"), Message: p.name, Done: p.done, Total: p.total})
	}
	return len(b), nil
}

func (p *progressWriter) finish() {
	p.c.progress(Event{Phase: cmpOr(p.phase, "download"), Message: p.name, Done: p.done, Total: max(p.total, p.done)})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *Client) do(ctx context.Context, home, method, u string, body io.Reader, accept string, headers map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	c.credentials(req, home, true)
	req.Header.Set("Accept", accept)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	return res, nil
}

// credentials adds Header, and the token when token is true, to a
// request for home (the origin an export or import was started at); a
// request anywhere else gets neither.
func (c *Client) credentials(req *http.Request, home string, token bool) {
	h := c.Header.Clone()
	if token && c.Token != "" {
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+c.Token)
	}
	egress.AtOrigin(req, home, h)
}

// httpError reads what an OperationOutcome says.
func httpError(status int, body []byte) error {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &oo) == nil && oo.ResourceType == "OperationOutcome" && len(oo.Issue) > 0 {
		var parts []string
		for _, is := range oo.Issue {
			parts = append(parts, cmpOr(is.Diagnostics, is.Code))
		}
		msg = strings.Join(parts, "; ")
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	return &Error{Status: status, Diagnostics: msg}
}

// resolve resolves ref against base.
func resolve(base, ref string) string {
	b, err := url.Parse(base)
	if err != nil {
		return ref
	}
	r, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return b.ResolveReference(r).String()
}

// validName accepts names that can be file names of a type's file.
func validName(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// countLines counts the non-empty lines of a file.
func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	n := 0
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			n++
		}
	}
	return n, sc.Err()
}

// ImportResult is the gateway's answer once an import is done.
type ImportResult struct {
	Job    string          `json:"job"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
	// Files and Resources say what was uploaded.
	Files     []string `json:"files"`
	Resources int      `json:"resources"`
}

// Import uploads the NDJSON files of dir (an export: its SHA256SUMS, when
// present, is checked first) into the caddy-pfr record whose FHIR base is
// recordBase (https://{slug}.{base}/fhir), through the gateway's import
// endpoint on its apex, and waits for the import to end.
func (c *Client) Import(ctx context.Context, recordBase, dir string, force bool) (*ImportResult, error) {
	endpoint, err := importEndpoint(recordBase)
	if err != nil {
		return nil, err
	}
	home := egress.Origin(endpoint)
	files, err := exportFiles(dir)
	if err != nil {
		return nil, err
	}
	out := &ImportResult{}
	var total int64
	var readers []io.Reader
	for _, f := range files {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		n, err := countLines(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		out.Files, out.Resources = append(out.Files, f), out.Resources+n
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		readers = append(readers, fh, strings.NewReader("\n"))
		total += st.Size() + 1
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no .ndjson files", dir)
	}
	if force {
		endpoint += "?force=true"
	}
	pw := &progressWriter{c: c, name: fmt.Sprintf("%d files, %d resources", len(files), out.Resources), total: total, phase: "upload"}
	body := io.TeeReader(io.MultiReader(readers...), pw)
	c.progress(Event{Phase: "upload", Message: "POST " + endpoint})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = total
	c.credentials(req, home, true)
	req.Header.Set("Content-Type", "application/fhir+ndjson")
	req.Header.Set("Accept", "application/json")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", endpoint, err)
	}
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	pw.finish()
	if res.StatusCode != http.StatusAccepted {
		return nil, httpError(res.StatusCode, raw)
	}
	status := res.Header.Get("Content-Location")
	if status == "" {
		return nil, errors.New("the import answered 202 without a Content-Location")
	}
	status = resolve(endpoint, status)
	c.progress(Event{Phase: "importing", Message: "import accepted; status at " + status})
	lo, hi := c.pollBounds()
	last := ""
	for {
		res, err := c.do(ctx, home, http.MethodGet, status, nil, "application/json", nil)
		if err != nil {
			return nil, err
		}
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		res.Body.Close()
		switch res.StatusCode {
		case http.StatusOK:
			var done ImportResult
			if err := json.Unmarshal(raw, &done); err != nil {
				return nil, fmt.Errorf("the import's answer is unreadable: %w", err)
			}
			done.Files, done.Resources = out.Files, out.Resources
			c.progress(Event{Phase: "done", Message: "import " + done.Status})
			return &done, nil
		case http.StatusAccepted:
			if p := res.Header.Get("X-Progress"); p != "" && p != last {
				c.progress(Event{Phase: "importing", Message: p})
				last = p
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(min(max(retryAfter(res.Header.Get("Retry-After"), lo), lo), hi)):
			}
		default:
			return nil, httpError(res.StatusCode, raw)
		}
	}
}

// importEndpoint derives the gateway's import endpoint from a record's
// FHIR base: https://john.pfr.example.com/fhir →
// https://pfr.example.com/pfr/v1/records/john/import.
func importEndpoint(recordBase string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(recordBase, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("--to must be a record's FHIR base URL (https://{slug}.{base}/fhir), not %q", recordBase)
	}
	host := u.Hostname()
	slug, apex, ok := strings.Cut(host, ".")
	if !ok || slug == "" || apex == "" {
		return "", fmt.Errorf("%q is not a record's address ({slug}.{base})", host)
	}
	if p := u.Port(); p != "" {
		apex += ":" + p
	}
	return u.Scheme + "://" + apex + "/pfr/v1/records/" + url.PathEscape(slug) + "/import", nil
}

// exportFiles lists the resource files of an export directory, checking
// SHA256SUMS when there is one: every file it names must match.
func exportFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() && strings.HasSuffix(n, ".ndjson") && !strings.HasPrefix(n, "errors-") && !strings.HasPrefix(n, ".") {
			files = append(files, n)
		}
	}
	slices.Sort(files)
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if errors.Is(err, os.ErrNotExist) {
		return files, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			return nil, fmt.Errorf("SHA256SUMS: a malformed line %q", line)
		}
		f, err := os.Open(filepath.Join(dir, filepath.Base(name)))
		if err != nil {
			return nil, fmt.Errorf("SHA256SUMS names %s: %w", name, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			return nil, fmt.Errorf("%s: SHA-256 %s, SHA256SUMS says %s: the export was changed or damaged", name, got, sum)
		}
	}
	return files, nil
}
