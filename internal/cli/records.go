package cli

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pfrgateway/caddy-pfr/egress"
)

const recordsUsage = `Usage: pfr records list [flags]
       pfr records show <slug> [flags]

Asks a running gateway's management API for the records you are a member of
(list), or for one of them (show), as the owner of the token sees them.

  --api <url>       the gateway's apex (default $PFR_API, else https://pfr.localhost:8443,
                    the quickstart's)
  --token <jwt>     your access token (default $PFR_TOKEN); for the quickstart:
                    pfr token --data-dir ./pfr-data --sub <you>
  --cacert <file>   the CA certificate to trust (default $PFR_CACERT; for a *.localhost
                    gateway, ./pfr-data/caddy/pki/authorities/local/root.crt when it exists)
  --insecure        do not verify the gateway's certificate
  --json            print the API's JSON instead of a table
  --timeout <d>     how long to wait for the answer (default 30s)

Examples:
  pfr records list --token "$TOKEN"
  pfr records show john --token "$TOKEN" --json
`

// quickstartCA is where the quickstart's Caddy keeps its local CA's root.
var quickstartCA = filepath.Join("pfr-data", "caddy", "pki", "authorities", "local", "root.crt")

func recordsCommand() *command {
	return &command{name: "records", usage: recordsUsage,
		short: "Lists your records or shows one, from a running gateway's management API",
		run:   runRecords}
}

// recordsFlags are the records command's options.
type recordsFlags struct {
	api, token, cacert string
	insecure, json     bool
	timeout            time.Duration
}

func runRecords(env *Env, args []string) int {
	fs := flag.NewFlagSet("records", flag.ContinueOnError)
	var f recordsFlags
	fs.StringVar(&f.api, "api", env.Getenv("PFR_API"), "")
	fs.StringVar(&f.token, "token", env.Getenv("PFR_TOKEN"), "")
	fs.StringVar(&f.cacert, "cacert", env.Getenv("PFR_CACERT"), "")
	fs.BoolVar(&f.insecure, "insecure", false, "")
	fs.BoolVar(&f.json, "json", false, "")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "")
	rest, err := parse(env, fs, recordsUsage, args)
	switch {
	case errors.Is(err, errHelp):
		return ExitOK
	case err != nil:
		return usageError(env, recordsUsage, "records: %v", err)
	case len(rest) == 0:
		return usageError(env, recordsUsage, "records: say list or show <slug>")
	}
	var path string
	switch {
	case rest[0] == "list" && len(rest) == 1:
		path = "/pfr/v1/records"
	case rest[0] == "show" && len(rest) == 2 && rest[1] != "":
		path = "/pfr/v1/records/" + url.PathEscape(rest[1])
	case rest[0] == "list" || rest[0] == "show":
		return usageError(env, recordsUsage, "records %s: wrong arguments %q", rest[0], rest[1:])
	default:
		return usageError(env, recordsUsage, "records: unknown subcommand %q (list or show)", rest[0])
	}
	if f.api == "" {
		f.api = "https://pfr.localhost:8443"
	}
	base, err := url.Parse(strings.TrimSuffix(f.api, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return usageError(env, recordsUsage, "records: --api must be an http(s) URL, not %q", f.api)
	}
	if f.token == "" {
		return usageError(env, recordsUsage, "records: no token: pass --token or set PFR_TOKEN")
	}
	client, err := f.client(base.Hostname())
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr records: %v\n", err)
		return ExitError
	}
	body, err := get(client, base.String()+path, f.token, f.timeout)
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr records: %v\n", err)
		return ExitError
	}
	if f.json {
		var out bytes.Buffer
		if json.Indent(&out, body, "", "  ") != nil {
			out.Reset()
			out.Write(body)
		}
		fmt.Fprintln(env.Stdout, strings.TrimSpace(out.String()))
		return ExitOK
	}
	if rest[0] == "list" {
		err = printList(env.Stdout, body)
	} else {
		err = printRecord(env.Stdout, body)
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr records: the gateway's answer is not what was expected: %v\n", err)
		return ExitError
	}
	return ExitOK
}

// client builds the HTTP client for host: the CA to trust, and *.localhost
// dialled on the loopback address.
func (f *recordsFlags) client(host string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	cacert := f.cacert
	if cacert == "" && egress.IsLocalhost(host) {
		if _, err := os.Stat(quickstartCA); err == nil {
			cacert = quickstartCA
		}
	}
	switch {
	case f.insecure:
		cfg.InsecureSkipVerify = true //nolint:gosec // asked for with --insecure
	case cacert != "":
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("reading the CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", cacert)
		}
		cfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: cfg,
		Proxy:           http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			h, port, err := net.SplitHostPort(addr)
			if err == nil && egress.IsLocalhost(h) {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	if egress.IsLocalhost(host) {
		tr.Proxy = nil
	}
	return &http.Client{Transport: tr}, nil
}

// get GETs url with the bearer token and returns a 200 answer's body; any
// other answer is an error naming the status and the OperationOutcome's
// diagnostics.
func get(client *http.Client, u, token string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the gateway (is it running?): %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", res.Status, diagnostics(body))
	}
	return body, nil
}

// diagnostics is what an OperationOutcome says, or the body's start.
func diagnostics(body []byte) string {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Diagnostics string `json:"diagnostics"`
			Code        string `json:"code"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) == nil && oo.ResourceType == "OperationOutcome" && len(oo.Issue) > 0 {
		var msgs []string
		for _, is := range oo.Issue {
			msgs = append(msgs, cmp.Or(is.Diagnostics, is.Code))
		}
		return strings.Join(msgs, "; ")
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// record is a record as the management API shows it.
type record struct {
	Slug         string `json:"slug"`
	FHIRBase     string `json:"fhirBase"`
	PatientID    string `json:"patientId"`
	Role         string `json:"role"`
	Relationship string `json:"relationship"`
	Status       string `json:"status"`
	Created      string `json:"created"`
}

// printList prints GET /pfr/v1/records as an aligned table.
func printList(w io.Writer, body []byte) error {
	var list struct {
		Records *[]record `json:"records"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return err
	}
	if list.Records == nil {
		return errors.New(`no "records" member`)
	}
	if len(*list.Records) == 0 {
		fmt.Fprintln(w, "no records yet (create one with POST /pfr/v1/records; see the README)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLUG\tROLE\tSTATUS\tPATIENT\tFHIR BASE")
	for _, r := range *list.Records {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Slug, r.Role, r.Status, r.PatientID, r.FHIRBase)
	}
	return tw.Flush()
}

// printRecord prints GET /pfr/v1/records/{slug} as aligned "name: value"
// lines, the known members first, then any others in name order.
func printRecord(w io.Writer, body []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(body, &all); err != nil {
		return err
	}
	if _, ok := all["slug"]; !ok {
		return errors.New(`no "slug" member`)
	}
	known := []string{"slug", "fhirBase", "patientId", "role", "relationship", "status", "created"}
	var others []string
	for k := range all {
		if !slices.Contains(known, k) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, k := range append(known, others...) {
		raw, ok := all[k]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			s = string(raw)
		}
		fmt.Fprintf(tw, "%s:\t%s\n", k, s)
	}
	return tw.Flush()
}
