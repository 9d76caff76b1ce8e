package fhir

import (
	"errors"
	"strings"
	"testing"
)

func TestIsID(t *testing.T) {
	for _, s := range []string{"1", "a", "abc-DEF.123", "a.b", "a..b", ".a", "a.", "-", strings.Repeat("x", 64),
		"550e8400-e29b-41d4-a716-446655440000"} {
		if !IsID(s) {
			t.Errorf("IsID(%q) = false, want true", s)
		}
	}
	// "." and ".." match FHIR's regex but are dot-segments in a URL path
	// (path traversal): refused, as is every id made only of dots.
	for _, s := range []string{"", ".", "..", "...", strings.Repeat("x", 65), "a b", "a/b", "a_b", "a%2e", "é", "a\x00", "$x", "a?b", "a#b"} {
		if IsID(s) {
			t.Errorf("IsID(%q) = true, want false", s)
		}
	}
}

func TestIsResourceType(t *testing.T) {
	for _, s := range []string{"Patient", "Observation", "Binary", "Bundle", "Parameters", "VisionPrescription"} {
		if !IsResourceType(s) {
			t.Errorf("IsResourceType(%q) = false", s)
		}
	}
	for _, s := range []string{"", "patient", "PATIENT", "Hacker", "Patient ", "Resource", "DomainResource", "Patient/1", "metadata", "_history"} {
		if IsResourceType(s) {
			t.Errorf("IsResourceType(%q) = true", s)
		}
	}
}

func TestParsePath(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Path
	}{
		{"", Path{}},
		{"metadata", Path{Capabilities: true}},
		{"_history", Path{History: true}},
		{"_search", Path{Search: true}},
		{"$partition-management-create-partition", Path{Operation: "$partition-management-create-partition"}},
		{"/Observation", Path{Type: "Observation"}},
		{"Observation/_history", Path{Type: "Observation", History: true}},
		{"Observation/_search", Path{Type: "Observation", Search: true}},
		{"Observation/$validate", Path{Type: "Observation", Operation: "$validate"}},
		{"Observation/1", Path{Type: "Observation", ID: "1"}},
		{"Observation/a.b", Path{Type: "Observation", ID: "a.b"}},
		{"Observation/1/_history", Path{Type: "Observation", ID: "1", History: true}},
		{"Observation/1/_history/3", Path{Type: "Observation", ID: "1", History: true, VersionID: "3"}},
		{"Patient/p1/$everything", Path{Type: "Patient", ID: "p1", Operation: "$everything"}},
		{"Patient/p1/Observation", Path{Type: "Patient", ID: "p1", Compartment: "Observation"}},
	} {
		got, err := ParsePath(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if err == nil && "/"+got.String() != "/"+strings.TrimPrefix(c.in, "/") {
			t.Errorf("ParsePath(%q).String() = %q", c.in, got.String())
		}
	}
	for _, c := range []struct {
		in   string
		want error
	}{
		{"observation", ErrUnknownType},
		{"Hacker/1", ErrUnknownType},
		{"Patient/1/Hacker", ErrUnknownType},
		{"Patient/1/foo", ErrUnknownType},
		{"$", ErrUnknownType},
		{"Patient/..", ErrInvalidID},
		{"Patient/.", ErrInvalidID},
		{"Patient/../Observation", ErrInvalidID},
		{"Patient/a b", ErrInvalidID},
		{"Patient/1/_history/..", ErrInvalidID},
		{"Patient/1/_history/a b", ErrInvalidID},
		{"Patient//1", ErrNoInteraction},
		{"/", ErrNoInteraction},
		{"Patient/1/", ErrNoInteraction},
		{"Patient/_history/1", ErrNoInteraction},
		{"Patient/$everything/1", ErrNoInteraction},
		{"Patient/1/_history/3/x", ErrNoInteraction},
		{"Patient/1/_search", ErrNoInteraction},
		{"Patient/1/Observation/2", ErrNoInteraction},
	} {
		if got, err := ParsePath(c.in); !errors.Is(err, c.want) {
			t.Errorf("ParsePath(%q) = %+v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseReference(t *testing.T) {
	for _, c := range []struct{ in, typ, id, vid string }{
		{"Patient/1", "Patient", "1", ""},
		{"Observation/a-b/_history/2", "Observation", "a-b", "2"},
	} {
		typ, id, vid, ok := ParseReference(c.in)
		if !ok || typ != c.typ || id != c.id || vid != c.vid {
			t.Errorf("ParseReference(%q) = %q %q %q %v", c.in, typ, id, vid, ok)
		}
	}
	for _, s := range []string{"", "Patient", "/Patient/1", "Patient/..", "Patient/1/_history", "Patient/1/$everything",
		"Patient/1/Observation", "Hacker/1", "Patient?identifier=x", "#c1", "urn:uuid:1", "http://x/Patient/1", "Patient/$validate"} {
		if typ, id, vid, ok := ParseReference(s); ok {
			t.Errorf("ParseReference(%q) = %q %q %q, want not ok", s, typ, id, vid)
		}
	}
}

func TestParseLocation(t *testing.T) {
	for _, c := range []struct{ in, typ, id, vid string }{
		{"Patient/1", "Patient", "1", ""},
		{"http://h:8080/fhir/Patient/1/_history/2", "Patient", "1", "2"},
		{"https://h/fhir/Observation/a.b/", "Observation", "a.b", ""},
		{"/fhir/Observation/7?x=1", "Observation", "7", ""},
		{"http://h/fhir/_history/Patient/1", "Patient", "1", ""},
	} {
		typ, id, vid, ok := ParseLocation(c.in)
		if !ok || typ != c.typ || id != c.id || vid != c.vid {
			t.Errorf("ParseLocation(%q) = %q %q %q %v", c.in, typ, id, vid, ok)
		}
	}
	for _, s := range []string{"", "http://h/fhir", "http://h/fhir/Patient", "http://h/fhir/Patient/..", "http://h/fhir/Hacker/1", "Patient/1/_history"} {
		if typ, id, vid, ok := ParseLocation(s); ok {
			t.Errorf("ParseLocation(%q) = %q %q %q, want not ok", s, typ, id, vid)
		}
	}
}
