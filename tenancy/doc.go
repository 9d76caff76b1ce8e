// Package tenancy holds who owns which Personal FHIR Record (PFR): the
// records themselves (slug, immutable id, upstream partition, status),
// accounts keyed by a token's (iss, sub), memberships with the roles owner,
// manager and viewer, and invitations, which also carry ownership transfer.
//
// Callers work through a Store in transactions over records: Update runs one
// atomic read-write transaction and View a read-only one. BoltStore keeps
// everything in buckets of an already open bbolt database (prefix
// "tenancy/"), so the gateway can share one file with other packages; the
// interfaces are not shaped like bbolt, so that a SQL implementation can
// follow.
//
// Every method returns errors that wrap the sentinels of errors.go, so
// callers map them to HTTP statuses with errors.Is.
//
// The package knows nothing of Caddy or HTTP.
package tenancy
