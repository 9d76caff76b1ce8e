package fhir

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// refKind is what a reference string points to, from the PFR's view.
type refKind int

const (
	// refInvalid: refused; target.why says why.
	refInvalid refKind = iota
	// refSelf: the PFR's own Patient.
	refSelf
	// refLocal: a resource of this PFR (or of the same Bundle, or
	// contained) that is not a Patient.
	refLocal
	// refExternal: a non-Patient resource on another server, allowed by
	// OwnershipPolicy.ExternalReferences.
	refExternal
)

// refTarget is the classification of one reference string.
type refTarget struct {
	kind refKind
	typ  string // target resource type, when known
	why  string // for refInvalid
}

// refChecker walks one resource and judges every reference in it.
type refChecker struct {
	owner     Owner
	policy    OwnershipPolicy
	uuids     map[string]string
	contained map[string]string // contained id → resourceType
	issues    []Issue
	paths     map[string]string // reference → the location it was first seen at
}

func (o Owner) newRefChecker(res map[string]any, p OwnershipPolicy, uuids map[string]string) *refChecker {
	c := &refChecker{owner: o, policy: p, uuids: uuids, contained: map[string]string{}, paths: map[string]string{}}
	list, _ := res["contained"].([]any)
	for _, item := range list {
		m, _ := item.(map[string]any)
		id, _ := m["id"].(string)
		typ, _ := m["resourceType"].(string)
		if id != "" {
			c.contained[id] = typ
		}
	}
	return c
}

// walk visits every value under v, located at loc. Every object with a
// string "reference" is judged as a Reference; every embedded resource
// that is a Patient is refused. Keys are visited in sorted order so that
// issues come out in a stable order.
func (c *refChecker) walk(v any, loc string, top bool) {
	switch v := v.(type) {
	case map[string]any:
		if !top && v["resourceType"] == "Patient" {
			c.issues = append(c.issues, ownershipIssue(CodeBusinessRule, loc,
				"a Patient embedded in another resource is another person's record: only "+c.owner.selfReference()+" may be written, on its own"))
		}
		if ref, ok := v["reference"].(string); ok {
			c.judge(ref, loc)
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			switch v[k].(type) {
			case map[string]any, []any:
				c.walk(v[k], joinPath(loc, k), false)
			}
		}
	case []any:
		for i, item := range v {
			switch item.(type) {
			case map[string]any, []any:
				c.walk(item, loc+"["+strconv.Itoa(i)+"]", false)
			}
		}
	}
}

// judge records an issue when ref, found at loc, is not acceptable.
func (c *refChecker) judge(ref, loc string) {
	if _, seen := c.paths[ref]; !seen {
		c.paths[ref] = loc
	}
	t := c.classify(ref)
	if t.kind == refInvalid {
		c.issues = append(c.issues, ownershipIssue(CodeBusinessRule, loc, fmt.Sprintf("reference %q: %s", ref, t.why)))
	}
}

// pathOf returns where ref was seen by the walk, or loc.
func (c *refChecker) pathOf(ref, loc string) string {
	if p, ok := c.paths[ref]; ok {
		return p
	}
	return loc
}

// resolveLocal is the fhirpath resolver for Bundle-local references: it
// gives the resource type a fullUrl of the Bundle stands for.
func (c *refChecker) resolveLocal(ref string) (map[string]any, bool) {
	target, ok := c.uuids[ref]
	if !ok {
		return nil, false
	}
	typ, _, _ := strings.Cut(target, "/")
	return map[string]any{"resourceType": typ}, true
}

// classify says what ref points to.
func (c *refChecker) classify(ref string) refTarget {
	switch {
	case ref == "":
		return refTarget{why: "empty reference"}
	case ref == "#":
		return refTarget{kind: refLocal}
	case strings.HasPrefix(ref, "#"):
		typ, ok := c.contained[ref[1:]]
		switch {
		case !IsID(ref[1:]):
			return refTarget{why: "not a valid contained resource id"}
		case !ok:
			return refTarget{why: "no contained resource has this id"}
		case typ == "Patient":
			return refTarget{why: "a contained Patient is another person's record"}
		}
		return refTarget{kind: refLocal, typ: typ}
	case strings.HasPrefix(ref, "urn:"):
		target, ok := c.uuids[ref]
		if !ok {
			return refTarget{why: "not the fullUrl of an entry of the Bundle being written"}
		}
		typ, id, _ := strings.Cut(target, "/")
		return c.owner.classifyTyped(typ, id)
	}
	for _, base := range c.owner.Bases {
		base = strings.TrimSuffix(base, "/")
		if base != "" && strings.HasPrefix(ref, base+"/") {
			return c.owner.classifyRelative(ref[len(base)+1:])
		}
	}
	if strings.Contains(ref, ":") {
		return c.classifyExternal(ref)
	}
	return c.owner.classifyRelative(ref)
}

// classifyRelative classifies "Type/id" or "Type/id/_history/vid".
func (o Owner) classifyRelative(ref string) refTarget {
	typ, id, _, ok := ParseReference(ref)
	if !ok {
		return refTarget{why: "not a literal reference of the form Type/id or Type/id/_history/vid (conditional, malformed or unknown type)"}
	}
	return o.classifyTyped(typ, id)
}

// classifyTyped classifies a target known by type and id (id may be
// empty for a resource a Bundle creates).
func (o Owner) classifyTyped(typ, id string) refTarget {
	if typ != "Patient" {
		return refTarget{kind: refLocal, typ: typ}
	}
	if id == o.PatientID {
		return refTarget{kind: refSelf, typ: typ}
	}
	if id == "" {
		return refTarget{why: "a Patient created by this Bundle is another person: only " + o.selfReference() + " belongs to this record"}
	}
	return refTarget{why: fmt.Sprintf("Patient/%s is not this record's Patient (%s)", id, o.selfReference())}
}

// classifyExternal classifies an absolute reference to another server.
func (c *refChecker) classifyExternal(ref string) refTarget {
	if !c.policy.ExternalReferences {
		return refTarget{why: "a reference to another server cannot be checked; use a reference local to this record"}
	}
	scheme, rest, _ := strings.Cut(ref, "://")
	if scheme != "https" && scheme != "http" || rest == "" {
		return refTarget{why: "not a reference to a FHIR server"}
	}
	segs := strings.Split(rest, "/")
	if len(segs) >= 4 && segs[len(segs)-2] == "_history" {
		segs = segs[:len(segs)-2]
	}
	if len(segs) < 3 || strings.ContainsAny(rest, "?#%\\") {
		return refTarget{why: "not an absolute reference of the form base/Type/id"}
	}
	typ, id := segs[len(segs)-2], segs[len(segs)-1]
	switch {
	case !IsResourceType(typ) || !IsID(id):
		return refTarget{why: "not an absolute reference of the form base/Type/id"}
	case typ == "Patient":
		return refTarget{why: "a Patient on another server is not this record's Patient"}
	case typ == "Group":
		return refTarget{why: "a Group on another server stands for other people"}
	}
	return refTarget{kind: refExternal, typ: typ}
}
