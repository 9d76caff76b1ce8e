// Package crashtest kills the real pfr binary (cmd/pfr, built once by the
// tests) with SIGKILL and restarts it on the same data, to check that DOPU
// keeps its promises across crashes:
//
//   - during intake, every drop-off that got its 202 is in the inbox and
//     pending, and nothing is half-stored;
//   - during a pick-up, the record holds all of the Bundle or none of it,
//     and the owner's retry picks it up (resumed, never imported twice);
//   - after a pick-up was cut between its import and its marking, a
//     rejection must not leave the rejected data in the record;
//   - with the webhook receiver down, the alerts outlive the process and
//     arrive, signed, once it is back;
//   - during owner writes (creates, updates, transactions), every
//     acknowledged write is there once, byte for byte, and a transaction
//     is whole or absent.
//
// The fault tests (TestFault…) run the gateway in front of the real store
// process (testdata/Caddyfile.store) and break the upstream: a
// misconfigured site's empty 200, a 302 or 503 page, an answer cut short,
// the process frozen (SIGSTOP) or killed (SIGKILL); and the data directory
// on a full tmpfs (mounted by the test, which needs root); Caddy's passive
// health checks as a circuit breaker. Clients get an
// OperationOutcome with the right status quickly, and nothing is reported
// as stored that is not. TestReloadUnderLoad counts what config reloads do
// to HTTP/1.1 and HTTP/2 clients.
//
// The package holds only tests: go test ./crashtest -count=1 -v
package crashtest
