// Package testkit is the one home of the helpers that tests, crash tests
// and benchmarks share: loopback ports held for a whole test process (so
// that several copies of the tests, or a running gateway, never meet on
// one), Needs and Slow (what -short skips), Wait (poll until the test's
// deadline, never a fixed budget), a settable clock, bbolt files,
// the test data under testdata/fhir and JSON helpers. Its subpackage
// incaddy runs Caddy in a test process (a temporary home for everything
// it writes, loading a config); the commands holdports and testreport
// serve the scripts.
//
// It is for tests and the programs under bench/ only; nothing the gateway
// runs imports it.
package testkit
