package pgtest

import (
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// EnvState selects the database a package's store tests run on: unset (or
// "bolt") for bbolt, "postgres" for PostgreSQL.
const EnvState = "PFR_TEST_STATE"

// OnPostgres reports whether this test binary runs its store tests on
// PostgreSQL (see RerunOnPostgres).
func OnPostgres() bool { return os.Getenv(EnvState) == "postgres" }

var passLine = regexp.MustCompile(`(?m)^\s*--- PASS: `)

// RerunOnPostgres makes one test suite cover both databases: called from a
// test of its own (TestPostgres), it runs the package's test binary again
// with PFR_TEST_STATE=postgres, on this package's PostgreSQL server, with
// the same -run and -short, and fails with the child's output when any
// test failed there. So `go test ./tenancy/` runs every store test on
// bbolt and on PostgreSQL. In the child it skips itself.
func RerunOnPostgres(t *testing.T) {
	t.Helper()
	if OnPostgres() {
		t.Skip("this is the PostgreSQL run")
	}
	testkit.Needs(t, "PostgreSQL (the store tests ran on bbolt only)")
	ctx := testkit.WaitContext(t)
	admin, err := adminDSN(ctx)
	if err != nil {
		t.Fatalf("no PostgreSQL for the store tests' second run (set %s or install Debian's postgresql; `go test -short` skips it): %v", EnvDSN, err)
	}
	args := []string{"-test.v=true", "-test.count=1", "-test.skip=^" + regexp.QuoteMeta(t.Name()) + "$"}
	for _, name := range []string{"test.run", "test.short", "test.timeout"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			args = append(args, "-"+name+"="+f.Value.String())
		}
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), EnvState+"=postgres", EnvDSN+"="+admin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the store tests failed on PostgreSQL (%v):\n%s", err, out)
	}
	n := len(passLine.FindAll(out, -1))
	if n == 0 && !strings.Contains(string(out), "no tests to run") {
		t.Fatalf("the PostgreSQL run passed no test:\n%s", out)
	}
	t.Logf("%d tests and subtests passed on PostgreSQL", n)
}
