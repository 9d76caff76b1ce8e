// Package fhirpath evaluates the subset of FHIRPath that the FHIR R4
// SearchParameter expressions use, on resources decoded by encoding/json into
// map[string]any (numbers as float64 or json.Number).
//
// Supported: paths with choice types (value resolves to valueQuantity,
// valueCodeableConcept, …), the indexer [n], the union operator |, the type
// operators is and as, parentheses, string, number and boolean literals, the
// operators = != < <= > >= and or xor implies, the environment variables
// %resource, %rootResource and %context (all three the evaluated resource),
// $this, and the functions where,
// exists, empty, not, first, last, count, ofType, as, is, resolve, extension
// and hasValue. Anything else fails to compile with an error naming the
// expression, never silently.
//
// resolve() does not fetch anything: a reference "Type/id", an absolute URL
// ending in Type/id or a "#id" pointing at a contained resource yields a node
// of that type, which is what "resolve() is Patient" needs. An Env may supply
// a Resolver for other references (urn:uuid inside a Bundle).
//
// Every element a path finds knows where it sits in the resource
// (Node.Location: the object holding it, its JSON name, its index), and
// Expr.Parent splits off a path's last element name: what FHIRPath Patch
// (fhir.ApplyFHIRPathPatch) needs to change a resource in place.
//
// Compile once with Compile or MustCompile; an *Expr is immutable and safe for
// concurrent use.
package fhirpath
