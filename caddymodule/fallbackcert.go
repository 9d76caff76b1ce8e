package caddymodule

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(FallbackCertificate{})
}

// FallbackCertificate answers a TLS handshake for a name that is neither the
// apex nor a record (a mistyped slug, `localhost`, an IP address, a name
// without SNI) with the apex's certificate, so that the client reaches the
// gateway and gets its HTTP answer, a 404 OperationOutcome, instead of a
// failed handshake. No certificate is ever obtained for such a name. For the
// apex and the records it yields nothing, and Caddy goes on as usual (on
// demand, asking `permission pfr`). It takes the same options as
// `permission pfr`:
//
//	tls {
//	    on_demand
//	    get_certificate pfr {
//	        base_domain pfr.example.com
//	        data_dir    /var/lib/pfr
//	    }
//	}
//
// The apex's certificate must be in Caddy's cache: the `pfr` handler of the
// same base domain brings it in when Caddy starts (see announceReady);
// until then such names get no certificate.
type FallbackCertificate struct {
	Permission
}

// CaddyModule returns the Caddy module information.
func (FallbackCertificate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.get_certificate.pfr",
		New: func() caddy.Module { return new(FallbackCertificate) },
	}
}

// fallbackBases holds the base domains some FallbackCertificate serves, so
// the `pfr` handler of that base loads the apex's certificate at start
// (announceReady) only where a fallback needs it.
var fallbackBases = caddy.NewUsagePool()

// usesFallback reports whether a FallbackCertificate serves base.
func usesFallback(base string) bool {
	n, _ := fallbackBases.References(strings.ToLower(base))
	return n > 0
}

// Provision opens the state (as permission pfr does) and registers the base.
func (f *FallbackCertificate) Provision(ctx caddy.Context) error {
	if err := f.Permission.Provision(ctx); err != nil {
		return fmt.Errorf("tls.get_certificate.pfr: %w", err)
	}
	fallbackBases.LoadOrStore(strings.ToLower(f.BaseDomain), struct{}{})
	return nil
}

// Cleanup unregisters the base and releases the state.
func (f *FallbackCertificate) Cleanup() error {
	if _, err := fallbackBases.Delete(strings.ToLower(f.BaseDomain)); err != nil {
		return fmt.Errorf("tls.get_certificate.pfr: %w", err)
	}
	return f.Permission.Cleanup()
}

// errNoApexCertificate says the fallback has nothing to serve yet.
var errNoApexCertificate = errors.New("the apex certificate is not loaded yet")

// GetCertificate implements certmagic.Manager: nil for the apex and the
// records (Caddy's own way then), the apex's certificate for anything else.
func (f *FallbackCertificate) GetCertificate(ctx context.Context, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		err := f.CertificateAllowed(ctx, name)
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, caddytls.ErrPermissionDenied) {
			return nil, err // the state could not be read: no answer rather than a wrong one
		}
	}
	cert, ok := apexCertificate(f.BaseDomain, time.Now())
	if !ok {
		return nil, fmt.Errorf("%q is no record, and %w", name, errNoApexCertificate)
	}
	f.logger.Debug("a name that is no record gets the apex certificate", zap.String("name", name))
	return &cert.Certificate, nil
}

// apexCertificate returns a cached, unexpired certificate for base.
func apexCertificate(base string, now time.Time) (certmagic.Certificate, bool) {
	for _, c := range caddytls.AllMatchingCertificates(base) {
		if c.Leaf != nil && now.Before(c.Leaf.NotAfter) && !now.Before(c.Leaf.NotBefore) {
			return c, true
		}
	}
	return certmagic.Certificate{}, false
}

// Interface guards
var (
	_ caddy.Provisioner     = (*FallbackCertificate)(nil)
	_ caddy.CleanerUpper    = (*FallbackCertificate)(nil)
	_ certmagic.Manager     = (*FallbackCertificate)(nil)
	_ caddyfile.Unmarshaler = (*FallbackCertificate)(nil)
)
