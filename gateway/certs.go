package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// ErrNoCertificate is returned by CertificatePermitted for names the gateway
// does not serve.
var ErrNoCertificate = errors.New("no certificate for this name")

// CertificatePermitted decides whether an on-demand TLS certificate may be
// obtained for name: the apex baseDomain, or {slug}.{baseDomain} of an active
// record. Everything else is refused, so nobody can make the gateway request
// certificates for arbitrary names.
func CertificatePermitted(ctx context.Context, store tenancy.Store, baseDomain, name string) error {
	name, baseDomain = normalizeHost(name), normalizeHost(baseDomain)
	if name == baseDomain {
		return nil
	}
	slug, ok := strings.CutSuffix(name, "."+baseDomain)
	if !ok || strings.Contains(slug, ".") || tenancy.ValidateSlug(slug) != nil {
		return fmt.Errorf("%w: %q is not under %q", ErrNoCertificate, name, baseDomain)
	}
	var rec *tenancy.Record
	err := store.View(ctx, func(tx tenancy.Tx) error {
		var err error
		rec, err = tx.RecordBySlug(slug)
		return err
	})
	if errors.Is(err, tenancy.ErrNotFound) {
		return fmt.Errorf("%w: no record %q", ErrNoCertificate, slug)
	}
	if err != nil {
		return fmt.Errorf("looking up record %q: %w", slug, err)
	}
	if rec.Status != tenancy.StatusActive {
		return fmt.Errorf("%w: record %q is %s", ErrNoCertificate, slug, rec.Status)
	}
	return nil
}
