package gateway

import (
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func testRecord() *tenancy.Record {
	return &tenancy.Record{ID: "rec1", Slug: "john", PartitionID: 1, PartitionName: "pfr-rec1", PatientID: "p1", Status: tenancy.StatusActive}
}

func splitFields(s string) []string { return strings.Fields(s) }

func containsByte(s string, b byte) bool { return strings.IndexByte(s, b) >= 0 }

func roleOf(s string) tenancy.Role { return tenancy.Role(s) }

func errStatus(err error) int { return fhir.AsError(err).Status }
