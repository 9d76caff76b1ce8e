package auth

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestScopeMatrix checks every interaction against v1 and v2 scopes, on
// the scope's type, on another type, and at system level.
func TestScopeMatrix(t *testing.T) {
	reads := []Interaction{InteractionRead, InteractionVRead, InteractionHistoryInstance}
	searches := []Interaction{InteractionSearch, InteractionHistoryType}
	updates := []Interaction{InteractionUpdate, InteractionPatch}
	all := Interactions
	concat := func(lists ...[]Interaction) []Interaction { return slices.Concat(lists...) }
	readSearch := concat(reads, searches, []Interaction{InteractionOperation})
	writes := concat([]Interaction{InteractionCreate, InteractionDelete}, updates)

	tests := []struct {
		scope string
		// allowed on Observation; everything else is denied.
		allowed []Interaction
		// wildcard: the scope covers every type, so it also allows system level.
		wildcard bool
	}{
		// SMART v1.
		{"patient/Observation.read", readSearch, false},
		{"patient/Observation.write", writes, false},
		{"patient/Observation.*", all, false},
		{"user/Observation.read", readSearch, false},
		{"system/Observation.write", writes, false},
		{"patient/*.read", readSearch, true},
		{"user/*.*", all, true},
		{"system/*.write", writes, true},
		// SMART v2.
		{"patient/Observation.c", []Interaction{InteractionCreate}, false},
		{"patient/Observation.r", reads, false},
		{"patient/Observation.u", updates, false},
		{"patient/Observation.d", []Interaction{InteractionDelete}, false},
		{"patient/Observation.s", searches, false},
		{"patient/Observation.rs", readSearch, false},
		{"patient/Observation.cud", writes, false},
		{"patient/Observation.cruds", all, false},
		{"user/Observation.cr", concat([]Interaction{InteractionCreate}, reads), false},
		{"system/Observation.ds", concat([]Interaction{InteractionDelete}, searches), false},
		{"patient/*.rs", readSearch, true},
		{"user/*.cruds", all, true},
		{"system/*.u", updates, true},
		// Other types grant nothing on Observation.
		{"patient/Patient.cruds", nil, false},
		{"patient/Patient.*", nil, false},
	}
	for _, tt := range tests {
		g := ParseScopes([]string{tt.scope})
		if len(g.Unrecognized) != 0 || !g.HasResourceScopes() {
			t.Fatalf("%s not recognized", tt.scope)
		}
		for _, in := range Interactions {
			want := slices.Contains(tt.allowed, in)
			ok, missing := g.Allows(Request{Interaction: in, ResourceType: "Observation"})
			if ok != want {
				t.Errorf("%s: %s Observation allowed=%v, want %v", tt.scope, in, ok, want)
			}
			if !ok && !strings.HasSuffix(missing, "/Observation."+in.needs().String()) {
				t.Errorf("%s: %s Observation: missing %q", tt.scope, in, missing)
			}
			if ok, _ := g.Allows(Request{Interaction: in, ResourceType: "Condition"}); ok != (want && tt.wildcard) {
				t.Errorf("%s: %s Condition allowed=%v, want %v", tt.scope, in, ok, want && tt.wildcard)
			}
			if ok, _ := g.Allows(Request{Interaction: in}); ok != (want && tt.wildcard) {
				t.Errorf("%s: system-level %s allowed=%v, want %v", tt.scope, in, ok, want && tt.wildcard)
			}
		}
	}
}

func TestScopeMissingNamesTheScope(t *testing.T) {
	tests := []struct {
		scopes  []string
		req     Request
		missing string
	}{
		{nil, Request{Interaction: InteractionRead, ResourceType: "Observation"}, "patient/Observation.r"},
		{[]string{"patient/Observation.s"}, Request{Interaction: InteractionRead, ResourceType: "Observation"}, "patient/Observation.r"},
		{[]string{"user/Condition.rs"}, Request{Interaction: InteractionCreate, ResourceType: "Observation"}, "user/Observation.c"},
		{[]string{"system/*.c"}, Request{Interaction: InteractionPatch, ResourceType: "Patient"}, "system/Patient.u"},
		{[]string{"patient/Observation.r"}, Request{Interaction: InteractionOperation, ResourceType: "Observation"}, "patient/Observation.rs"},
		{[]string{"patient/Observation.rs"}, Request{Interaction: InteractionSearch}, "patient/*.s"},
		{[]string{"openid"}, Request{Interaction: InteractionDelete, ResourceType: "Observation"}, "patient/Observation.d"},
	}
	for _, tt := range tests {
		ok, missing := ParseScopes(tt.scopes).Allows(tt.req)
		if ok || missing != tt.missing {
			t.Errorf("%q %+v: ok=%v missing=%q, want %q", tt.scopes, tt.req, ok, missing, tt.missing)
		}
	}
}

