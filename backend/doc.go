// Package backend maps a Personal FHIR Record (PFR) onto an upstream FHIR
// server and maps the upstream's answers back onto the PFR's own address.
//
// A Backend is built once from a Config and used for every request:
//
//   - Outbound rewrites a client request for one PFR: it strips every
//     client-sent partition or tenant header (a client must never choose its
//     partition), strips Accept-Encoding so that bodies come back rewritable,
//     then adds the PFR's own partition header, URL prefix, tenant header or
//     upstream URL, depending on the Mode.
//   - Provision and Deprovision create and remove a PFR's partition through
//     the caller's Upstream handler (HAPI FHIR's partition management
//     operations), idempotently: a partition that already exists is confirmed
//     to have the PFR's id and name before it counts as created, and one
//     already gone counts as removed. ProvisionRequests, DeleteRequests,
//     CheckProvisionResponse and CheckDeleteResponse are the pieces, for
//     callers that send requests themselves.
//   - NewResponseRewriter wraps the response so that every upstream absolute
//     URL, in the Location, Content-Location and Link headers and anywhere in
//     a textual (JSON, XML) body, becomes the PFR's public FHIR base URL. The
//     body is rewritten as it streams through, holding only a carry of at most
//     one URL prefix between writes.
//
// The package never dials: the caller sends the rewritten request through its
// own upstream handler. It knows nothing of Caddy.
package backend
