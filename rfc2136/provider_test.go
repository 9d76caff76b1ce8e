package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"

	"github.com/pfrgateway/caddy-pfr/internal/named"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const zone = "pfr.localhost."

// startNamed runs a real BIND authoritative for zone, whose key may change
// what grant says (BIND update-policy rules; "" is any name, any type), and
// a Provider holding that key.
func startNamed(t *testing.T, grant string) (*named.Server, *Provider) {
	testkit.Needs(t, "BIND (named)")
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := named.Start(ctx, named.Options{
		Zone:    zone,
		Dir:     t.TempDir(),
		Grant:   grant,
		Records: []string{"www 60 IN A 127.0.0.1", `split 60 IN TXT "abc" "def"`},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		srv.Stop()
		if t.Failed() {
			t.Logf("named's output:\n%s", srv.Output())
		}
	})
	return srv, &Provider{Server: srv.Addr, KeyName: srv.KeyName, KeyAlgorithm: named.KeyAlgorithm, KeySecret: srv.KeySecret, Timeout: 5 * time.Second}
}

func serial(t *testing.T, srv *named.Server) uint32 {
	t.Helper()
	s, err := srv.Serial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func txt(t *testing.T, srv *named.Server, name string) []string {
	t.Helper()
	got, err := srv.TXT(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

// TestAppendAndDeleteTXT does what an ACME DNS-01 solver does for a name
// and its wildcard at once: two TXT records on the same name, removed one
// by one by value.
func TestAppendAndDeleteTXT(t *testing.T) {
	srv, p := startNamed(t, "")
	ctx := context.Background()
	before := serial(t, srv)
	name := "_acme-challenge." + zone

	for _, value := range []string{"token-for-apex", "token-for-wildcard"} {
		got, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge", TTL: 30 * time.Second, Text: value}})
		if err != nil {
			t.Fatalf("append %s: %v", value, err)
		}
		want := []libdns.Record{libdns.TXT{Name: "_acme-challenge", TTL: 30 * time.Second, Text: value}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("append returned %#v, want %#v", got, want)
		}
	}
	if got := txt(t, srv, name); !slices.Equal(got, []string{"token-for-apex", "token-for-wildcard"}) {
		t.Fatalf("TXT %s = %q after two appends", name, got)
	}
	if after := serial(t, srv); after != before+2 {
		t.Errorf("serial went from %d to %d, want two updates", before, after)
	}

	deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "token-for-apex"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0].RR().Data != "token-for-apex" {
		t.Errorf("delete returned %v, want the apex token only", deleted)
	}
	if got := txt(t, srv, name); !slices.Equal(got, []string{"token-for-wildcard"}) {
		t.Errorf("TXT %s = %q after deleting the apex token", name, got)
	}

	// Deleting what is not there changes nothing and reports nothing.
	s := serial(t, srv)
	deleted, err = p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "token-for-apex"}})
	if err != nil || len(deleted) != 0 {
		t.Errorf("deleting a missing record: %v, %v", deleted, err)
	}
	if serial(t, srv) != s {
		t.Errorf("deleting a missing record sent an update")
	}

	// A TTL that differs protects the record; no TTL and no data match any.
	deleted, err = p.DeleteRecords(ctx, zone, []libdns.Record{libdns.RR{Name: "_acme-challenge", Type: "TXT", TTL: time.Hour}})
	if err != nil || len(deleted) != 0 {
		t.Errorf("delete with another TTL removed %v (%v)", deleted, err)
	}
	deleted, err = p.DeleteRecords(ctx, zone, []libdns.Record{libdns.RR{Name: "_acme-challenge", Type: "TXT"}})
	if err != nil || len(deleted) != 1 || deleted[0].RR().Data != "token-for-wildcard" {
		t.Errorf("delete of the whole TXT set returned %v, %v", deleted, err)
	}
	if got := txt(t, srv, name); len(got) != 0 {
		t.Errorf("TXT %s = %q after deleting the set", name, got)
	}
}

