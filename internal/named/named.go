// Package named runs BIND's named (Debian's bind9 package) as a child
// process for tests and benchmarks: authoritative for one zone, on a free
// loopback port, accepting RFC 2136 dynamic updates signed with a TSIG key
// it generates, with everything it writes in a directory of its own. The
// process gets SIGKILL when the process that started it dies (Linux
// parent-death signal), so a crashed test never leaves it running.
//
// It knows nothing of ACME or Caddy: it is a DNS server and nothing else.
package named

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/pfrgateway/caddy-pfr/internal/childproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// Install is how scripts/test.sh installs named when it is missing.
const Install = "apt-get install -y bind9"

// KeyAlgorithm is the TSIG algorithm of the generated key.
const KeyAlgorithm = "hmac-sha256"

// Options says what the server serves.
type Options struct {
	// The zone it is authoritative for, e.g. "pfr.localhost". Required.
	Zone string

	// Extra zone-file lines after the SOA and NS records, relative to the
	// zone (e.g. "www 60 IN A 127.0.0.1").
	Records []string

	// The names the key may update, as BIND update-policy rules after
	// "grant <key>" (default "zonesub ANY": any name in the zone, any type).
	Grant string

	// Where named's files go. Required; the caller removes it.
	Dir string
}

// Server is a running named.
type Server struct {
	Addr      string // 127.0.0.1:port, UDP and TCP
	Zone      string // the zone, fully qualified (with the final dot)
	KeyName   string // the TSIG key's name, fully qualified
	KeySecret string // its secret, base64

	*childproc.Process // Output, Stop
}

// Binary finds named on PATH or in /usr/sbin (where Debian puts it, often
// outside a non-root PATH).
func Binary() (string, error) {
	if bin, err := exec.LookPath("named"); err == nil {
		return bin, nil
	}
	const debian = "/usr/sbin/named"
	if info, err := os.Stat(debian); err == nil && !info.IsDir() {
		return debian, nil
	}
	return "", fmt.Errorf("named (BIND) is not installed: %s (scripts/test.sh does)", Install)
}

// Start writes the configuration, the zone and a fresh TSIG key into
// opts.Dir, starts named on a free loopback port and waits (bounded) until
// it answers for the zone. Cancelling ctx kills it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.Zone == "" || opts.Dir == "" {
		return nil, errors.New("named: Zone and Dir are required")
	}
	grant := opts.Grant
	if grant == "" {
		grant = "zonesub ANY"
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("named: generating the TSIG secret: %w", err)
	}
	s := &Server{
		Zone:      dns.Fqdn(strings.ToLower(opts.Zone)),
		KeyName:   "pfr-acme-update.",
		KeySecret: base64.StdEncoding.EncodeToString(secret),
	}
	port, err := testkit.FreeUDPAndTCPPort()
	if err != nil {
		return nil, err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	zoneFile := filepath.Join(opts.Dir, "zone.db")
	zone := fmt.Sprintf("$ORIGIN %s\n$TTL 60\n@ IN SOA ns.%[1]s hostmaster.%[1]s 1 60 60 600 1\n@ IN NS ns.%[1]s\nns IN A 127.0.0.1\n%s\n",
		s.Zone, strings.Join(opts.Records, "\n"))
	// BIND names the key with or without the final dot alike.
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	pid-file none;
	session-keyfile none;
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
key %[3]q {
	algorithm %[4]s;
	secret %[5]q;
};
zone %[6]q {
	type primary;
	file %[7]q;
	update-policy { grant %[3]s %[8]s; };
};
`, opts.Dir, port, s.KeyName, KeyAlgorithm, s.KeySecret, s.Zone, zoneFile, grant)
	confFile := filepath.Join(opts.Dir, "named.conf")
	for file, text := range map[string]string{zoneFile: zone, confFile: conf} {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("named: %w", err)
		}
	}

	// -g: foreground, log to stderr; -n 1: one worker thread (the machine
	// is shared); named stays the user it is started as (no -u).
	cmd := exec.CommandContext(ctx, bin, "-g", "-n", "1", "-c", confFile)
	cmd.Dir = opts.Dir
	if s.Process, err = childproc.Start(cmd); err != nil {
		return nil, fmt.Errorf("named: %w", err)
	}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\nnamed's output:\n%s", err, s.Output())
	}
	return s, nil
}

// waitReady queries the zone's SOA until named answers it with authority.
func (s *Server) waitReady(ctx context.Context) error {
	var lastErr error
	for range 200 {
		select {
		case <-s.Exited():
			return fmt.Errorf("named exited before it was ready (%v)", s.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		r, err := s.Query(ctx, s.Zone, dns.TypeSOA)
		if err == nil && r.Authoritative && len(r.Answer) == 1 {
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("named on %s did not answer for %s: %v", s.Addr, s.Zone, lastErr)
}

// Query asks the server (unsigned, no recursion) for name's records of
// type qtype, over UDP and again over TCP when the answer is truncated.
func (s *Server) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, s.Addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, s.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("querying %s %s at %s: %w", name, dns.TypeToString[qtype], s.Addr, err)
	}
	return r, nil
}

// TXT returns the texts of name's TXT records (each record's strings
// joined), as the server answers now.
func (s *Server) TXT(ctx context.Context, name string) ([]string, error) {
	r, err := s.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("querying %s TXT: %s", name, dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out, nil
}

// Serial returns the zone's SOA serial: BIND raises it on every update it
// applies.
func (s *Server) Serial(ctx context.Context) (uint32, error) {
	r, err := s.Query(ctx, s.Zone, dns.TypeSOA)
	if err != nil {
		return 0, err
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("no SOA for %s in %v", s.Zone, r)
}
