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
//     arrive, signed, once it is back.
//
// The package holds only tests: go test ./crashtest -count=1 -v
package crashtest
