package backend

import (
	"strings"
	"testing"
)

func TestNewDefaults(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config()
	if cfg.Mode != ModeHeader || cfg.FHIRPath != "/fhir" || cfg.PartitionHeader != "X-Request-Partition-IDs" ||
		cfg.TenantHeader != "X-FHIR-TENANT-ID" || cfg.DataStoreHeader != "X-FHIR-DSID" {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	cases := map[string]Config{
		"unknown mode":                 {Mode: "subdomain"},
		"relative fhir path":           {FHIRPath: "fhir"},
		"trailing slash":               {FHIRPath: "/fhir/"},
		"dot segment in fhir path":     {FHIRPath: "/a/../fhir"},
		"escaped fhir path":            {FHIRPath: "/fh%20ir"},
		"root fhir path":               {FHIRPath: "/"},
		"header with space":            {PartitionHeader: "X Partition"},
		"header with colon":            {TenantHeader: "X-Tenant:"},
		"strip header with newline":    {StripHeaders: []string{"X-A\r\nX-B"}},
		"data store id with CRLF":      {Mode: ModeTenantHeader, DataStoreID: "db\r\nX-Evil: 1"},
		"per record without template":  {Mode: ModePerRecordURL},
		"template outside per record":  {URLTemplate: "https://x/fhir"},
		"template unknown placeholder": {Mode: ModePerRecordURL, URLTemplate: "https://{slug}.internal/fhir"},
		"template unbalanced":          {Mode: ModePerRecordURL, URLTemplate: "https://{record_id.internal/fhir"},
		"template unbalanced close":    {Mode: ModePerRecordURL, URLTemplate: "https://record_id}.internal/fhir"},
		"template without placeholder": {Mode: ModePerRecordURL, URLTemplate: "https://shared.internal/fhir"},
		"template not http":            {Mode: ModePerRecordURL, URLTemplate: "ftp://{record_id}/fhir"},
		"template relative":            {Mode: ModePerRecordURL, URLTemplate: "/records/{record_id}"},
		"template with query":          {Mode: ModePerRecordURL, URLTemplate: "https://x/fhir?tenant={record_id}"},
		"template with user":           {Mode: ModePerRecordURL, URLTemplate: "https://u:p@x/{record_id}"},
		"upstream URL not absolute":    {UpstreamURLs: []string{"hapi:8080/fhir"}},
		"upstream URL with fragment":   {UpstreamURLs: []string{"http://hapi/fhir#x"}},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		} else if !strings.HasPrefix(err.Error(), "backend: ") {
			t.Errorf("%s: error without context: %v", name, err)
		}
	}
}

func TestNewCopiesSlices(t *testing.T) {
	urls := []string{"http://hapi:8080/fhir"}
	b, err := New(Config{UpstreamURLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	urls[0] = "http://evil/fhir"
	if b.Config().UpstreamURLs[0] != "http://hapi:8080/fhir" {
		t.Error("Backend must not share the caller's slice")
	}
}
