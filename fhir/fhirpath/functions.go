package fhirpath

import (
	"fmt"
	"strings"
)

// functionArity lists the supported functions with their minimum and
// maximum argument counts.
var functionArity = map[string][2]int{
	"where":     {1, 1},
	"exists":    {0, 1},
	"empty":     {0, 0},
	"not":       {0, 0},
	"first":     {0, 0},
	"last":      {0, 0},
	"count":     {0, 0},
	"hasValue":  {0, 0},
	"resolve":   {0, 0},
	"extension": {1, 1},
	"as":        {0, 0},
	"is":        {0, 0},
	"ofType":    {0, 0},
}

// typeFunctions take a type specifier instead of an expression argument.
var typeFunctions = map[string]bool{"as": true, "is": true, "ofType": true}

func (n funcNode) eval(c *evalContext, focus []Node) ([]Node, error) {
	switch n.name {
	case "where":
		return where(c, focus, n.args[0])
	case "exists":
		in := focus
		if len(n.args) == 1 {
			var err error
			if in, err = where(c, focus, n.args[0]); err != nil {
				return nil, err
			}
		}
		return boolean(len(in) > 0), nil
	case "empty":
		return boolean(len(focus) == 0), nil
	case "not":
		b, known, err := toBool(focus)
		if err != nil || !known {
			return nil, err
		}
		return boolean(!b), nil
	case "first":
		if len(focus) == 0 {
			return nil, nil
		}
		return focus[:1], nil
	case "last":
		if len(focus) == 0 {
			return nil, nil
		}
		return focus[len(focus)-1:], nil
	case "count":
		return []Node{{Value: float64(len(focus)), Type: "integer"}}, nil
	case "hasValue":
		if len(focus) != 1 {
			return boolean(false), nil
		}
		_, complex := focus[0].Value.(map[string]any)
		return boolean(!complex && focus[0].Value != nil), nil
	case "resolve":
		return resolve(c, focus), nil
	case "extension":
		return extension(c, focus, n.args[0])
	case "as", "ofType":
		return filterType(focus, n.typ), nil
	case "is":
		if len(focus) != 1 {
			return nil, nil
		}
		return boolean(typeMatches(focus[0], n.typ)), nil
	}
	return nil, fmt.Errorf("unsupported function %s()", n.name)
}

// where keeps the items for which crit, evaluated with the item as focus, is true.
func where(c *evalContext, focus []Node, crit node) ([]Node, error) {
	var out []Node
	for _, item := range focus {
		if err := c.step(); err != nil {
			return nil, err
		}
		res, err := crit.eval(c, []Node{item})
		if err != nil {
			return nil, fmt.Errorf("where(): %w", err)
		}
		if b, known, err := toBool(res); err != nil {
			return nil, fmt.Errorf("where(): %w", err)
		} else if known && b {
			out = append(out, item)
		}
	}
	return out, nil
}

// extension returns the extensions of the focus items whose url equals the argument.
func extension(c *evalContext, focus []Node, arg node) ([]Node, error) {
	urls, err := arg.eval(c, focus)
	if err != nil {
		return nil, err
	}
	if len(urls) != 1 {
		return nil, fmt.Errorf("extension() needs one url, got %d", len(urls))
	}
	url, ok := urls[0].Value.(string)
	if !ok {
		return nil, fmt.Errorf("extension() url must be a string")
	}
	var out []Node
	for _, item := range focus {
		for _, ext := range appendChildren(nil, item, "extension", nil) {
			if m, ok := ext.Value.(map[string]any); ok && m["url"] == url {
				out = append(out, Node{Value: m, Type: "Extension", loc: ext.loc})
			}
		}
	}
	return out, nil
}

// resolve turns references into the resources they point to. Without a
// store, a reference "Type/id" (relative or absolute) yields a stub resource
// {"resourceType": Type, "id": id}, enough for "resolve() is Type"; "#id"
// yields the contained resource; other references resolve through the Env.
func resolve(c *evalContext, focus []Node) []Node {
	var out []Node
	for _, item := range focus {
		ref := ""
		switch v := item.Value.(type) {
		case map[string]any:
			ref, _ = v["reference"].(string)
		case string: // canonical and uri values
			ref = v
		}
		if ref == "" {
			continue
		}
		if c.env.Resolve != nil {
			if res, ok := c.env.Resolve(ref); ok && res != nil {
				out = append(out, resourceNode(res))
				continue
			}
		}
		if strings.HasPrefix(ref, "#") {
			if res, loc := containedByID(c.resource, ref[1:]); res != nil {
				n := resourceNode(res)
				n.loc = loc
				out = append(out, n)
			}
			continue
		}
		if typ, id, ok := SplitReference(ref); ok {
			out = append(out, Node{Value: map[string]any{"resourceType": typ, "id": id}, Type: typ})
		}
	}
	return out
}

// containedByID finds the contained resource with id and where it sits.
func containedByID(root Node, id string) (map[string]any, *location) {
	res, _ := root.Value.(map[string]any)
	list, _ := res["contained"].([]any)
	for i, item := range list {
		if m, ok := item.(map[string]any); ok && m["id"] == id {
			return m, &location{parent: res, key: "contained", index: i}
		}
	}
	return nil, nil
}
