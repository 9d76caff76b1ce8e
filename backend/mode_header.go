package backend

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
)

// ModeHeader sends the PFR's numeric partition id in a request header, as
// HAPI FHIR's RequestHeaderPartitionInterceptor reads it. The default.
const ModeHeader Mode = "header"

func init() { registerMode(ModeHeader, headerMode{}) }

// headerMode is ModeHeader.
type headerMode struct{ noPerRecordUpstream }

func (headerMode) validate(cfg *Config) error { return noURLTemplate(cfg) }

func (headerMode) checkTarget(_ *Config, t Target) error {
	if t.PartitionID < 1 || t.PartitionID > math.MaxInt32 {
		return fmt.Errorf("backend: partition id %d out of range 1…%d", t.PartitionID, math.MaxInt32)
	}
	return nil
}

func (headerMode) apply(cfg *Config, r *http.Request, t Target, _ *url.URL, _, _ string) {
	r.Header[cfg.partitionKey] = []string{strconv.FormatInt(t.PartitionID, 10)}
}

func (headerMode) baseSuffix(Target) string { return "" }

// partitionOp: HAPI's partition operations run in its DEFAULT partition,
// named by the same header.
func (headerMode) partitionOp(cfg *Config, op string) (string, http.Header, bool) {
	h := http.Header{}
	h.Set(cfg.PartitionHeader, defaultPartition)
	return cfg.FHIRPath + "/" + op, h, true
}
