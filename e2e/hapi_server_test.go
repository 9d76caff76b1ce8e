package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// hapiServer is one running HAPI FHIR JPA server process
// (internal/hapitest) and a client for talking to it directly.
type hapiServer struct {
	*hapitest.Server
	addr   string // 127.0.0.1:port
	base   string // http://127.0.0.1:port/fhir
	client *http.Client
}

// startHAPI starts the HAPI test server in mode ("header" or "url") on a
// free loopback port, waits until it answers a search in its DEFAULT
// partition and stops it when the test ends. A missing jar fails the test
// with the build command.
//
// The probe is a search, not /fhir/metadata, on purpose: HAPI caches one
// CapabilityStatement for every caller, built with the address of the
// request that asked first, and the test needs that first request to come
// through the gateway.
func startHAPI(t *testing.T, mode string) *hapiServer {
	t.Helper()
	testkit.Needs(t, "Java and the HAPI FHIR test server (test/hapi)")
	started := time.Now()
	s := hapitest.StartT(t, hapitest.Options{Mode: mode, Dir: t.TempDir(), Jar: hapitest.JarIn(testkit.Root(t))})
	t.Logf("HAPI FHIR (%s mode) answered %.1fs after start", mode, time.Since(started).Seconds())
	return &hapiServer{Server: s, addr: s.Addr, base: s.Base, client: &http.Client{Timeout: 30 * time.Second}}
}
