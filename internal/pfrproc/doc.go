// Package pfrproc runs the real pfr binary (cmd/pfr) for the programs that
// measure or crash it from outside: the benches under bench/ and the crash
// tests. It builds the binary, starts `pfr run` on a Caddyfile in a work
// directory that holds everything Caddy writes, waits until it answers,
// stops or kills it, reads its log, records a CPU profile through Caddy's
// admin endpoint, and gives HTTP clients that reach every *.localhost name
// on 127.0.0.1. Its ports come from internal/testkit.
//
// It knows nothing of Caddy's Go API: it only runs the binary.
package pfrproc
