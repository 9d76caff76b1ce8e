// Package tenancy holds who owns which Personal FHIR Record (PFR): the
// records themselves (slug, immutable id, upstream partition, status),
// accounts keyed by a token's (iss, sub), memberships with the roles owner,
// manager and viewer, and invitations, which also carry ownership transfer.
//
// Callers work through a Store in transactions over records: Update runs one
// atomic read-write transaction and View a read-only one. KVStore keeps
// everything in buckets (prefix "tenancy/") of an internal/kv database:
// an already open bbolt file shared with other packages (NewBoltStore, one
// node) or PostgreSQL (NewStore with an internal/pgstate.DB, several
// nodes). Both run the same code and pass the same tests (TestPostgres
// reruns the package's tests on PostgreSQL).
//
// Every method returns errors that wrap the sentinels of errors.go, so
// callers map them to HTTP statuses with errors.Is.
//
// The package knows nothing of Caddy or HTTP.
package tenancy
