package fhirpath

import "strings"

// ForType returns an expression that gives what e gives when evaluated
// on a resource of type resourceType (the focus), with the operands of
// its top-level unions that can only select another type left out.
//
// A search parameter shared by many types is one union of a path per
// type (AllergyIntolerance.code | Condition.code | … | Observation.code);
// on an Observation every other operand starts by naming a type the
// focus is not, so it gives nothing, yet costs its evaluation each time.
// An operand is left out only when that is sure: it starts with a
// capitalised name other than resourceType, Resource and DomainResource
// (memberNode keeps a focus item only of the named type), and every step
// after it gives nothing for nothing (member names, as, where, ofType,
// resolve, first: not exists() or empty(), which answer for an
// empty input). Evaluated on anything else than a resource of
// resourceType, the result may differ: use e there.
func (e *Expr) ForType(resourceType string) *Expr {
	root, changed := pruneUnion(e.root, resourceType)
	if !changed {
		return e
	}
	if _, isUnion := e.root.(unionNode); isUnion {
		_, still := root.(unionNode)
		if _, empty := root.(emptyNode); !still && !empty {
			// A union removes duplicates, even those of one operand
			// (Patient.name.given with the same given name twice).
			root = unionNode{root, emptyNode{}}
		}
	}
	return &Expr{src: e.src, root: root}
}

// emptyNode gives nothing.
type emptyNode struct{}

func (emptyNode) eval(*evalContext, []Node) ([]Node, error) { return nil, nil }

// pruneUnion drops the operands of the top-level unions of n that select
// another type than typ (nil when all are dropped).
func pruneUnion(n node, typ string) (node, bool) {
	u, ok := n.(unionNode)
	if !ok {
		if selectsOtherType(n, typ) {
			return emptyNode{}, true
		}
		return n, false
	}
	left, lc := pruneUnion(u.left, typ)
	right, rc := pruneUnion(u.right, typ)
	_, lEmpty := left.(emptyNode)
	_, rEmpty := right.(emptyNode)
	switch {
	case lEmpty:
		return right, true
	case rEmpty:
		return left, true
	case !lc && !rc:
		return n, false
	}
	return unionNode{left, right}, true
}

// selectsOtherType reports whether n surely gives nothing on a resource
// of type typ (see ForType).
func selectsOtherType(n node, typ string) bool {
	for {
		switch v := n.(type) {
		case memberNode:
			if !v.leading || !startsUpper(v.name) || strings.Contains(v.name, ".") {
				return false
			}
			return v.name != typ && v.name != "Resource" && v.name != "DomainResource"
		case chainNode:
			if !emptyForEmpty(v.step) {
				return false
			}
			n = v.target
		case typeNode:
			if v.op != "as" {
				return false
			}
			n = v.operand
		default:
			return false
		}
	}
}

// emptyForEmpty reports whether a chain step surely gives nothing when
// its input is empty.
func emptyForEmpty(step node) bool {
	switch v := step.(type) {
	case memberNode:
		return !v.leading
	case funcNode:
		switch v.name {
		case "where", "as", "ofType", "resolve", "first":
			return true
		}
	}
	return false
}
