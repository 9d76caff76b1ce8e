package backend

import (
	"net/http"
	"net/url"
)

// ModeURLPrefix puts the PFR's partition name as the first path segment
// after the FHIR base, as HAPI FHIR's UrlBaseTenantIdentificationStrategy
// reads it: /fhir/Patient/1 becomes /fhir/{partition name}/Patient/1.
const ModeURLPrefix Mode = "url_prefix"

func init() { registerMode(ModeURLPrefix, urlPrefixMode{}) }

// urlPrefixMode is ModeURLPrefix.
type urlPrefixMode struct{ noPerRecordUpstream }

func (urlPrefixMode) validate(cfg *Config) error { return noURLTemplate(cfg) }

func (urlPrefixMode) checkTarget(_ *Config, t Target) error {
	return checkPartitionName(t.PartitionName)
}

func (urlPrefixMode) apply(cfg *Config, r *http.Request, t Target, _ *url.URL, rest, escRest string) {
	prefix := cfg.FHIRPath + "/" + t.PartitionName
	setPath(r, prefix, prefix, rest, escRest)
}

// baseSuffix: the upstream names its resources below the partition's
// prefix.
func (urlPrefixMode) baseSuffix(t Target) string { return "/" + t.PartitionName }

// partitionOp: HAPI's partition operations run in its DEFAULT partition,
// named by the same prefix.
func (urlPrefixMode) partitionOp(cfg *Config, op string) (string, http.Header, bool) {
	return cfg.FHIRPath + "/" + defaultPartition + "/" + op, http.Header{}, true
}
