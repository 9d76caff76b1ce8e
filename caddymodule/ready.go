package caddymodule

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// readyPoll is how often announceReady looks whether the configuration runs.
const readyPoll = 50 * time.Millisecond

// readyHandshakeTimeout bounds the handshake that brings in the apex
// certificate.
const readyHandshakeTimeout = 30 * time.Second

// announceReady waits until the configuration ctx belongs to is running
// (Caddy makes it the active one only after every app started, listeners
// included), then, when a FallbackCertificate serves base, obtains the
// apex's certificate with one TLS handshake to the gateway's own HTTPS
// listener (so that names which are no record are answered under it from
// the start), and logs
//
//	caddy-pfr ready: management API at https://<base>:<port>/pfr/v1/, records at https://{slug}.<base>:<port><fhir path>
//
// It gives up silently when the configuration is stopped first.
func announceReady(ctx caddy.Context, logger *zap.Logger, base, fhirPath string) {
	for !isActive(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(readyPoll):
		}
	}
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	scheme, addr := serverListener(srv)
	if addr == "" {
		logger.Info("caddy-pfr ready (its server has no TCP listener to name)")
		return
	}
	_, port, _ := net.SplitHostPort(addr)
	origin := func(host string) string {
		if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
			return scheme + "://" + host
		}
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	if scheme == "https" && usesFallback(base) {
		warmApexCertificate(ctx, logger, addr, base)
	}
	logger.Info(fmt.Sprintf("caddy-pfr ready: management API at %s/pfr/v1/, records at %s%s",
		origin(base), origin("{slug}."+base), fhirPath))
}

// isActive reports whether ctx's configuration is the running one.
func isActive(ctx caddy.Context) bool {
	active := caddy.ActiveContext()
	return active.Context != nil && active.Done() == ctx.Done()
}

// serverListener returns the scheme and a dialable address of the server's
// first TCP listener ("" when there is none).
func serverListener(srv *caddyhttp.Server) (scheme, addr string) {
	if srv == nil {
		return "", ""
	}
	scheme = "http"
	if len(srv.TLSConnPolicies) > 0 {
		scheme = "https"
	}
	for _, listen := range srv.Listen {
		na, err := caddy.ParseNetworkAddress(listen)
		if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() {
			continue
		}
		host := na.Host
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		return scheme, net.JoinHostPort(host, strconv.Itoa(int(na.StartPort)))
	}
	return "", ""
}

// warmApexCertificate makes one TLS handshake for base to addr, which
// loads or obtains the apex's certificate (the permission allows the apex
// always). The certificate is not checked: this only asks Caddy to have it.
func warmApexCertificate(ctx context.Context, logger *zap.Logger, addr, base string) {
	hctx, cancel := context.WithTimeout(ctx, readyHandshakeTimeout)
	defer cancel()
	dialer := &tls.Dialer{Config: &tls.Config{ServerName: base, InsecureSkipVerify: true}} //nolint:gosec // only asks the gateway's own listener to load its certificate
	conn, err := dialer.DialContext(hctx, "tcp", addr)
	if err != nil {
		logger.Warn("the apex certificate could not be obtained yet; names that are no record get no TLS answer until it is",
			zap.String("name", base), zap.Error(err))
		return
	}
	_ = conn.Close()
}
