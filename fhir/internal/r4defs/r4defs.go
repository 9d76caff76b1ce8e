// Package r4defs reads the base R4 StructureDefinitions (HL7 FHIR R4 4.0.1,
// CC0) that fhir's code generators turn into tables: the element table of
// FHIRPath Patch (fhir/internal/genelements) and the _summary paths of the
// search evaluator (fhir/search/gensummary.go). HAPI's
// hapi-fhir-validation-resources-r4 jar carries the official
// profiles-*.xml files; `(cd test/hapi && mvn -q -B -o package -DskipTests)`
// puts the jar in ~/.m2.
package r4defs

import (
	"archive/zip"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The jar members that hold the definitions.
const (
	ProfilesResources = "org/hl7/fhir/r4/model/profile/profiles-resources.xml"
	ProfilesTypes     = "org/hl7/fhir/r4/model/profile/profiles-types.xml"
)

// Value is a FHIR XML primitive: its value attribute.
type Value struct {
	Value string `xml:"value,attr"`
}

// Element is one element of a StructureDefinition's snapshot.
type Element struct {
	Path             Value  `xml:"path"`
	Min              Value  `xml:"min"`
	Max              Value  `xml:"max"`
	IsSummary        *Value `xml:"isSummary"`
	ContentReference *Value `xml:"contentReference"`
	Types            []struct {
		Code Value `xml:"code"`
	} `xml:"type"`
}

// StructureDefinition is what the generators read of one definition.
type StructureDefinition struct {
	ID         Value     `xml:"id"`
	Kind       Value     `xml:"kind"`
	Abstract   Value     `xml:"abstract"`
	Type       Value     `xml:"type"`
	Derivation Value     `xml:"derivation"`
	Elements   []Element `xml:"snapshot>element"`
}

type bundle struct {
	Entries []struct {
		SD *StructureDefinition `xml:"resource>StructureDefinition"`
	} `xml:"entry"`
}

// JarFlag registers the -jar flag (HAPI's R4 validation resources jar,
// the one test/hapi's build puts in ~/.m2 by default).
func JarFlag() *string {
	home, _ := os.UserHomeDir()
	return flag.String("jar", filepath.Join(home, ".m2/repository/ca/uhn/hapi/fhir/hapi-fhir-validation-resources-r4/8.8.0/hapi-fhir-validation-resources-r4-8.8.0.jar"), "HAPI's R4 validation resources jar")
}

// Read returns the StructureDefinitions of the members of jar, in order.
func Read(jar string, members ...string) ([]*StructureDefinition, error) {
	zr, err := zip.OpenReader(jar)
	if err != nil {
		return nil, fmt.Errorf("r4defs: %w", err)
	}
	defer zr.Close()
	var out []*StructureDefinition
	for _, member := range members {
		f, err := zr.Open(member)
		if err != nil {
			return nil, fmt.Errorf("r4defs: %s: %w", member, err)
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("r4defs: %s: %w", member, err)
		}
		var b bundle
		if err := xml.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("r4defs: %s: %w", member, err)
		}
		for _, e := range b.Entries {
			if e.SD != nil {
				out = append(out, e.SD)
			}
		}
	}
	return out, nil
}
