package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/bulkclient"
)

const exportUsage = `Usage: pfr export --from <FHIR base> --out <dir> [flags]

Runs a FHIR Bulk Data export ($export) against any Bulk Data server (a
caddy-pfr record, HAPI FHIR, …): kick-off, polling, download of every file
into <dir> with its SHA-256, then manifest.json and SHA256SUMS beside them.
Progress goes to stderr; the summary to stdout. The token and the --header
headers go only to the --from server's origin: a status or file URL that a
manifest puts elsewhere gets neither.

  --from <url>      the FHIR base, e.g. https://john.pfr.example.com/fhir
  --out <dir>       where the files go (created)
  --token <jwt>     the access token (default $PFR_TOKEN)
  --type <types>    only these resource types (comma-separated, _type)
  --since <instant> only what changed after it (_since)
  --patient         Patient/$export (the Patient compartment) instead of $export
  --header <h: v>   send this header with every request to the --from server
                    (repeatable), e.g. "X-Request-Partition-IDs: 3" to export
                    partition 3 of a HAPI partitioned by header
  --poll-max <d>    poll the status at least this often, whatever the
                    server's Retry-After says (default 1m; HAPI says 120 s)
  --cacert <file>   the CA certificate to trust (default $PFR_CACERT)
  --insecure        do not verify the server's certificate
  --quiet           no progress on stderr
  --json            print the result as JSON
  --timeout <d>     give up after this long (default 1h)

Examples:
  pfr export --from https://john.pfr.localhost:8443/fhir --token "$TOKEN" --out ./john-export
  pfr export --from http://hapi.internal:8080/fhir --header "X-Request-Partition-IDs: 3" \
      --patient --type Observation,Condition --out ./partition-3
`

const importUsage = `Usage: pfr import --to <record FHIR base> --in <dir> [flags]

Uploads the NDJSON files of an export directory (made by pfr export, from
any Bulk Data server; its SHA256SUMS is checked first) into a caddy-pfr
record, through its gateway's import endpoint, and waits for the import:
the Patient must match the record's, references are rewritten, nothing is
written when anything fails. Progress goes to stderr; the result to stdout.

  --to <url>        the record's FHIR base, e.g. https://johnny.pfr.example.com/fhir
  --in <dir>        the export directory
  --token <jwt>     the access token of an owner or manager (default $PFR_TOKEN)
  --force           import although the Patient does not match
  --cacert <file>   the CA certificate to trust (default $PFR_CACERT)
  --insecure        do not verify the gateway's certificate
  --quiet           no progress on stderr
  --json            print the gateway's result as JSON
  --timeout <d>     give up after this long (default 1h)

Example:
  pfr import --to https://johnny.pfr.localhost:8443/fhir --token "$TOKEN" --in ./john-export
`

func exportCommand() *command {
	return &command{name: "export", usage: exportUsage,
		short: "Exports a FHIR server's data with Bulk Data $export into a directory of NDJSON files",
		run:   runExport}
}

func importCommand() *command {
	return &command{name: "import", usage: importUsage,
		short: "Imports an export directory into a record through its gateway",
		run:   runImport}
}

// bulkFlags are what export and import share.
type bulkFlags struct {
	recordsFlags
	quiet bool
}

func (f *bulkFlags) register(fs *flag.FlagSet, env *Env) {
	fs.StringVar(&f.token, "token", env.Getenv("PFR_TOKEN"), "")
	fs.StringVar(&f.cacert, "cacert", env.Getenv("PFR_CACERT"), "")
	fs.BoolVar(&f.insecure, "insecure", false, "")
	fs.BoolVar(&f.json, "json", false, "")
	fs.BoolVar(&f.quiet, "quiet", false, "")
	fs.DurationVar(&f.timeout, "timeout", time.Hour, "")
}

// client builds the Bulk Data client for the server at base.
func (f *bulkFlags) client(env *Env, base *url.URL, verb string) (*bulkclient.Client, error) {
	hc, err := f.recordsFlags.client(base.Hostname())
	if err != nil {
		return nil, err
	}
	c := &bulkclient.Client{HTTP: hc, Token: f.token}
	if !f.quiet {
		c.Progress = progressPrinter(env, verb)
	}
	return c, nil
}

// progressPrinter prints progress lines on stderr: one per step, and for
// transfers a bar with the bytes done.
func progressPrinter(env *Env, verb string) func(bulkclient.Event) {
	return func(e bulkclient.Event) {
		if e.Total > 0 || e.Done > 0 {
			bar := ""
			if e.Total > 0 {
				const width = 20
				n := int(e.Done * width / max(e.Total, 1))
				bar = "[" + strings.Repeat("#", min(n, width)) + strings.Repeat(" ", width-min(n, width)) + "] "
			}
			fmt.Fprintf(env.Stderr, "pfr %s: %s %s%s\n", verb, e.Phase, bar, sizeOf(e.Done)+" "+e.Message)
			return
		}
		fmt.Fprintf(env.Stderr, "pfr %s: %s: %s\n", verb, e.Phase, e.Message)
	}
}