func TestParseScopesRejectsInvalid(t *testing.T) {
	invalid := []string{
		"patient/Observation.sr",                       // letters out of order
		"patient/Observation.rr",                       // repeated letter
		"patient/Observation.x",                        // unknown letter
		"patient/Observation.",                         // no permission
		"patient/Observation",                          // no dot
		"patient/observation.read",                     // not a resource type
		"patient/.rs",                                  // no type
		"patient/Obs-ervation.rs",                      // not a resource type
		"practitioner/Observation.rs",                  // unknown context
		"Patient/Observation.rs",                       // contexts are lower case
		"Observation.read",                             // no context
		"patient/Observation.read?category=laboratory", // query needs v2
		"patient/Observation.rs?",                      // empty query
		"patient/Observation.rs?category=",             // empty value
		"patient/Observation.rs?=x",                    // empty name
		"patient/Observation.rs?category=%zz",          // bad escape
		"patient/*.READ",
		"email-ish",
	}
	for _, s := range invalid {
		g := ParseScopes([]string{s})
		if g.HasResourceScopes() {
			t.Errorf("%q parsed as a resource scope", s)
		}
		if !slices.Equal(g.Unrecognized, []string{s}) {
			t.Errorf("%q not listed as unrecognized: %q", s, g.Unrecognized)
		}
		for _, in := range Interactions {
			if ok, _ := g.Allows(Request{Interaction: in, ResourceType: "Observation", Query: url.Values{"category": {"laboratory"}}}); ok {
				t.Errorf("invalid scope %q allows %s", s, in)
			}
		}
	}
}

