package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// resolver answers names from a table, like a DNS server the test controls.
func resolver(table map[string][]string) func(context.Context, string, string) ([]netip.Addr, error) {
	return func(_ context.Context, _, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range table[host] {
			out = append(out, netip.MustParseAddr(s))
		}
		if len(out) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return out, nil
	}
}

func TestCheckAddrRefusesEverySpecialPurposeAddress(t *testing.T) {
	var p Policy
	for _, s := range []string{
		"127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.127.255.254",
		"169.254.169.254", "172.16.0.1", "172.31.255.255", "192.168.1.1", "192.0.0.8", "192.0.2.1",
		"198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
		"64:ff9b::7f00:1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db8::1",
		"fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1", "ff05::1:3",
	} {
		a := netip.MustParseAddr(s)
		for _, plain := range []bool{false, true} {
			if err := p.CheckAddr(a, plain); !errors.Is(err, ErrRefused) {
				t.Errorf("CheckAddr(%s, plain=%v) = %v, want a refusal", s, plain, err)
			}
		}
	}
	for _, s := range []string{"93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"} {
		if err := p.CheckAddr(netip.MustParseAddr(s), false); err != nil {
			t.Errorf("CheckAddr(%s, https) = %v, want allowed", s, err)
		}
		if err := p.CheckAddr(netip.MustParseAddr(s), true); !errors.Is(err, ErrRefused) {
			t.Errorf("CheckAddr(%s, plain http) = %v, want refused (https required)", s, err)
		}
	}
}

func TestAllowOpensOnlyTheNamedNetworks(t *testing.T) {
	allow, err := ParseAllow([]string{"10.0.0.0/8", "::ffff:192.168.5.0/120", "fd00::1"})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Allow: allow}
	for _, s := range []string{"10.1.2.3", "::ffff:10.9.9.9", "192.168.5.7", "fd00::1"} {
		if err := p.CheckAddr(netip.MustParseAddr(s), true); err != nil {
			t.Errorf("%s: %v, want allowed (plain http too)", s, err)
		}
	}
	for _, s := range []string{"127.0.0.1", "192.168.6.1", "fd00::2", "172.16.0.1"} {
		if err := p.CheckAddr(netip.MustParseAddr(s), false); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want refused", s, err)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "localhost", "fe80::1%eth0", ""} {
		if _, err := ParseAllow([]string{bad}); err == nil {
			t.Errorf("ParseAllow(%q) accepted", bad)
		}
	}
}

func TestCheckURL(t *testing.T) {
	p := Policy{LookupNetIP: resolver(map[string][]string{
		"hooks.example.com": {"93.184.215.14"},
		"localhost":         {"127.0.0.1", "::1"},
		"rebind.example":    {"93.184.215.14", "127.0.0.1"},
		"metadata.example":  {"169.254.169.254"},
	})}
	ctx := context.Background()
	if err := p.Check(ctx, "https://hooks.example.com/pfr"); err != nil {
		t.Fatalf("public https: %v", err)
	}
	for _, raw := range []string{
		"http://hooks.example.com/pfr", // plain http to a public host
		"https://localhost:2019/stop", "http://127.0.0.1:2019/load", "https://[::1]/", "https://[::ffff:127.0.0.1]/",
		"https://rebind.example/", "https://metadata.example/latest", "https://0x7f.1/", "https://2130706433/",
		"https://nowhere.invalid/", "ftp://hooks.example.com/", "file:///etc/passwd", "gopher://x/",
		"https://user:pw@hooks.example.com/", "//hooks.example.com/", "https:///x", "https://hooks.example.com:99999/",
		"unix:/run/caddy.sock",
	} {
		err := p.Check(ctx, raw)
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Check(%q) = %v, want a refusal", raw, err)
		}
	}
}

// TestClientDialsNothingRefused points the client at loopback in every
// spelling, at names resolving there (also after a first good answer: DNS
// rebinding), and at an allowed server that redirects to loopback: the
// loopback server is never reached.
func TestClientDialsNothingRefused(t *testing.T) {
	var hits atomic.Int32
	victim := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer victim.Close()
	_, port, _ := net.SplitHostPort(victim.Listener.Addr().String())

	// An allowed receiver on 127.0.0.2 that redirects to the victim.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	redirector := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+port+"/stop", http.StatusTemporaryRedirect)
	})}}
	redirector.Start()
	defer redirector.Close()
	_, rport, _ := net.SplitHostPort(ln.Addr().String())

	var flips atomic.Int32
	p := Policy{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		LookupNetIP: func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			switch host {
			case "public.example":
				return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
			case "rebind.example": // allowed at first, loopback afterwards
				if flips.Add(1) == 1 {
					return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
				}
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "public-http.example":
				return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
			}
			return resolver(map[string][]string{"localhost": {"127.0.0.1", "::1"}, "evil.test": {"127.0.0.1"}})(ctx, network, host)
		},
	}
	if err := p.Check(context.Background(), "http://rebind.example:"+port+"/"); err != nil {
		t.Fatalf("rebind.example first answer should pass the save-time check: %v", err)
	}
	client := p.Client(5 * time.Second)
	for _, target := range []string{
		"http://127.0.0.1:" + port + "/stop", "https://127.0.0.1:" + port + "/stop",
		"http://[::1]:" + port + "/", "http://[::ffff:127.0.0.1]:" + port + "/",
		"http://localhost:" + port + "/", "http://evil.test:" + port + "/",
		"http://rebind.example:" + port + "/", "http://public-http.example/",
	} {
		resp, err := client.Post(target, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			t.Errorf("POST %s: answered %s, want refused", target, resp.Status)
			continue
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("POST %s: %v, want ErrRefused", target, err)
		}
	}
	resp, err := client.Post("http://public.example:"+rport+"/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("allowed receiver: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("allowed receiver answered %s, want its 307 unfollowed", resp.Status)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server was reached %d times", n)
	}
}

// TestOrigin: one origin whatever the default port's spelling and the
// case; another port, scheme or host is another origin; a URL that is
// not absolute http(s) has none.
func TestOrigin(t *testing.T) {
	for _, c := range []struct{ u, want string }{
		{"https://John.PFR.example/fhir/$export", "https://john.pfr.example:443"},
		{"https://john.pfr.example:443/x", "https://john.pfr.example:443"},
		{"HTTP://127.0.0.1/fhir", "http://127.0.0.1:80"},
		{"http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080"},
		{"http://[::1]:8080/", "http://[::1]:8080"},
		{"/fhir/Binary/1", ""},
		{"ftp://example.com/x", ""},
		{"https:///x", ""},
	} {
		if got := Origin(c.u); got != c.want {
			t.Errorf("Origin(%q) = %q, want %q", c.u, got, c.want)
		}
	}
}
