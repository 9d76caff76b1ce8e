package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// fakeCaddy records what is handed to Caddy.
type fakeCaddy struct{ calls [][]string }

func (f *fakeCaddy) run(args []string) int {
	f.calls = append(f.calls, slices.Clone(args))
	return 0
}

// runCLI runs Run with args and returns the exit code and both outputs.
func runCLI(t *testing.T, args []string, env map[string]string) (int, string, string, *fakeCaddy) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	caddy := &fakeCaddy{}
	code := Run(args, &Env{
		Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string { return env[k] },
		CaddyCommands: map[string]string{
			"run": "Starts the Caddy process and blocks indefinitely", "adapt": "Adapts a configuration",
			"version": "Prints the version", "token": "Prints an access token", "migrate": "Brings the schema up to date",
			"reload": "Changes the config",
		},
		Caddy:   caddy.run,
		Version: "caddy-pfr test\nCaddy v2.11.9",
	})
	return code, stdout.String(), stderr.String(), caddy
}

func TestHelpListsOurCommandsFirst(t *testing.T) {
	code, out, _, _ := runCLI(t, []string{"--help"}, nil)
	if code != ExitOK {
		t.Fatalf("--help: exit %d", code)
	}
	ours, caddys, ok := strings.Cut(out, "Caddy's commands:")
	if !ok || !strings.Contains(ours, "caddy-pfr's commands:") {
		t.Fatalf("help has no caddy-pfr section before Caddy's:\n%s", out)
	}
	// Ours in their order (migrate is registered with Caddy but is ours).
	last := -1
	for _, name := range []string{"run", "token", "records", "migrate", "version"} {
		i := strings.Index(ours, "\n  "+name+" ")
		if i < 0 || i < last {
			t.Errorf("%q missing or out of order in caddy-pfr's commands:\n%s", name, ours)
		}
		last = i
	}
	for _, name := range []string{"adapt", "reload"} {
		if !strings.Contains(caddys, "\n  "+name+" ") {
			t.Errorf("Caddy's %q missing from its section:\n%s", name, caddys)
		}
	}
	for _, name := range []string{"run", "token", "migrate", "version"} {
		if strings.Contains(caddys, "\n  "+name+" ") {
			t.Errorf("%q listed twice (also under Caddy's commands)", name)
		}
	}
	// No arguments: the same help, as a usage error.
	code, out, errOut, _ := runCLI(t, nil, nil)
	if code != ExitUsage || out != "" || !strings.Contains(errOut, "caddy-pfr's commands:") {
		t.Errorf("no arguments: exit %d, stdout %q, stderr %q; want 2 and the help on stderr", code, out, errOut)
	}
	// export and import show among ours once registered with Caddy.
	var stdout bytes.Buffer
	Run([]string{"help"}, &Env{Stdout: &stdout, Stderr: &stdout, CaddyCommands: map[string]string{
		"export": "Exports a record", "import": "Imports a record", "adapt": "Adapts"}, Caddy: (&fakeCaddy{}).run})
	ours, _, _ = strings.Cut(stdout.String(), "Caddy's commands:")
	if !strings.Contains(ours, "\n  export ") || !strings.Contains(ours, "\n  import ") {
		t.Errorf("export/import are not among caddy-pfr's commands:\n%s", stdout.String())
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"token"}, // no flags: its usage
		{"token", "--bogus"},
		{"token", "--data-dir", "x"},
		{"token", "--sub", "john"},
		{"token", "--data-dir", "x", "--sub", "john", "extra"},
		{"token", "--data-dir", "x", "--sub", "john", "--ttl", "-1h"},
		{"token", "--data-dir", "x", "--sub", "john", "--ttl", "soon"},
		{"records"},
		{"records", "delete", "john"},
		{"records", "list", "extra"},
		{"records", "show"},
		{"records", "show", "a", "b"},
		{"records", "list", "--bogus"},
		{"records", "list"}, // no token
		{"records", "list", "--token", "t", "--api", "ftp://x"},
		{"export"},
		{"export", "--from", "https://x.example/fhir"},
		{"export", "--from", "ftp://x", "--out", "d"},
		{"export", "--from", "https://x.example/fhir", "--out", "d", "extra"},
		{"export", "--from", "https://x.example/fhir", "--out", "d", "--header", "no colon"},
		{"import"},
		{"import", "--to", "https://x.example/fhir", "--in", "d"}, // no token
		{"import", "--to", "nourl", "--in", "d", "--token", "t"},
		{"version", "extra"},
		{"nosuchcommand"},
		{"help", "nosuchcommand"},
	} {
		code, out, errOut, caddy := runCLI(t, args, nil)
		if code != ExitUsage {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: no usage on stderr:\n%s", args, errOut)
		}
		if out != "" || len(caddy.calls) > 0 {
			t.Errorf("%q: printed %q to stdout or ran Caddy %v", args, out, caddy.calls)
		}
	}
}

