// Package audit keeps the access log of every PFR: who did what to which
// record, when, and with what outcome (design pipeline step 10). The
// gateway calls [Log.Record] on the request path; a background [Log.Run]
// writes the queued events in batches to a bbolt database shared with the
// other packages (buckets prefixed "audit/"), and [Log.Bundle] reads one
// record's log back as a FHIR R4 Bundle of AuditEvent resources for the
// management API (GET /pfr/v1/records/{slug}/audit).
//
// Events never carry clinical content: only identities, the interaction,
// the target's type and id, the HTTP status and a short detail.
package audit
