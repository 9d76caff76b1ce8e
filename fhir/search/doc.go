// Package search is the FHIR R4 search engine of the embedded store: it
// parses the parameters of a search (Parse), decides whether a resource
// matches (Query.Match), orders results (Query.Less, Query.Sort), follows
// _include and _revinclude (Include) and trims resources for _elements
// (ApplyElements).
//
// Every filter is driven by the official R4 SearchParameter definitions of
// package searchparam: the parameter's FHIRPath expression is evaluated on
// the resource and the values found are compared with the search value
// following http://hl7.org/fhir/R4/search.html. There are no indexes: a
// personal record holds thousands of resources, and a linear scan that is
// plainly correct beats a clever one.
//
// Supported parameter types and modifiers:
//
//   - string: starts-with, case- and accent-insensitive; :exact, :contains
//   - token: code, system|code, |code, system|; on Coding, CodeableConcept,
//     Identifier, ContactPoint, code, boolean, string; :not, :text, :of-type
//   - reference: Type/id, id, absolute URL ending in Type/id, urn:uuid:…;
//     :[Type], :identifier
//   - date: prefixes eq ne lt le gt ge sa eb ap with the precision of the
//     value, on date, dateTime, instant, Period and Timing
//   - number and quantity: prefixes, ranges implied by the significant
//     digits of the search value; quantity system and code (no unit
//     conversion)
//   - uri: exact; :below, :above
//   - composite: one value per component separated by $, all matching
//     within the same item (code-value-quantity=http://loinc.org|8480-6$gt120)
//   - :missing=true|false on every type
//
// A comma separates values of which one must match (OR); a repeated
// parameter must match every time (AND). Chained parameters (any depth,
// with a type modifier or across the target types that have the
// parameter) and _has (nested, with chains inside) read other resources:
// Query.Bind resolves them against one partition (a Source), and Match
// never matches a query that has them. Special parameters (Location near),
// _text, _content, _query, _filter and _list are not supported: lenient
// parsing lists them in Query.Unknown, strict parsing rejects them. An unsupported modifier or an invalid value is
// always a 400, as the specification requires.
//
// A *Query is immutable once parsed and safe for concurrent use.
package search