func TestParseScopesIgnoresIdentityAndLaunchScopes(t *testing.T) {
	g := ParseScopes([]string{"openid", "profile", "fhirUser", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access"})
	if g.HasResourceScopes() || len(g.Unrecognized) != 0 {
		t.Fatalf("grants %+v, want none and nothing unrecognized", g)
	}
	if ok, _ := g.Allows(Request{Interaction: InteractionRead, ResourceType: "Patient"}); ok {
		t.Error("identity scopes allow a read")
	}
}

func TestMixedV1AndV2Scopes(t *testing.T) {
	// One token string as an IdP would send it, with both syntaxes.
	g := ParseScopes(strings.Fields("openid fhirUser launch/patient patient/Observation.read patient/Condition.c user/Patient.u system/MedicationRequest.rs?status=active offline_access"))
	if got := g.Scopes(); len(got) != 4 {
		t.Fatalf("Scopes() = %q", got)
	}
	tests := []struct {
		req Request
		ok  bool
	}{
		{Request{Interaction: InteractionSearch, ResourceType: "Observation"}, true},
		{Request{Interaction: InteractionCreate, ResourceType: "Observation"}, false},
		{Request{Interaction: InteractionCreate, ResourceType: "Condition"}, true},
		{Request{Interaction: InteractionRead, ResourceType: "Condition"}, false},
		{Request{Interaction: InteractionUpdate, ResourceType: "Patient"}, true},
		{Request{Interaction: InteractionRead, ResourceType: "Patient"}, false},
		{Request{Interaction: InteractionSearch, ResourceType: "MedicationRequest", Query: url.Values{"status": {"active"}}}, true},
		{Request{Interaction: InteractionSearch, ResourceType: "MedicationRequest"}, false},
		{Request{Interaction: InteractionSearch}, false},
		{Request{Interaction: "transaction", ResourceType: "Observation"}, false},
	}
	for _, tt := range tests {
		if ok, _ := g.Allows(tt.req); ok != tt.ok {
			t.Errorf("%+v allowed=%v, want %v", tt.req, ok, tt.ok)
		}
	}
}

func TestQueryRestrictedSearch(t *testing.T) {
	lab := ParseScopes([]string{"patient/Observation.rs?category=laboratory"})
	labOrVitals := ParseScopes([]string{"patient/Observation.rs?category=laboratory,vital-signs"})
	labFinal := ParseScopes([]string{"patient/Observation.rs?category=laboratory&status=final"})
	q := func(raw string) url.Values {
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name   string
		grants Grants
		query  string
		ok     bool
	}{
		{"exact", lab, "category=laboratory", true},
		{"with more filters", lab, "category=laboratory&code=1234-5&_count=10", true},
		{"repeated, one matches (AND)", lab, "category=vital-signs&category=laboratory", true},
		{"no filter", lab, "", false},
		{"other value", lab, "category=vital-signs", false},
		{"OR wider than the scope", lab, "category=laboratory,vital-signs", false},
		{"modifier", lab, "category:not=laboratory", false},
		{"system|code is another value", lab, "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", false},
		{"escaped comma is one value", lab, `category=laboratory\,vital-signs`, false},
		{"other param only", lab, "code=laboratory", false},
		{"scope OR: one", labOrVitals, "category=vital-signs", true},
		{"scope OR: both", labOrVitals, "category=vital-signs,laboratory", true},
		{"scope OR: outside", labOrVitals, "category=laboratory,social-history", false},
		{"AND scope: both given", labFinal, "status=final&category=laboratory", true},
		{"AND scope: one missing", labFinal, "category=laboratory", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, missing := tt.grants.Allows(Request{Interaction: InteractionSearch, ResourceType: "Observation", Query: q(tt.query)})
			if ok != tt.ok {
				t.Fatalf("allowed=%v, want %v", ok, tt.ok)
			}
			if !ok && missing != "patient/Observation.s" {
				t.Errorf("missing = %q", missing)
			}
		})
	}
	// history-type and operations are not filtered by search parameters.
	for _, in := range []Interaction{InteractionHistoryType, InteractionOperation} {
		if ok, _ := lab.Allows(Request{Interaction: in, ResourceType: "Observation", Query: q("category=laboratory")}); ok {
			t.Errorf("restricted scope allows %s", in)
		}
	}
}

func TestQueryRestrictedResourceAccess(t *testing.T) {
	g := ParseScopes([]string{"patient/Observation.cruds?category=laboratory", "patient/Condition.r"})
	for _, in := range []Interaction{InteractionRead, InteractionVRead, InteractionHistoryInstance, InteractionCreate, InteractionUpdate, InteractionPatch, InteractionDelete} {
		lab := Request{Interaction: in, ResourceType: "Observation", Query: url.Values{"category": {"vital-signs", "laboratory"}}}
		if ok, _ := g.Allows(lab); !ok {
			t.Errorf("%s of a laboratory Observation denied", in)
		}
		vitals := Request{Interaction: in, ResourceType: "Observation", Query: url.Values{"category": {"vital-signs"}}}
		if ok, missing := g.Allows(vitals); ok || missing != "patient/Observation."+in.needs().String() {
			t.Errorf("%s of a vital-signs Observation: ok=%v missing=%q", in, ok, missing)
		}
		if ok, _ := g.Allows(Request{Interaction: in, ResourceType: "Observation"}); ok {
			t.Errorf("%s of an Observation without values allowed", in)
		}
		// A caller-supplied matcher sees the restriction and decides.
		var seen url.Values
		ok, _ := g.AllowsWith(Request{Interaction: in, ResourceType: "Observation"}, func(r url.Values) bool {
			seen = r
			return r.Get("category") == "laboratory"
		})
		if !ok || seen.Get("category") != "laboratory" {
			t.Errorf("%s with matcher: ok=%v restriction=%v", in, ok, seen)
		}
		if ok, _ := g.AllowsWith(lab, func(url.Values) bool { return false }); ok {
			t.Errorf("%s allowed although the matcher refused", in)
		}
		if ok, _ := g.AllowsWith(lab, nil); ok {
			t.Errorf("%s allowed by a restricted scope with no matcher", in)
		}
	}
	// An unrestricted scope for the type needs no matcher.
	if ok, _ := g.AllowsWith(Request{Interaction: InteractionRead, ResourceType: "Condition"}, nil); !ok {
		t.Error("unrestricted read denied")
	}
}

func TestPermString(t *testing.T) {
	for _, s := range []string{"c", "r", "cr", "rs", "cud", "cruds", "ds"} {
		p, v2, ok := parsePerm(s)
		if !ok || !v2 || p.String() != s {
			t.Errorf("parsePerm(%q) = %v %v %v", s, p, v2, ok)
		}
	}
	for word, want := range map[string]string{"read": "rs", "write": "cud", "*": "cruds"} {
		p, v2, ok := parsePerm(word)
		if !ok || v2 || p.String() != want {
			t.Errorf("v1 %q = %q, want %q", word, p, want)
		}
	}
}
