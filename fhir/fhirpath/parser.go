package fhirpath

import (
	"fmt"
	"strconv"
	"strings"
)

// parser is a precedence-climbing parser over the tokens of one expression.
type parser struct {
	toks []token
	pos  int
}

// Binary operator precedence, lowest first, as in the FHIRPath grammar.
// is/as bind tighter than |, which binds tighter than comparisons.
var binaryLevels = [][]string{
	{"implies"},
	{"or", "xor"},
	{"and"},
	{"=", "!="},
	{"<", "<=", ">", ">="},
	{"|"},
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tokEOF {
		p.pos++
	}
	return t
}

// isOp reports whether t is the operator op (a delimiter or a keyword).
func isOp(t token, op string) bool {
	return (t.kind == tokDelim || t.kind == tokIdent) && t.text == op
}

func (p *parser) expect(delim string) error {
	t := p.next()
	if t.kind != tokDelim || t.text != delim {
		return fmt.Errorf("at offset %d: expected %q, found %q", t.pos, delim, t.text)
	}
	return nil
}

func (p *parser) parseExpr(level int) (node, error) {
	if level == len(binaryLevels) {
		return p.parseTypeExpr()
	}
	left, err := p.parseExpr(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		op := ""
		for _, candidate := range binaryLevels[level] {
			if isOp(t, candidate) {
				op = candidate
			}
		}
		if op == "" {
			return left, nil
		}
		p.next()
		right, err := p.parseExpr(level + 1)
		if err != nil {
			return nil, err
		}
		if op == "|" {
			left = unionNode{left, right}
		} else {
			left = binaryNode{op: op, left: left, right: right}
		}
	}
}

// parseTypeExpr parses `term (is|as) TypeSpecifier`.
func (p *parser) parseTypeExpr() (node, error) {
	left, err := p.parseInvocationChain()
	if err != nil {
		return nil, err
	}
	for isOp(p.peek(), "is") || isOp(p.peek(), "as") {
		op := p.next().text
		typ, err := p.parseTypeSpecifier()
		if err != nil {
			return nil, err
		}
		left = typeNode{op: op, operand: left, typ: typ}
	}
	return left, nil
}

// parseTypeSpecifier parses a possibly qualified type name (FHIR.Quantity).
func (p *parser) parseTypeSpecifier() (string, error) {
	t := p.next()
	if t.kind != tokIdent {
		return "", fmt.Errorf("at offset %d: expected a type name, found %q", t.pos, t.text)
	}
	name := t.text
	for isOp(p.peek(), ".") && p.toks[p.pos+1].kind == tokIdent {
		p.next()
		name += "." + p.next().text
	}
	return name, nil
}

// parseInvocationChain parses a term followed by .invocations and [index]es.
func (p *parser) parseInvocationChain() (node, error) {
	n, err := p.parseTerm()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case isOp(p.peek(), "."):
			p.next()
			step, err := p.parseInvocation(false)
			if err != nil {
				return nil, err
			}
			n = chainNode{n, step}
		case isOp(p.peek(), "["):
			p.next()
			idx, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			n = indexNode{n, idx}
		default:
			return n, nil
		}
	}
}

func (p *parser) parseTerm() (node, error) {
	t := p.peek()
	switch t.kind {
	case tokString:
		p.next()
		return literalNode{Node{Value: t.text, Type: "string"}}, nil
	case tokNumber:
		p.next()
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, fmt.Errorf("at offset %d: bad number %q: %w", t.pos, t.text, err)
		}
		typ := "integer"
		if strings.Contains(t.text, ".") {
			typ = "decimal"
		}
		return literalNode{Node{Value: f, Type: typ}}, nil
	case tokEnv:
		p.next()
		switch t.text {
		case "resource", "rootResource", "context":
			return envNode{t.text}, nil
		}
		return nil, fmt.Errorf("at offset %d: unknown environment variable %%%s", t.pos, t.text)
	case tokDelim:
		if t.text == "(" {
			p.next()
			inner, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return inner, nil
		}
	case tokIdent:
		switch t.text {
		case "true", "false":
			p.next()
			return literalNode{Node{Value: t.text == "true", Type: "boolean"}}, nil
		case "$this":
			p.next()
			return thisNode{}, nil
		}
		return p.parseInvocation(true)
	}
	return nil, fmt.Errorf("at offset %d: unexpected %q", t.pos, t.text)
}

// parseInvocation parses a member name or a function call. leading is true
// for the first identifier of a term, which may name the context's type.
func (p *parser) parseInvocation(leading bool) (node, error) {
	t := p.next()
	if t.kind != tokIdent || strings.HasPrefix(t.text, "$") {
		return nil, fmt.Errorf("at offset %d: expected a name, found %q", t.pos, t.text)
	}
	if !isOp(p.peek(), "(") {
		return memberNode{name: t.text, leading: leading, choices: choiceKeys(t.text)}, nil
	}
	p.next()
	fn := funcNode{name: t.text}
	if typeFunctions[t.text] {
		typ, err := p.parseTypeSpecifier()
		if err != nil {
			return nil, err
		}
		fn.typ = typ
		if err := p.expect(")"); err != nil {
			return nil, err
		}
	} else {
		for !isOp(p.peek(), ")") {
			arg, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			fn.args = append(fn.args, arg)
			if !isOp(p.peek(), ",") {
				break
			}
			p.next()
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
	}
	arity, ok := functionArity[fn.name]
	if !ok {
		return nil, fmt.Errorf("at offset %d: unsupported function %s()", t.pos, fn.name)
	}
	if len(fn.args) < arity[0] || len(fn.args) > arity[1] {
		return nil, fmt.Errorf("at offset %d: %s() takes %d to %d arguments, got %d", t.pos, fn.name, arity[0], arity[1], len(fn.args))
	}
	return fn, nil
}
