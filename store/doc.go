// Package store is the embedded FHIR R4 JSON server of caddy-pfr: a
// partitioned resource store on bbolt with the FHIR REST API in front of it.
//
// Partitions follow HAPI FHIR's RequestHeaderPartitionInterceptor: every
// request names one partition by its numeric id in a header (DEFAULT names the
// default partition), partitions are created and deleted with the
// $partition-management-* operations, and resources in different partitions
// never see each other.
//
// The package knows nothing of Caddy; the Caddy module in caddymodule wraps
// Open and NewHandler.
package store
