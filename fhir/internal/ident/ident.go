// Package ident holds the FHIR id rule for the packages below package fhir
// (fhirpath, searchparam), which cannot import it. Everyone else calls
// fhir.IsID, which is this function.
package ident

// IsID reports whether s is a FHIR id that is safe as a URL path segment:
// FHIR's id datatype, [A-Za-z0-9\-\.]{1,64}, minus the ids made only of
// dots ("." , "..", "..."). FHIR's regex allows those, but in a URL "." and
// ".." are dot-segments: "Patient/.." is the base itself, and a gateway, a
// proxy or an upstream may resolve it before anyone checks the type. No
// server hands such ids out (HAPI and the embedded store use numbers and
// UUIDs), so refusing them loses nothing and closes path traversal through
// ids everywhere at once. Dots inside an id ("a.b", "a..b") stay valid.
func IsID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	allDots := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			allDots = false
		default:
			return false
		}
	}
	return !allDots
}
