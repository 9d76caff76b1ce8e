package testkit

import "testing"

// Needs marks a test that needs more than Go: a component such as Java
// (HAPI FHIR), Node (the FHIR and SMART clients), PostgreSQL, BIND,
// Pebble, root's mount, or the pfr binary run as a separate process. Under
// `go test -short` (the inner loop, Go alone) the test skips, naming what
// it needs. Otherwise it goes on, and a component that is missing fails it:
// the full suite never passes by skipping.
func Needs(t testing.TB, component string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: needs %s", component)
	}
}

// Slow marks a test that takes minutes with Go alone (what says why).
// Under `go test -short` it skips, naming that; the full suite runs it.
func Slow(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: takes minutes (%s)", what)
	}
}
