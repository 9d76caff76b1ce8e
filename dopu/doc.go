// Package dopu is Drop Off / Pick Up: anyone may drop off a FHIR Bundle for
// a Personal FHIR Record (PFR), and the person picks it up into the record
// or rejects it.
//
// # Intake
//
// [Service.Intake] accepts a JSON FHIR Bundle of type document, collection,
// transaction, batch or message. It refuses, with a *fhir.Error carrying an
// OperationOutcome, and stores nothing:
//
//   - a Content-Type other than application/fhir+json, application/json or
//     application/json+fhir (charset utf-8 if given): 415;
//   - a Content-Encoding other than identity or gzip: 415;
//   - a body, compressed or inflated, larger than Limits.MaxBytes: 413
//     (gzip is inflated through a limit, so a gzip bomb costs at most
//     MaxBytes of memory);
//   - a corrupt gzip stream, invalid JSON or JSON nested deeper than
//     Limits.MaxDepth: 400;
//   - a resource other than a Bundle, a Bundle type outside the five above,
//     a Bundle without entries, an entry without a resource or with a
//     resource without a valid resourceType, a transaction or batch entry
//     whose method is not POST or PUT: 422;
//   - more than Limits.MaxEntries entries: 413;
//   - a sender over its rate (Limits.SourceRate, keyed by IP address, IPv6
//     by /64), a record over its rate (Limits.RecordRate): 429 with
//     Retry-After;
//   - a record whose pending drop-offs would exceed Limits.PendingPerRecord
//     or Limits.PendingBytesPerRecord: 429 with Retry-After (the quota frees
//     when the person picks up, rejects, or drop-offs expire; 429 rather
//     than 507 because the condition is the record's, not the server's).
//
// Content type and encoding are checked first, then the rate limits, and
// only then is the body read, so a flood costs no parsing; at most
// Limits.Concurrent bodies are read and parsed at once, the other senders
// wait. An accepted
// drop-off is committed (and, with bbolt, fsynced) together with
// its alert before Intake returns. The same body dropped off again for the
// same record returns the first receipt with Duplicate set, whatever its
// status, until it expires; after expiry the same body is a new drop-off.
//
// # Life cycle
//
// A drop-off is pending until it is picked up ([Service.BeginPickup],
// [Pickup.Commit]), rejected ([Service.Reject]) or expired ([Service.Expire],
// Limits.TTL after it was received). Its body is kept only while it is
// pending; its summary stays so the inbox and the sender's status
// ([Service.Status]) keep answering, until Limits.Retention after it left
// pending ([Service.Purge]).
//
// # Alerts
//
// Every drop-off writes an outbox entry in the same transaction.
// [Service.Run] delivers it as an HTTP POST of a JSON document
//
//	{"record": "<record id>", "slug": "<record slug>", "dropoff": "<id>", "received": "<RFC 3339>",
//	 "expires": "<RFC 3339>",
//	 "summary": {"bundleType": "...", "resourceCounts": {...}, "size": n,
//	             "sender": {"ip": "...", "userAgent": "...", ...}}}
//
// to the record's webhook URL (Options.Webhook), never with clinical content.
// The request carries
//
//	X-PFR-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// in the manner of Stripe: the receiver recomputes the HMAC over the decimal
// timestamp, a dot and the raw body, compares in constant time and refuses
// old timestamps ([VerifySignature] does all of it). A delivery succeeds on
// any 2xx; otherwise it is retried with exponential backoff (Options.RetryBase
// doubling up to Options.RetryCap, with jitter) while the drop-off is
// pending. An alert for a record without a webhook (empty URL) is dropped
// after that look-up. The outbox is in the store, so it survives restarts.
// Delivery is at least once: a receiver deduplicates by "dropoff".
//
// # Pick-up
//
// [Service.BeginPickup] leases a pending drop-off; [Pickup.Prepare] turns it
// into one FHIR transaction for the PFR (see its documentation for the
// subject rule, the match score and the reference rewriting); the caller
// runs it upstream, then [Pickup.Commit] or [Pickup.Abort]. Every imported
// resource is tagged {system "urn:pfr:dopu", code <drop-off id>} so that a
// pick-up retried after a crash can find what a previous attempt wrote.
//
// # Storage
//
// [Store] is the storage contract, in transactions over drop-offs and
// alerts; [NewBoltStore] implements it on a shared bbolt file in buckets
// named "dopu/…". The database must not be opened with NoSync.
package dopu
