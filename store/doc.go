// Package store is the embedded FHIR R4 JSON server of caddy-pfr: a
// partitioned resource store on bbolt with the FHIR REST API in front of it.
//
// Partitions follow HAPI FHIR's RequestHeaderPartitionInterceptor: every
// request names one partition by its numeric id in a header (DEFAULT names the
// default partition), partitions are created, read, listed and deleted with
// the $partition-management-* operations, and resources in different
// partitions never see each other.
//
// Data model, one bbolt file:
//
//	meta                          the global write sequence (system history order)
//	partitions                    partition id → {id, name, description}
//	searches                      search id → expiry + pinned result (paging snapshots)
//	p:<partition>                 one bucket per partition (p:DEFAULT always exists)
//	  current/<Type>/<id>         the current version of each resource (or its tombstone)
//	  versions/<Type>\0<id>\0<v>  every version, v big-endian
//	  sequence/<seq>              global sequence → version key, for history
//
// A record is a kind byte (resource or deleted), the version, lastUpdated and
// the resource JSON with id and meta.versionId/lastUpdated set by the server.
// Every write interaction is one bbolt transaction, committed with fsync
// before the response is written; a transaction Bundle is one bbolt
// transaction, so it is applied entirely or not at all.
//
// Search is the scan of one type's current resources in one partition,
// filtered and sorted by package fhir/search; pages of a search (and of a
// history) are pinned in the searches bucket for an hour so that paging
// stays stable while resources are written.
//
// The package knows nothing of Caddy; the Caddy module wraps Open and
// NewHandler.
package store
