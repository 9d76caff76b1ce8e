package authz

import (
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// identityScopes are the non-resource scopes the server grants.
var identityScopes = map[string]string{
	"openid":         "Know who you are (your account)",
	"fhirUser":       "Know which person in the record you are",
	"launch/patient": "Know whose record it is working with",
	"offline_access": "Stay connected when you are not using it, until you disconnect it",
	"online_access":  "Stay connected while you are using it",
}

// typeWords name resource types in plain language.
var typeWords = map[string]string{
	"*":                   "all your health data",
	"Patient":             "your personal details (name, birth date, address)",
	"Observation":         "your lab results, vital signs and other measurements",
	"Condition":           "your conditions and diagnoses",
	"MedicationRequest":   "your medications (prescriptions)",
	"MedicationStatement": "your medications",
	"Medication":          "medications",
	"AllergyIntolerance":  "your allergies",
	"Immunization":        "your immunizations",
	"Procedure":           "your procedures",
	"Encounter":           "your visits",
	"DiagnosticReport":    "your test reports",
	"DocumentReference":   "your documents",
	"CarePlan":            "your care plans",
	"Goal":                "your goals",
	"Device":              "your devices",
	"Coverage":            "your insurance coverage",
}

// scopeItem is one untickable line of the consent page.
type scopeItem struct {
	Scope    string
	Label    string
	Disabled bool
}

// describe says in plain language what a scope lets an app do.
func describe(scope string) string {
	if d, ok := identityScopes[scope]; ok {
		return d
	}
	rs, ok := auth.ParseResourceScope(scope)
	if !ok {
		return scope
	}
	what, ok := typeWords[rs.ResourceType]
	if !ok {
		what = "your " + rs.ResourceType + " resources"
	}
	var verbs []string
	if strings.ContainsAny(rs.Permissions, "rs") {
		verbs = append(verbs, "read")
	}
	if strings.Contains(rs.Permissions, "c") {
		verbs = append(verbs, "add to")
	}
	if strings.Contains(rs.Permissions, "u") {
		verbs = append(verbs, "change")
	}
	if strings.Contains(rs.Permissions, "d") {
		verbs = append(verbs, "delete from")
	}
	text := strings.Join(verbs, ", ")
	if len(verbs) > 1 {
		text = strings.Join(verbs[:len(verbs)-1], ", ") + " and " + verbs[len(verbs)-1]
	}
	text = strings.ToUpper(text[:1]) + text[1:] + " " + what
	if rs.Restricted {
		text += " (only some of them)"
	}
	return text
}

// userScopes keeps the requested scopes the server can grant in an
// interactive launch (resource scopes in patient or user context, identity
// and launch scopes), in request order without duplicates; allowed, when
// not empty, bounds them (a client's registered scope).
func userScopes(requested []string, allowed string) []string {
	var out []string
	limit := strings.Fields(allowed)
	for _, sc := range requested {
		if slices.Contains(out, sc) || (len(limit) > 0 && !slices.Contains(limit, sc)) {
			continue
		}
		if _, ok := identityScopes[sc]; ok {
			out = append(out, sc)
			continue
		}
		if rs, ok := auth.ParseResourceScope(sc); ok && rs.Context != "system" {
			out = append(out, sc)
		}
	}
	return out
}

// writes reports whether a scope lets its holder write.
func writes(scope string) bool {
	rs, ok := auth.ParseResourceScope(scope)
	return ok && rs.Writes()
}

// subset reports whether every element of a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
