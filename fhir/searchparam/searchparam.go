// Package searchparam is the registry of the FHIR R4 SearchParameters: a
// table generated from the official SearchParameter Bundle
// (testdata/fhir/search-parameters.r4.json), looked up by resource type and
// code, with each parameter's FHIRPath expression compiled on first use.
package searchparam

//go:generate go run gen.go

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
)

// Search parameter types (SearchParameter.type).
const (
	TypeNumber    = "number"
	TypeDate      = "date"
	TypeString    = "string"
	TypeToken     = "token"
	TypeReference = "reference"
	TypeComposite = "composite"
	TypeQuantity  = "quantity"
	TypeURI       = "uri"
	TypeSpecial   = "special"
)

// Param is one R4 SearchParameter. The table's *Param values are shared:
// treat every field as read-only.
type Param struct {
	ID          string   // SearchParameter.id, e.g. "Observation-code"
	URL         string   // canonical URL, for CapabilityStatement.rest.resource.searchParam.definition
	Code        string   // the name used in URLs, e.g. "code"
	Type        string   // one of the Type* constants
	Base        []string // resource types it applies to; may be "Resource" or "DomainResource"
	Expression  string   // FHIRPath; empty for _text, _content and _query
	Target      []string // resource types a reference parameter may point to
	Modifier    []string // modifiers listed by the definition (none in R4 core)
	Comparator  []string // prefixes listed by the definition (eq, ne, gt, …)
	Components  []Component
	Description string
	// NoMultipleOr is true when the definition says multipleOr=false.
	NoMultipleOr bool

	compileOnce sync.Once
	compiled    *fhirpath.Expr
	compileErr  error
	forType     sync.Map // resource type → compiled.ForType(it)

	componentsOnce sync.Once
	components     []ResolvedComponent
	componentsErr  error
}

// ResolvedComponent is a composite parameter's component with its
// definition looked up and its expression compiled.
type ResolvedComponent struct {
	Param *Param         // the component's own SearchParameter, for its type
	Expr  *fhirpath.Expr // relative to each item of the composite's expression
}

// Component is one part of a composite SearchParameter.
type Component struct {
	Definition string // canonical URL of the component's SearchParameter
	Expression string // FHIRPath relative to the composite's expression
}

// Compiled returns the parameter's compiled FHIRPath expression. It compiles
// on first use and caches the result; it is safe for concurrent use. A
// parameter without an expression (_text, _content, _query) returns an error.
func (p *Param) Compiled() (*fhirpath.Expr, error) {
	p.compileOnce.Do(func() {
		if p.Expression == "" {
			p.compileErr = fmt.Errorf("search parameter %s has no expression", p.ID)
			return
		}
		p.compiled, p.compileErr = fhirpath.Compile(p.Expression)
		if p.compileErr != nil {
			p.compileErr = fmt.Errorf("search parameter %s: %w", p.ID, p.compileErr)
		}
	})
	return p.compiled, p.compileErr
}

// ResolvedComponents returns the components of a composite parameter with
// their definitions looked up by URL and their expressions compiled, once,
// safely for concurrent use. Other parameters return an error.
func (p *Param) ResolvedComponents() ([]ResolvedComponent, error) {
	p.componentsOnce.Do(func() {
		if p.Type != TypeComposite || len(p.Components) == 0 {
			p.componentsErr = fmt.Errorf("search parameter %s is not a composite", p.ID)
			return
		}
		for _, c := range p.Components {
			def, ok := ByURL(c.Definition)
			if !ok {
				p.componentsErr = fmt.Errorf("search parameter %s: unknown component %s", p.ID, c.Definition)
				return
			}
			e, err := fhirpath.Compile(c.Expression)
			if err != nil {
				p.componentsErr = fmt.Errorf("search parameter %s: component %s: %w", p.ID, def.Code, err)
				return
			}
			p.components = append(p.components, ResolvedComponent{Param: def, Expr: e})
		}
	})
	return p.components, p.componentsErr
}

// Evaluate evaluates the parameter's expression on res: without the
// union operands that can only select another resource type than res's
// (fhirpath.Expr.ForType, kept per type), which give nothing there.
func (p *Param) Evaluate(res map[string]any) ([]fhirpath.Node, error) {
	e, err := p.Compiled()
	if err != nil {
		return nil, err
	}
	if rt, ok := res["resourceType"].(string); ok && rt != "" {
		v, ok := p.forType.Load(rt)
		if !ok {
			v, _ = p.forType.LoadOrStore(rt, e.ForType(rt))
		}
		e = v.(*fhirpath.Expr)
	}
	return e.Evaluate(res)
}

// AppliesTo reports whether p is defined on resourceType, directly or
// through Resource or DomainResource.
func (p *Param) AppliesTo(resourceType string) bool {
	for _, b := range p.Base {
		if b == resourceType || b == "Resource" || b == "DomainResource" && isDomainResource(resourceType) {
			return true
		}
	}
	return false
}

// isDomainResource reports whether t specialises DomainResource: every
// resource type but Bundle, Binary and Parameters.
func isDomainResource(t string) bool {
	return t != "Bundle" && t != "Binary" && t != "Parameters"
}

var (
	indexOnce sync.Once
	byType    map[string]map[string]*Param
	byURL     map[string]*Param
)

// index builds the resource type → code → parameter map, with the
// Resource and DomainResource parameters copied onto each concrete type.
func index() map[string]map[string]*Param {
	indexOnce.Do(func() {
		byType = make(map[string]map[string]*Param, len(resourceTypes))
		byURL = make(map[string]*Param, len(params))
		for _, t := range resourceTypes {
			byType[t] = map[string]*Param{}
		}
		for _, p := range params {
			byURL[p.URL] = p
			for _, t := range resourceTypes {
				if p.AppliesTo(t) {
					byType[t][p.Code] = p
				}
			}
		}
	})
	return byType
}

// Lookup returns the SearchParameter code on resourceType, including the
// parameters every resource has (_id, _lastUpdated, _tag, _profile,
// _security, _source, _text, …).
func Lookup(resourceType, code string) (*Param, bool) {
	p, ok := index()[resourceType][code]
	return p, ok
}

// ByURL returns the SearchParameter with the canonical URL url.
func ByURL(url string) (*Param, bool) {
	index()
	p, ok := byURL[url]
	return p, ok
}

// ForType returns every SearchParameter of resourceType sorted by code, or
// nil for an unknown type.
func ForType(resourceType string) []*Param {
	m := index()[resourceType]
	if m == nil {
		return nil
	}
	out := make([]*Param, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Param) int { return strings.Compare(a.Code, b.Code) })
	return out
}

// All returns every SearchParameter of the table, in the order of the
// official Bundle. The slice is a copy; the *Param values are shared.
func All() []*Param { return slices.Clone(params) }

// ResourceTypes returns every FHIR R4 resource type, sorted.
func ResourceTypes() []string { return slices.Clone(resourceTypes) }

// IsResourceType reports whether t is an R4 resource type.
func IsResourceType(t string) bool {
	_, ok := index()[t]
	return ok
}

// ResourceTypeOf returns the R4 resource type that b spells and whether
// it spells one; the string is shared, so a caller reading types out of
// JSON allocates nothing for them.
func ResourceTypeOf(b []byte) (string, bool) {
	typeNamesOnce.Do(func() {
		typeNames = make(map[string]string, len(resourceTypes))
		for _, t := range resourceTypes {
			typeNames[t] = t
		}
	})
	t, ok := typeNames[string(b)]
	return t, ok
}

var (
	typeNamesOnce sync.Once
	typeNames     map[string]string // each resource type to itself
)
