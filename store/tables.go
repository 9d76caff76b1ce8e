package store

//go:generate go run ./internal/gentables -in ../testdata/fhir/compartmentdefinition-patient.r4.json -out tables_gen.go

// isResourceType reports whether name is a FHIR R4 resource type.
func isResourceType(name string) bool { return resourceTypes[name] }
