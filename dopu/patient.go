package dopu

import (
	"encoding/json"
	"errors"
	"strings"
)

// PatientSummary is what identifies a Patient for matching and for the
// inbox: names, birth date, gender and identifiers. It carries no other
// clinical content.
type PatientSummary struct {
	Names       []HumanName  `json:"names,omitempty"`
	BirthDate   string       `json:"birthDate,omitempty"`
	Gender      string       `json:"gender,omitempty"`
	Identifiers []Identifier `json:"identifiers,omitempty"`
}

// HumanName is a Patient.name.
type HumanName struct {
	Family string   `json:"family,omitempty"`
	Given  []string `json:"given,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// Identifier is a Patient.identifier's system and value.
type Identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

// fhirPatient is the part of a Patient resource a PatientSummary reads.
type fhirPatient struct {
	Name       []HumanName  `json:"name"`
	BirthDate  string       `json:"birthDate"`
	Gender     string       `json:"gender"`
	Identifier []Identifier `json:"identifier"`
}

// SummarizePatient returns the summary of a Patient resource, decoded or
// raw JSON. Fields of the wrong JSON type are ignored; nil in, nil out.
func SummarizePatient(patient map[string]any) *PatientSummary {
	if patient == nil {
		return nil
	}
	raw, err := json.Marshal(patient)
	if err != nil {
		return &PatientSummary{}
	}
	return summarizePatientJSON(raw)
}

func summarizePatientJSON(raw []byte) *PatientSummary {
	var p fhirPatient
	if err := json.Unmarshal(raw, &p); err != nil {
		// A type error leaves the other fields filled in, which is all
		// the summary needs; anything else means nothing was read.
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return &PatientSummary{}
		}
	}
	s := &PatientSummary{BirthDate: strings.TrimSpace(p.BirthDate), Gender: strings.TrimSpace(p.Gender)}
	for _, n := range p.Name {
		if n.Family != "" || len(n.Given) > 0 || n.Text != "" {
			s.Names = append(s.Names, n)
		}
	}
	for _, id := range p.Identifier {
		if id.Value != "" {
			s.Identifiers = append(s.Identifiers, id)
		}
	}
	return s
}
