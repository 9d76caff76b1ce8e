package search

import (
	"fmt"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// compositeMatcher matches one value of a composite parameter, such as
// code-value-quantity=http://loinc.org|8480-6$gt120: all its parts must
// match within the same item of the composite's expression (the same
// Observation.component, say), not anywhere in the resource.
type compositeMatcher struct {
	components []searchparam.ResolvedComponent
	parts      []valueMatcher
}

// newCompositeMatcher parses a composite value: one part per component,
// separated by unescaped "$", each parsed as its component's type.
func newCompositeMatcher(p *searchparam.Param, raw string, now time.Time) (*compositeMatcher, error) {
	components, err := p.ResolvedComponents()
	if err != nil {
		return nil, err
	}
	parts := splitEscaped(raw, '$')
	if len(parts) != len(components) {
		return nil, fmt.Errorf("a %s value has %d parts separated by $, not %d", p.Code, len(components), len(parts))
	}
	m := &compositeMatcher{components: components}
	for i, part := range parts {
		c := components[i].Param
		if c.Type == searchparam.TypeComposite {
			return nil, fmt.Errorf("nested composite %s", c.Code)
		}
		vm, err := newValueMatcher(c, "", part, now)
		if err != nil {
			return nil, fmt.Errorf("%s part: %w", c.Code, err)
		}
		m.parts = append(m.parts, vm)
	}
	return m, nil
}

// match reports whether one of the items found by the composite's
// expression satisfies every part.
func (m *compositeMatcher) match(res map[string]any, items []fhirpath.Node) bool {
	for _, item := range items {
		if m.matchItem(res, item) {
			return true
		}
	}
	return false
}

func (m *compositeMatcher) matchItem(res map[string]any, item fhirpath.Node) bool {
	for i, c := range m.components {
		nodes, err := c.Expr.EvaluateFocus(res, item, nil)
		if err != nil || !m.parts[i](nodes) {
			return false
		}
	}
	return true
}
