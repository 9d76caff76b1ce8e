// Package testkit is the one home of the helpers that tests, crash tests
// and benchmarks share: loopback ports held for a whole test process (so
// that several copies of the tests, or a running gateway, never meet on
// one), a temporary home for everything an in-process Caddy writes, a
// settable clock, bbolt databases in a test's temporary folder, the test
// data under ../shared/testdata and JSON helpers.
//
// It is for tests and the programs under bench/ only; nothing the gateway
// runs imports it.
package testkit