// TestTXTBytesSurvive: libdns TXT text is raw; quotes, backslashes, bytes
// outside ASCII and texts longer than one 255-byte string reach the server
// as they are and come back the same.
func TestTXTBytesSurvive(t *testing.T) {
	srv, p := startNamed(t, "")
	ctx := context.Background()
	long := strings.Repeat("0123456789", 60) // 600 bytes: three strings
	for i, text := range []string{`say "hi" \ back`, "caf\u00e9 \x01;", long, ""} {
		name := fmt.Sprintf("t%d", i)
		if _, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: name, Text: text}}); err != nil {
			t.Fatalf("append %q: %v", text, err)
		}
		r, err := srv.Query(ctx, name+"."+zone, dns.TypeTXT)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query %s: %v %v", name, r, err)
		}
		strs := r.Answer[0].(*dns.TXT).Txt
		var wireLen int
		for _, s := range strs {
			// miekg/dns presents bytes outside printable ASCII as \DDD and
			// escapes quotes and backslashes with one backslash each.
			raw := strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\195`, "\xc3", `\169`, "\xa9", `\001`, "\x01").Replace(s)
			if len(raw) > 255 {
				t.Errorf("%s: a character-string of %d bytes", name, len(raw))
			}
			wireLen += len(raw)
		}
		if wireLen != len(text) {
			t.Errorf("%s: the server holds %d bytes in %d strings %q, want %d", name, wireLen, len(strs), strs, len(text))
		}
		deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: name, Text: text}})
		if err != nil || len(deleted) != 1 || deleted[0].(libdns.TXT).Text != text {
			t.Errorf("delete %q by its text returned %#v, %v", text, deleted, err)
		}
	}
	// A TXT record another tool split into two strings is one text.
	deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "split", Text: "abcdef"}})
	if err != nil || len(deleted) != 1 || deleted[0].(libdns.TXT).Text != "abcdef" {
		t.Errorf("delete of a two-string TXT by its whole text returned %#v, %v", deleted, err)
	}
	if got := txt(t, srv, "split."+zone); len(got) != 0 {
		t.Errorf("split TXT still there: %q", got)
	}
	if strs := escapeTXT(`a"b\c` + "\xff"); strs != `a\"b\\c\255` {
		t.Errorf("escapeTXT = %q", strs)
	}
}

// TestOtherTypesAndAtomicity: records other than TXT are zone-file data;
// one call is one update, applied whole or not at all.
func TestOtherTypesAndAtomicity(t *testing.T) {
	// The key may add TXT and A records, nothing else.
	srv, p := startNamed(t, "zonesub TXT; grant pfr-acme-update. zonesub A")
	ctx := context.Background()

	got, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.RR{Name: "alice", Type: "A", TTL: time.Minute, Data: "127.0.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if addr, ok := got[0].(libdns.Address); !ok || addr.IP.String() != "127.0.0.7" || addr.Name != "alice" {
		t.Errorf("append A returned %#v, want a libdns.Address", got[0])
	}
	r, err := srv.Query(ctx, "alice."+zone, dns.TypeA)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.7" {
		t.Errorf("alice A: %v %v", r, err)
	}

	before := serial(t, srv)
	_, err = p.AppendRecords(ctx, zone, []libdns.Record{
		libdns.TXT{Name: "bob", Text: "allowed"},
		libdns.RR{Name: "bob", Type: "CNAME", Data: "www." + zone}, // the key may not add CNAMEs
	})
	if !errors.Is(err, ErrUpdate) || !strings.Contains(err.Error(), "REFUSED") {
		t.Fatalf("an update with a forbidden record: %v, want REFUSED", err)
	}
	if got := txt(t, srv, "bob."+zone); len(got) != 0 || serial(t, srv) != before {
		t.Errorf("a refused update left bob's TXT %q, serial %d→%d", got, before, serial(t, srv))
	}

	deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{libdns.RR{Name: "alice"}})
	if err != nil || len(deleted) != 1 || deleted[0].RR().Type != "A" {
		t.Errorf("delete by name returned %v, %v", deleted, err)
	}
}

// TestRefusals: a wrong key, a name outside the zone, bad data and a server
// that is down are errors, and nothing changes.
func TestRefusals(t *testing.T) {
	srv, p := startNamed(t, "")
	ctx := context.Background()
	before := serial(t, srv)
	rec := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "x"}}

	wrongSecret := *p
	wrongSecret.KeySecret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U="
	wrongName := *p
	wrongName.KeyName = "someone-else"
	wrongAlgo := *p
	wrongAlgo.KeyAlgorithm = "hmac-sha512"
	for what, bad := range map[string]*Provider{"wrong secret": &wrongSecret, "unknown key": &wrongName, "wrong algorithm": &wrongAlgo} {
		if _, err := bad.AppendRecords(ctx, zone, rec); !errors.Is(err, ErrUpdate) {
			t.Errorf("%s: append gave %v, want ErrUpdate", what, err)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}

	for _, r := range []libdns.Record{
		libdns.TXT{Name: "x.example.com.", Text: "outside"},
		libdns.RR{Name: "a", Type: "A", Data: "not-an-address"},
		libdns.RR{Name: "a", Type: "NOPE", Data: "1"},
		libdns.RR{Name: "a", Type: "A", Data: "127.0.0.1\nb 60 IN A 127.0.0.2"},
		libdns.TXT{Name: "", Text: "no name"},
	} {
		if _, err := p.AppendRecords(ctx, zone, []libdns.Record{r}); !errors.Is(err, ErrConfig) {
			t.Errorf("append %#v: %v, want ErrConfig", r, err)
		}
	}
	if s := serial(t, srv); s != before {
		t.Errorf("refused updates changed the zone (serial %d→%d)", before, s)
	}

	// A server that is down: the error comes within the timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := *p
	down.Server = l.Addr().String()
	down.Timeout = time.Second
	l.Close()
	if _, err := down.AppendRecords(ctx, zone, rec); !errors.Is(err, ErrUpdate) {
		t.Errorf("server down: %v, want ErrUpdate", err)
	}
}

