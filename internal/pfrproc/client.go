package pfrproc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// LocalTransport returns a transport that dials every host to 127.0.0.1 on
// the address's port, as *.localhost names resolve, so the Host header can
// name a record (john.pfr.localhost) without any resolver. Callers tune its
// pool, TLS and compression for what they measure.
func LocalTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dialing %s: %w", addr, err)
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}
}

// LocalClient returns a client over transport with the given timeout that
// does not follow redirects: a redirect is an answer to check, not to act
// on.
func LocalClient(timeout time.Duration, transport *http.Transport) *http.Client {
	return &http.Client{
		Timeout:       timeout,
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
