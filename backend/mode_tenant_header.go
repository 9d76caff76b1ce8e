package backend

import (
	"net/http"
	"net/url"
)

// ModeTenantHeader sends the PFR's partition name as the tenant id header
// of the IBM/LinuxForHealth FHIR server (and, optionally, a data store id).
const ModeTenantHeader Mode = "tenant_header"

func init() { registerMode(ModeTenantHeader, tenantHeaderMode{}) }

// tenantHeaderMode is ModeTenantHeader.
type tenantHeaderMode struct{ noPerRecordUpstream }

func (tenantHeaderMode) validate(cfg *Config) error { return noURLTemplate(cfg) }

func (tenantHeaderMode) checkTarget(_ *Config, t Target) error {
	return checkPartitionName(t.PartitionName)
}

func (tenantHeaderMode) apply(cfg *Config, r *http.Request, t Target, _ *url.URL, _, _ string) {
	r.Header.Set(cfg.TenantHeader, t.PartitionName)
	if cfg.DataStoreID != "" {
		r.Header.Set(cfg.DataStoreHeader, cfg.DataStoreID)
	}
}

func (tenantHeaderMode) baseSuffix(Target) string { return "" }

// partitionOp: tenants are the upstream's own configuration, not created
// through its API.
func (tenantHeaderMode) partitionOp(*Config, string) (string, http.Header, bool) {
	return "", nil, false
}