func sizeOf(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// headerFlags collects --header "Name: value" flags.
type headerFlags http.Header

func (h *headerFlags) String() string { return "" }

func (h *headerFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") || strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("--header wants \"Name: value\", not %q", s)
	}
	if *h == nil {
		*h = headerFlags{}
	}
	http.Header(*h).Add(name, strings.TrimSpace(value))
	return nil
}

// httpURL parses a flag that must be an http(s) URL.
func httpURL(s string) (*url.URL, bool) {
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	return u, err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func runExport(env *Env, args []string) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	var f bulkFlags
	f.register(fs, env)
	var from, out, types, since string
	var patient bool
	var pollMax time.Duration
	fs.DurationVar(&pollMax, "poll-max", time.Minute, "")
	fs.StringVar(&from, "from", "", "")
	fs.StringVar(&out, "out", "", "")
	fs.StringVar(&types, "type", "", "")
	fs.StringVar(&since, "since", "", "")
	fs.BoolVar(&patient, "patient", false, "")
	var headers headerFlags
	fs.Var(&headers, "header", "")
	rest, err := parse(env, fs, exportUsage, args)
	switch {
	case errors.Is(err, errHelp):
		return ExitOK
	case err != nil:
		return usageError(env, exportUsage, "export: %v", err)
	case len(rest) > 0:
		return usageError(env, exportUsage, "export: unexpected arguments %q", rest)
	case from == "" || out == "":
		return usageError(env, exportUsage, "export: --from and --out are required")
	case pollMax <= 0:
		return usageError(env, exportUsage, "export: --poll-max must be a positive duration")
	}
	base, ok := httpURL(from)
	if !ok {
		return usageError(env, exportUsage, "export: --from must be an http(s) URL, not %q", from)
	}
	c, err := f.client(env, base, "export")
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr export: %v\n", err)
		return ExitError
	}
	c.Header = http.Header(headers)
	c.PollMin, c.PollMax = min(time.Second, pollMax), pollMax
	opts := bulkclient.ExportOptions{Patient: patient, Since: since, OutDir: out}
	if types != "" {
		opts.Types = strings.Split(types, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	res, err := c.Export(ctx, base.String(), opts)
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr export: %v\n", err)
		return ExitError
	}
	if f.json {
		raw, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(env.Stdout, string(raw))
		return ExitOK
	}
	fmt.Fprintf(env.Stdout, "exported %d resources as of %s into %s\n", res.Resources, res.TransactionTime, res.Dir)
	for _, file := range res.Files {
		fmt.Fprintf(env.Stdout, "  %-40s %8d resources  %s\n", file.Name, file.Count, file.SHA256)
	}
	return ExitOK
}

func runImport(env *Env, args []string) int {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	var f bulkFlags
	f.register(fs, env)
	var to, in string
	var force bool
	fs.StringVar(&to, "to", "", "")
	fs.StringVar(&in, "in", "", "")
	fs.BoolVar(&force, "force", false, "")
	rest, err := parse(env, fs, importUsage, args)
	switch {
	case errors.Is(err, errHelp):
		return ExitOK
	case err != nil:
		return usageError(env, importUsage, "import: %v", err)
	case len(rest) > 0:
		return usageError(env, importUsage, "import: unexpected arguments %q", rest)
	case to == "" || in == "":
		return usageError(env, importUsage, "import: --to and --in are required")
	case f.token == "":
		return usageError(env, importUsage, "import: no token: pass --token or set PFR_TOKEN")
	}
	base, ok := httpURL(to)
	if !ok {
		return usageError(env, importUsage, "import: --to must be an http(s) URL, not %q", to)
	}
	c, err := f.client(env, base, "import")
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr import: %v\n", err)
		return ExitError
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	res, err := c.Import(ctx, base.String(), in, force)
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr import: %v\n", err)
		return ExitError
	}
	if f.json {
		raw, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(env.Stdout, string(raw))
		return ExitOK
	}
	var result struct {
		Status   string `json:"status"`
		Imported int    `json:"imported"`
		Resumed  bool   `json:"resumed"`
		Report   struct {
			Skipped []json.RawMessage `json:"skipped"`
			Logical []json.RawMessage `json:"logical"`
		} `json:"report"`
	}
	_ = json.Unmarshal(res.Result, &result)
	fmt.Fprintf(env.Stdout, "imported %d of %d resources from %d files into %s (%s; %d skipped, %d references made logical)\n",
		result.Imported, res.Resources, len(res.Files), base, result.Status, len(result.Report.Skipped), len(result.Report.Logical))
	return ExitOK
}
