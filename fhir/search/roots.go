package search

import (
	"regexp"
	"strings"
	"sync"
	"unicode"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// A parameter's expression reads a few top-level elements of a resource
// (Observation.code | Observation.component.code reads code and
// component). When a resource has none of them the expression finds
// nothing, so evaluate skips it: most of a type's parameters are about
// elements a given resource does not have, and the index keys of every
// write evaluate all of them.

// root is one element an expression reads: a top-level element (a choice
// element by its prefix, or by its full name after a cast), and when the
// path names one, the element below it.
type root struct{ elem, child string }

// rootsKey names the roots of one parameter on one resource type.
type rootsKey struct {
	p   *searchparam.Param
	typ string
}

var rootsCache sync.Map // rootsKey → []root (nil: always evaluate)

// rootsOf returns the elements p's expression reads on a resource of
// type typ, nil when the expression cannot be read so (then it is always
// evaluated).
func rootsOf(p *searchparam.Param, typ string) []root {
	key := rootsKey{p, typ}
	if v, ok := rootsCache.Load(key); ok {
		return v.([]root)
	}
	roots := parseRoots(p.Expression, typ)
	rootsCache.Store(key, roots)
	return roots
}

// opaque are the FHIRPath constructs that may read a resource without
// naming its elements after the type, or give a value (false, 0, …) when
// the elements are absent. Inside where(…) they only filter what the path
// found.
var opaque = []string{"%", "descendants(", "children(", "repeat(", "$this", "exists(", "empty(", "count(",
	"iif(", "not(", "all(", "allTrue(", "anyTrue(", "allFalse(", "anyFalse(", "hasValue(", "today(", "now(",
	" and ", " or ", " xor ", " implies ", "=", "<", ">", "{", "'", "+", "-", "*", "/", "&", "|", " is ", " as "}

func parseRoots(expr, typ string) []root {
	types := `(?:` + regexp.QuoteMeta(typ) + `|Resource|DomainResource)`
	if regexp.MustCompile(`(?:^|[^\w.])` + types + `(?:[^\w.]|$)`).MatchString(expr) {
		return nil // the resource itself
	}
	path := regexp.MustCompile(`(?:^|[^\w.])` + types + `\.([a-z]\w*)(?:\.([a-z]\w*)(\(?))?`)
	// A cast, and the elements below it ((Observation.value as
	// CodeableConcept).text): all in the one choice element.
	// A cast deeper in the resource ((Observation.component.value as
	// Quantity)): in the top-level element.
	cast := regexp.MustCompile(`^\(\s*` + types + `\.([a-z]\w*)((?:\.[a-z]\w*)*)\s+as\s+([A-Za-z]\w*)\s*\)(?:\.[a-z]\w*)*$`)
	var roots []root
	// Each side of a union on its own.
	for _, part := range strings.Split(withoutWhere(expr), "|") {
		part = strings.TrimSpace(part)
		if otherType(part, typ) {
			continue // selects nothing on typ (fhirpath.Expr.ForType drops it)
		}
		if m := cast.FindStringSubmatch(part); m != nil {
			if m[2] != "" {
				roots = append(roots, root{elem: m[1]})
			} else {
				roots = append(roots, root{elem: m[1] + strings.ToUpper(m[3][:1]) + m[3][1:]})
			}
			continue
		}
		for _, o := range opaque {
			if strings.Contains(part, o) {
				return nil
			}
		}
		for _, m := range path.FindAllStringSubmatch(part, -1) {
			if m[3] != "" { // a function, not a child element
				m[2] = ""
			}
			roots = append(roots, root{m[1], m[2]})
		}
	}
	return roots
}

// otherType reports whether part (one side of a union) starts with the
// name of a resource type other than typ (and Resource, DomainResource):
// it selects nothing on a resource of type typ.
func otherType(part, typ string) bool {
	name := strings.TrimLeft(part, "( ")
	end := strings.IndexByte(name, '.')
	if end <= 0 {
		return false
	}
	name = name[:end]
	return name != typ && name != "Resource" && name != "DomainResource" && searchparam.IsResourceType(name)
}

// withoutWhere removes the arguments of every where(…) from expr.
func withoutWhere(expr string) string {
	var b strings.Builder
	for {
		i := strings.Index(expr, "where(")
		if i < 0 {
			b.WriteString(expr)
			return b.String()
		}
		b.WriteString(expr[:i+len("where(")])
		depth, j := 1, i+len("where(")
		for ; j < len(expr) && depth > 0; j++ {
			switch expr[j] {
			case '(':
				depth++
			case ')':
				depth--
			}
		}
		b.WriteString(")")
		expr = expr[j:]
	}
}

// mayHave reports whether res has one of the elements p reads (an
// element, its primitive extension _name, or a choice name[Type]; and
// below it the child the path names).
func mayHave(p *searchparam.Param, res map[string]any) bool {
	return shapeOf(res).mayHave(p, res)
}

// resourceShape is what mayHave looks at of one resource besides the
// elements it names, gathered once for the many parameters evaluated on
// the same resource (ResourceKeys).
type resourceShape struct {
	typ string
	// names holds, for each name a root may find on the resource, how:
	// nameElem for each element k and for k without its leading _ (a
	// primitive's extension), nameStem for k[:j] at each upper-case
	// byte k[j], j > 0 (the prefixes a choice element name[Type] has).
	// Made when first needed: most of a type's parameters read
	// elements a resource does not have, and one lookup here tells.
	names map[string]uint8
	// asked counts the questions before names is made: a search's
	// evaluator asks about a few parameters of a resource (names would
	// cost more than it saves), ResourceKeys about all of them.
	asked int
}

// namesAfter is how many questions a shape answers by looking in the
// resource itself (and names only for the choice prefixes) before it
// gathers names for the rest.
const namesAfter = 4

// The ways a name is found on a resource (resourceShape.names).
const (
	nameElem = 1 << iota
	nameStem
)

// shapeOf returns the shape of res.
func shapeOf(res map[string]any) *resourceShape {
	typ, _ := res["resourceType"].(string)
	return &resourceShape{typ: typ}
}

// mayHave is mayHave(p, res) for res of this shape.
func (s *resourceShape) mayHave(p *searchparam.Param, res map[string]any) bool {
	return s.mayHaveRoots(rootsOf(p, s.typ), res)
}

// mayHaveRoots is mayHave with the parameter's roots on this shape's
// type given (rootsOf).
func (s *resourceShape) mayHaveRoots(roots []root, res map[string]any) bool {
	if roots == nil {
		return true
	}
	if s.names == nil && s.asked < namesAfter {
		s.asked++
		return s.mayHaveRootsIn(roots, res)
	}
	s.gatherNames(res)
	found := false
	for _, r := range roots {
		if s.names[r.elem] != 0 {
			found = true
			break
		}
	}
	if !found {
		return false // no root's element, extension or choice
	}
	return s.mayHaveRootsIn(roots, res)
}

// mayHaveRootsIn is mayHaveRoots decided by looking in res (and in
// names for the choice prefixes).
func (s *resourceShape) mayHaveRootsIn(roots []root, res map[string]any) bool {
	for _, r := range roots {
		v, ok := res[r.elem]
		if !ok {
			if _, ok := res["_"+r.elem]; ok {
				return true
			}
			continue
		}
		if r.child == "" || hasChild(v, r.child) {
			return true
		}
	}
	s.gatherNames(res)
	for _, r := range roots {
		if s.names[r.elem]&nameStem != 0 {
			return true // a choice element (value[x]): its type decides
		}
	}
	return false
}

// gatherNames makes s.names (see resourceShape) once.
func (s *resourceShape) gatherNames(res map[string]any) {
	if s.names == nil {
		s.names = make(map[string]uint8, 2*len(res))
		for k := range res {
			s.names[k] |= nameElem
			if len(k) > 1 && k[0] == '_' {
				s.names[k[1:]] |= nameElem
			}
			for j := 1; j < len(k); j++ {
				if unicode.IsUpper(rune(k[j])) {
					s.names[k[:j]] |= nameStem
				}
			}
		}
	}
}

// hasChild reports whether v (an element, or a list of them) may have
// child: false only for objects without it.
func hasChild(v any, child string) bool {
	switch v := v.(type) {
	case map[string]any:
		_, a := v[child]
		_, b := v["_"+child]
		return a || b || hasChoice(v, child)
	case []any:
		for _, e := range v {
			if hasChild(e, child) {
				return true
			}
		}
		return false
	}
	return true
}

// hasChoice reports whether m has a choice element child[Type].
func hasChoice(m map[string]any, child string) bool {
	for k := range m {
		if len(k) > len(child) && strings.HasPrefix(k, child) && unicode.IsUpper(rune(k[len(child)])) {
			return true
		}
	}
	return false
}
