package fhirpath

import (
	"fmt"
	"unicode"
)

// node is one element of a compiled expression tree. eval maps the focus
// collection to the result collection.
type node interface {
	eval(c *evalContext, focus []Node) ([]Node, error)
}

type (
	literalNode struct{ value Node }
	thisNode    struct{}
	envNode     struct{ name string }
	// memberNode selects a child element of every focus item. As the first
	// step of a term a capitalised name instead names the focus's type
	// (Observation.code), keeping the items of that type.
	memberNode struct {
		name    string
		leading bool
		choices []choiceKey
	}
	chainNode struct{ target, step node }
	indexNode struct{ target, index node }
	unionNode struct{ left, right node }
	typeNode  struct {
		op      string // "is" or "as"
		operand node
		typ     string
	}
	binaryNode struct {
		op          string
		left, right node
	}
	funcNode struct {
		name string
		args []node
		typ  string // the type argument of is(), as(), ofType()
	}
)

func (n literalNode) eval(*evalContext, []Node) ([]Node, error) { return []Node{n.value}, nil }

func (thisNode) eval(_ *evalContext, focus []Node) ([]Node, error) { return focus, nil }

func (n envNode) eval(c *evalContext, _ []Node) ([]Node, error) {
	return []Node{c.resource}, nil
}

func (n memberNode) eval(_ *evalContext, focus []Node) ([]Node, error) {
	var out []Node
	for _, item := range focus {
		if n.leading && startsUpper(n.name) {
			// FHIR element names start lowercase: a capitalised first
			// name is a type, which keeps the items of that type
			// (Observation.code on an Observation) and drops the others
			// (Patient.name on an Observation).
			if typeMatches(item, n.name) {
				out = append(out, item)
			}
			continue
		}
		out = appendChildren(out, item, n.name, n.choices)
	}
	return out, nil
}

func startsUpper(s string) bool {
	for _, r := range s {
		return unicode.IsUpper(r)
	}
	return false
}

func (n chainNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	in, err := n.target.eval(c, focus)
	if err != nil {
		return nil, err
	}
	// The step runs even on an empty input: exists(), empty() and count()
	// have an answer for it.
	return n.step.eval(c, in)
}

func (n indexNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	in, err := n.target.eval(c, focus)
	if err != nil {
		return nil, err
	}
	idx, err := n.index.eval(c, focus)
	if err != nil {
		return nil, err
	}
	if len(idx) != 1 {
		return nil, nil
	}
	f, ok := toFloat(idx[0].Value)
	if !ok || f != float64(int(f)) {
		return nil, fmt.Errorf("indexer must be an integer, got %v", idx[0].Value)
	}
	i := int(f)
	if i < 0 || i >= len(in) {
		return nil, nil
	}
	return []Node{in[i]}, nil
}

func (n unionNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	left, err := n.left.eval(c, focus)
	if err != nil {
		return nil, err
	}
	right, err := n.right.eval(c, focus)
	if err != nil {
		return nil, err
	}
	out := make([]Node, 0, len(left)+len(right))
	for _, item := range append(left, right...) {
		if !containsNode(out, item) {
			out = append(out, item)
		}
	}
	return out, nil
}

func (n typeNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	in, err := n.operand.eval(c, focus)
	if err != nil {
		return nil, err
	}
	if n.op == "as" {
		return filterType(in, n.typ), nil
	}
	if len(in) != 1 {
		return nil, nil
	}
	return boolean(typeMatches(in[0], n.typ)), nil
}

func filterType(in []Node, typ string) []Node {
	var out []Node
	for _, item := range in {
		if typeMatches(item, typ) {
			out = append(out, item)
		}
	}
	return out
}

func (n binaryNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	left, err := n.left.eval(c, focus)
	if err != nil {
		return nil, err
	}
	right, err := n.right.eval(c, focus)
	if err != nil {
		return nil, err
	}
	switch n.op {
	case "and", "or", "xor", "implies":
		return logic(n.op, left, right)
	case "=", "!=":
		if len(left) == 0 || len(right) == 0 {
			return nil, nil
		}
		eq := collectionsEqual(left, right)
		return boolean(eq == (n.op == "=")), nil
	default: // < <= > >=
		if len(left) != 1 || len(right) != 1 {
			return nil, nil
		}
		cmp, ok := compareValues(left[0].Value, right[0].Value)
		if !ok {
			return nil, nil
		}
		switch n.op {
		case "<":
			return boolean(cmp < 0), nil
		case "<=":
			return boolean(cmp <= 0), nil
		case ">":
			return boolean(cmp > 0), nil
		default:
			return boolean(cmp >= 0), nil
		}
	}
}

// logic implements FHIRPath's three-valued boolean operators; an empty
// operand is "unknown".
func logic(op string, left, right []Node) ([]Node, error) {
	l, lok, err := toBool(left)
	if err != nil {
		return nil, err
	}
	r, rok, err := toBool(right)
	if err != nil {
		return nil, err
	}
	switch op {
	case "and":
		switch {
		case lok && rok:
			return boolean(l && r), nil
		case lok && !l, rok && !r:
			return boolean(false), nil
		}
	case "or":
		switch {
		case lok && rok:
			return boolean(l || r), nil
		case lok && l, rok && r:
			return boolean(true), nil
		}
	case "xor":
		if lok && rok {
			return boolean(l != r), nil
		}
	case "implies":
		switch {
		case lok && rok:
			return boolean(!l || r), nil
		case lok && !l, rok && r:
			return boolean(true), nil
		}
	}
	return nil, nil
}

// toBool converts a collection to a boolean following FHIRPath's singleton
// evaluation: empty is unknown, one boolean is itself, one other item is true.
func toBool(in []Node) (value, known bool, err error) {
	switch len(in) {
	case 0:
		return false, false, nil
	case 1:
		if b, ok := in[0].Value.(bool); ok {
			return b, true, nil
		}
		return true, true, nil
	}
	return false, false, fmt.Errorf("expected a single boolean, got %d items", len(in))
}

func boolean(b bool) []Node { return []Node{{Value: b, Type: "boolean"}} }