func TestOwnHelpAndCaddysCommands(t *testing.T) {
	for _, args := range [][]string{{"token", "--help"}, {"token", "-h"}, {"help", "token"}, {"records", "--help"}, {"help", "records"}} {
		code, out, _, _ := runCLI(t, args, nil)
		if code != ExitOK || !strings.HasPrefix(out, "Usage: pfr "+args[len(args)-1]) && !strings.HasPrefix(out, "Usage: pfr "+args[0]) {
			t.Errorf("%q: exit %d, stdout %q; want its usage", args, code, out)
		}
	}
	code, out, _, _ := runCLI(t, []string{"version"}, nil)
	if code != ExitOK || out != "caddy-pfr test\nCaddy v2.11.9\n" {
		t.Errorf("version: %d %q", code, out)
	}
	for _, args := range [][]string{{"run", "--config", "Caddyfile.example"}, {"adapt", "--config", "x"}, {"migrate"}, {"help", "reload"}} {
		_, _, _, caddy := runCLI(t, args, nil)
		if len(caddy.calls) != 1 || !slices.Equal(caddy.calls[0], args) {
			t.Errorf("%q: handed to Caddy as %v, want exactly the arguments", args, caddy.calls)
		}
	}
}

func TestTokenMintsFromTheDataDir(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut, _ := runCLI(t, []string{"token", "--sub", "john", "--data-dir", dir, "--scope", "patient/*.rs", "--aud", "a", "--aud", "b"}, nil)
	if code != ExitOK {
		t.Fatalf("token: exit %d: %s", code, errOut)
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSpace(out), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", out)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss, Sub, Scope string
		Aud             []string
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != dev.Issuer() || claims.Sub != "john" || claims.Scope != "patient/*.rs" || !slices.Equal(claims.Aud, []string{"a", "b"}) {
		t.Errorf("claims %+v; want iss %s, sub john, the scope and both audiences", claims, dev.Issuer())
	}
}

// gatewayStub is a TLS server standing in for the management API, to see
// the exact request the CLI sends and give its answers.
func gatewayStub(t *testing.T, handler http.HandlerFunc) (api, cacert string) {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	cacert = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(cacert, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	// httptest's certificate names example.com and 127.0.0.1; pfr.localhost
	// is dialled on the loopback address by the CLI but verified by name,
	// so the stub is reached as 127.0.0.1 here and as a .localhost name in
	// TestRecordsDialsLocalhostNames.
	return "https://127.0.0.1:" + port, cacert
}

const listAnswer = `{"records":[{"slug":"john","fhirBase":"https://john.pfr.localhost:8443/fhir","patientId":"p-1","role":"owner","relationship":"self","status":"active","created":"2026-12-03T17:00:00Z"},{"slug":"anna-maria","fhirBase":"https://anna-maria.pfr.localhost:8443/fhir","patientId":"p-22","role":"viewer","status":"active","created":"2026-12-03T17:01:00Z"}]}`

func TestRecordsListAndShow(t *testing.T) {
	var seen []string
	api, ca := gatewayStub(t, func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/pfr/v1/records":
			fmt.Fprint(w, listAnswer)
		case "/pfr/v1/records/john":
			fmt.Fprint(w, `{"slug":"john","fhirBase":"https://john.pfr.localhost:8443/fhir","patientId":"p-1","role":"owner","status":"active","created":"2026-12-03T17:00:00Z","extra":{"x":1}}`)
		default:
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"no record \"x\""}]}`)
		}
	})
	flags := []string{"--api", api, "--cacert", ca}

	code, out, errOut, _ := runCLI(t, append([]string{"records", "list"}, flags...), map[string]string{"PFR_TOKEN": "tok-env"})
	want := "SLUG        ROLE    STATUS  PATIENT  FHIR BASE\n" +
		"john        owner   active  p-1      https://john.pfr.localhost:8443/fhir\n" +
		"anna-maria  viewer  active  p-22     https://anna-maria.pfr.localhost:8443/fhir\n"
	if code != ExitOK || out != want {
		t.Errorf("records list: exit %d\n%s\nwant:\n%s%s", code, out, want, errOut)
	}
	code, out, _, _ = runCLI(t, append([]string{"records", "show", "john", "--token", "tok-flag"}, flags...), map[string]string{"PFR_TOKEN": "tok-env"})
	want = "slug:      john\nfhirBase:  https://john.pfr.localhost:8443/fhir\npatientId: p-1\nrole:      owner\nstatus:    active\ncreated:   2026-12-03T17:00:00Z\nextra:     {\"x\":1}\n"
	if code != ExitOK || out != want {
		t.Errorf("records show: exit %d\n%s\nwant:\n%s", code, out, want)
	}
	code, out, _, _ = runCLI(t, append([]string{"records", "list", "--json", "--token", "t"}, flags...), nil)
	var round map[string]any
	if code != ExitOK || json.Unmarshal([]byte(out), &round) != nil || !strings.Contains(out, "\n  \"records\": [") {
		t.Errorf("records list --json: exit %d, not indented JSON:\n%s", code, out)
	}
	code, out, errOut, _ = runCLI(t, append([]string{"records", "show", "x", "--token", "t"}, flags...), nil)
	if code != ExitError || out != "" || !strings.Contains(errOut, "404 Not Found: no record \"x\"") {
		t.Errorf("records show x: exit %d, stdout %q, stderr %q; want 1 and the OperationOutcome's diagnostics", code, out, errOut)
	}
	wantSeen := []string{"GET /pfr/v1/records Bearer tok-env", "GET /pfr/v1/records/john Bearer tok-flag",
		"GET /pfr/v1/records Bearer t", "GET /pfr/v1/records/x Bearer t"}
	if !slices.Equal(seen, wantSeen) {
		t.Errorf("requests %q, want %q", seen, wantSeen)
	}

	// Without the CA the gateway's certificate is refused; a gateway that
	// is not there is an error, not a usage error.
	if code, _, errOut, _ = runCLI(t, []string{"records", "list", "--token", "t", "--api", api}, nil); code != ExitError || !strings.Contains(errOut, "certificate") {
		t.Errorf("unknown CA: exit %d, %s", code, errOut)
	}
	closed := testkit.Reserve(t).Addr() // held, never listening: refused, and nobody else's
	if code, _, errOut, _ = runCLI(t, []string{"records", "list", "--token", "t", "--api", "https://" + closed}, nil); code != ExitError || !strings.Contains(errOut, "is it running?") {
		t.Errorf("no gateway: exit %d, %s", code, errOut)
	}
}

func TestRecordsListEmpty(t *testing.T) {
	api, ca := gatewayStub(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"records":[]}`) })
	code, out, _, _ := runCLI(t, []string{"records", "list", "--token", "t", "--api", api, "--cacert", ca}, nil)
	if code != ExitOK || !strings.HasPrefix(out, "no records yet") {
		t.Errorf("empty list: %d %q", code, out)
	}
}

