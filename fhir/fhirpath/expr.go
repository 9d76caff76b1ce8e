package fhirpath

import (
	"errors"
	"fmt"
	"strings"
)

// Node is one item of a FHIRPath result collection.
type Node struct {
	// Value is the JSON value: map[string]any for complex types and
	// resources, string, bool, float64 or json.Number for primitives.
	Value any
	// Type is the FHIR type name when it is known: the resourceType of a
	// resource, the suffix of a choice element (valueQuantity gives
	// "Quantity", valueDateTime gives "dateTime"), or the type of a literal.
	// It is empty for ordinary elements, whose type a caller infers from the
	// JSON shape.
	Type string
	// loc is where the element sits in the evaluated resource; nil for
	// the resource itself, literals and computed values.
	loc *location
}

// location is the place of an element: member key of parent, at index of
// the member's array (-1 when the member is not an array).
type location struct {
	parent map[string]any
	key    string
	index  int
}

// Location says where an element found by a path sits in the evaluated
// resource, so that a caller can change it (FHIRPath Patch): the object
// holding it (parent), its member name there (key, the JSON name: a
// choice element's valueQuantity), and its index in the member's array,
// or -1 when the member holds a single value. ok is false for the
// resource itself, literals and computed values (count(), comparisons,
// resolve() of a reference).
func (n Node) Location() (parent map[string]any, key string, index int, ok bool) {
	if n.loc == nil {
		return nil, "", 0, false
	}
	return n.loc.parent, n.loc.key, n.loc.index, true
}

// Resolver returns the resource a reference string points to, for resolve().
// It is consulted before the built-in rules (contained "#id", "Type/id").
type Resolver func(reference string) (resource map[string]any, ok bool)

// Env carries what an evaluation may need beyond the resource itself.
// The zero value is ready to use.
type Env struct {
	// Resolve, if set, resolves references that the built-in rules cannot,
	// such as "urn:uuid:…" entries of a Bundle being written.
	Resolve Resolver
	// MaxSteps, if positive, bounds the criteria evaluations of one
	// evaluation (each item that where() or exists() tests is one step,
	// nested ones included): an expression written by a client
	// (FHIRPath Patch) could otherwise nest where() into work that grows
	// as the resource's size to the power of the nesting. Past it the
	// evaluation fails with ErrTooCostly.
	MaxSteps int
}

// noEnv is the Env of an evaluation given none (an Env is only read).
var noEnv Env

// ErrTooCostly is the error of an evaluation that exceeded Env.MaxSteps.
var ErrTooCostly = errors.New("the expression needs too much work on this resource")

// Expr is a compiled FHIRPath expression. It is immutable and safe for
// concurrent use.
type Expr struct {
	src  string
	root node
}

// Compile parses src into an Expr.
func Compile(src string) (*Expr, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, fmt.Errorf("fhirpath: compile %q: %w", src, err)
	}
	p := &parser{toks: toks}
	root, err := p.parseExpr(0)
	if err != nil {
		return nil, fmt.Errorf("fhirpath: compile %q: %w", src, err)
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, fmt.Errorf("fhirpath: compile %q: at offset %d: unexpected %q", src, t.pos, t.text)
	}
	return &Expr{src: src, root: root}, nil
}

// MustCompile is Compile for expressions known to be valid; it panics on error.
func MustCompile(src string) *Expr {
	e, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return e
}

// Parent splits an expression whose last step is an element name
// ("Patient.contact.name") into the expression of its parent
// ("Patient.contact") and the name: what FHIRPath Patch needs to insert
// into a list that is still empty. ok is false for any other shape.
func (e *Expr) Parent() (parent *Expr, name string, ok bool) {
	c, isChain := e.root.(chainNode)
	if !isChain {
		return nil, "", false
	}
	m, isMember := c.step.(memberNode)
	if !isMember || m.leading {
		return nil, "", false
	}
	src := strings.TrimSpace(e.src)
	src = strings.TrimSpace(strings.TrimSuffix(src, m.name))
	src = strings.TrimSpace(strings.TrimSuffix(src, "."))
	return &Expr{src: src, root: c.target}, m.name, true
}

// String returns the source text of e.
func (e *Expr) String() string { return e.src }

// Evaluate evaluates e with resource as %resource and as the initial focus.
func (e *Expr) Evaluate(resource map[string]any) ([]Node, error) {
	return e.EvaluateEnv(resource, nil)
}

// EvaluateEnv is Evaluate with an environment (may be nil).
func (e *Expr) EvaluateEnv(resource map[string]any, env *Env) ([]Node, error) {
	if resource == nil {
		return nil, nil
	}
	if env == nil {
		env = &noEnv
	}
	root := resourceNode(resource)
	// The context and the initial focus in one allocation.
	start := &struct {
		c     evalContext
		focus [1]Node
	}{c: evalContext{env: env, resource: root}, focus: [1]Node{root}}
	out, err := e.root.eval(&start.c, start.focus[:])
	if err != nil {
		return nil, fmt.Errorf("fhirpath: evaluate %q: %w", e.src, err)
	}
	return out, nil
}

// EvaluateFocus evaluates e with focus as the initial focus and resource as
// %resource: the component expressions of a composite SearchParameter are
// relative to each item its main expression found.
func (e *Expr) EvaluateFocus(resource map[string]any, focus Node, env *Env) ([]Node, error) {
	if env == nil {
		env = &noEnv
	}
	c := &evalContext{env: env, resource: resourceNode(resource)}
	out, err := e.root.eval(c, []Node{focus})
	if err != nil {
		return nil, fmt.Errorf("fhirpath: evaluate %q: %w", e.src, err)
	}
	return out, nil
}

// resourceNode wraps a resource, typed by its resourceType.
func resourceNode(res map[string]any) Node {
	t, _ := res["resourceType"].(string)
	return Node{Value: res, Type: t}
}

// evalContext is the per-evaluation state shared by all nodes.
type evalContext struct {
	env      *Env
	resource Node
	steps    int
}

// step counts one criteria evaluation against Env.MaxSteps.
func (c *evalContext) step() error {
	c.steps++
	if c.env.MaxSteps > 0 && c.steps > c.env.MaxSteps {
		return ErrTooCostly
	}
	return nil
}
