// Package crashtest kills the real pfr binary (cmd/pfr, built once by the
// tests) with SIGKILL while it takes drop-offs in, while it picks one up, and
// while the webhook receiver of a record is down, restarts it on the same
// data, and checks that DOPU kept its promises: every 202 survives, nothing
// is half-stored, a pick-up is all or nothing, and alerts outlive the
// process.
//
// The package holds only tests: go test ./crashtest -count=1 -v
package crashtest