func TestValidate(t *testing.T) {
	good := Provider{Server: "ns1.example.com", KeyName: "acme", KeySecret: "c2VjcmV0"}
	if err := good.Validate(); err != nil {
		t.Fatalf("a minimal provider: %v", err)
	}
	if addr, _ := good.serverAddr(); addr != "ns1.example.com:53" {
		t.Errorf("server without a port: %s, want port 53", addr)
	}
	v6 := Provider{Server: "[2001:db8::1]", KeyName: "acme", KeySecret: "c2VjcmV0"}
	if addr, err := v6.serverAddr(); err != nil || addr != "[2001:db8::1]:53" {
		t.Errorf("IPv6 server without a port: %s, %v", addr, err)
	}
	for name, p := range map[string]Provider{
		"no server":      {KeyName: "acme", KeySecret: "c2VjcmV0"},
		"no key name":    {Server: "ns1", KeySecret: "c2VjcmV0"},
		"bad key name":   {Server: "ns1", KeyName: "a..b", KeySecret: "c2VjcmV0"},
		"no secret":      {Server: "ns1", KeyName: "acme"},
		"secret not b64": {Server: "ns1", KeyName: "acme", KeySecret: "not base64!"},
		"md5":            {Server: "ns1", KeyName: "acme", KeySecret: "c2VjcmV0", KeyAlgorithm: "hmac-md5"},
		"no port":        {Server: "ns1:", KeyName: "acme", KeySecret: "c2VjcmV0"},
		"negative":       {Server: "ns1", KeyName: "acme", KeySecret: "c2VjcmV0", Timeout: -time.Second},
	} {
		if err := p.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", name, err)
		}
	}
	for _, algo := range []string{"HMAC-SHA256.", "hmac-sha1", "hmac-sha224", "hmac-sha384", "hmac-sha512", ""} {
		p := good
		p.KeyAlgorithm = algo
		if err := p.Validate(); err != nil {
			t.Errorf("algorithm %q: %v", algo, err)
		}
	}
}

// TestConcurrentAppends: the provider is used by concurrent ACME orders.
func TestConcurrentAppends(t *testing.T) {
	srv, p := startNamed(t, "")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			_, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: fmt.Sprintf("token-%d", i)}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := txt(t, srv, "_acme-challenge."+zone); len(got) != 10 {
		t.Errorf("10 concurrent appends left %d records: %q", len(got), got)
	}
}

// TestCertmagicDNS01Solver runs certmagic's own DNS-01 solver (what Caddy's
// `dns` challenge uses) on the provider: Present publishes the challenge's
// TXT value, Wait sees it on the server, CleanUp removes it.
func TestCertmagicDNS01Solver(t *testing.T) {
	srv, p := startNamed(t, "zonesub TXT")
	solver := &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        p,
		Resolvers:          []string{srv.Addr},
		PropagationTimeout: 30 * time.Second,
	}}
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	chal := acme.Challenge{
		Type:             acme.ChallengeTypeDNS01,
		Identifier:       acme.Identifier{Type: "dns", Value: "pfr.localhost"}, // a wildcard order's authorization names the base domain
		KeyAuthorization: "token.thumbprint",
	}
	if err := solver.Present(ctx, chal); err != nil {
		t.Fatalf("Present: %v", err)
	}
	if got := txt(t, srv, "_acme-challenge."+zone); !slices.Equal(got, []string{chal.DNS01KeyAuthorization()}) {
		t.Fatalf("after Present the server holds %q, want the challenge's value", got)
	}
	if err := solver.Wait(ctx, chal); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := solver.CleanUp(ctx, chal); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}
	if got := txt(t, srv, "_acme-challenge."+zone); len(got) != 0 {
		t.Errorf("after CleanUp the server still holds %q", got)
	}
}