func TestRecordsDialsLocalhostNames(t *testing.T) {
	// A .localhost name is the loopback address (RFC 6761) whatever the
	// resolver says; with --insecure the stub's certificate (which does not
	// name pfr.localhost) is accepted.
	api, _ := gatewayStub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Host != strings.TrimPrefix(r.Host, "pfr.localhost") {
			fmt.Fprint(w, `{"records":[]}`)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
	})
	localAPI := strings.Replace(api, "127.0.0.1", "pfr.localhost", 1)
	code, out, errOut, _ := runCLI(t, []string{"records", "list", "--token", "t", "--api", localAPI, "--insecure"}, nil)
	if code != ExitOK || !strings.HasPrefix(out, "no records yet") {
		t.Errorf("records list on %s: %d %q %s", localAPI, code, out, errOut)
	}
}

func TestCaddysUsageErrorsExitTwo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	caddy := &fakeCaddy{}
	env := &Env{Stdout: &stdout, Stderr: &stderr, CaddyCommands: map[string]string{"adapt": "Adapts"}, Caddy: caddy.run,
		CheckCaddyArgs: func(args []string) (string, error) {
			if slices.Contains(args, "--bogus") {
				return "Usage: pfr adapt --config <path>\n", fmt.Errorf("unknown flag: --bogus")
			}
			return "", nil
		}}
	if code := Run([]string{"adapt", "--bogus"}, env); code != ExitUsage || len(caddy.calls) != 0 ||
		!strings.Contains(stderr.String(), "adapt: unknown flag: --bogus") || !strings.Contains(stderr.String(), "Usage: pfr adapt") {
		t.Errorf("a usage error of Caddy's adapt: exit %d, Caddy ran %v, stderr %q", code, caddy.calls, stderr.String())
	}
	if code := Run([]string{"adapt", "--config", "x"}, env); code != ExitOK || len(caddy.calls) != 1 {
		t.Errorf("good arguments: exit %d, Caddy ran %v", code, caddy.calls)
	}
}
