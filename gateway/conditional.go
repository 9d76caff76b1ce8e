package gateway

import (
	"fmt"
	"net/http"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// resolveConditionalReferences resolves, before the ownership check, every
// conditional reference ("Type?criteria") in the resources a batch or
// transaction writes, by searching the record (its partition only, the
// answer filtered like any read): one match becomes the literal reference
// "Type/id"; none becomes a logical reference (Reference.identifier from
// identifier=system|value, display kept); several refuse the Bundle with
// 412, as FHIR asks. Each distinct reference is searched once.
func (g *Gateway) resolveConditionalReferences(rq *request, bundle map[string]any) error {
	search := g.recordSearch(rq)
	found := map[string][]string{}
	entries, _ := bundle["entry"].([]any)
	var failed error
	for i, raw := range entries {
		entry, _ := raw.(map[string]any)
		res, _ := entry["resource"].(map[string]any)
		if res == nil {
			continue
		}
		fhir.EachReference(res, func(obj map[string]any, ref string) {
			typ, params, ok := fhir.ParseConditionalReference(ref)
			if failed != nil || !ok {
				return
			}
			ids, seen := found[ref]
			if !seen {
				matches, err := search(typ, params)
				if err != nil {
					failed = err
					return
				}
				for _, m := range matches {
					if id, _ := m["id"].(string); id != "" {
						ids = append(ids, id)
					}
				}
				found[ref] = ids
			}
			switch len(ids) {
			case 1:
				obj["reference"] = typ + "/" + ids[0]
			case 0:
				fhir.MakeLogical(obj, typ, fhir.IdentifierFromQuery(params), ref)
			default:
				failed = fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
					"the conditional reference %q matches %d resources of this record", ref, len(ids)).
					WithExpression(fmt.Sprintf("Bundle.entry[%d].resource", i))
			}
		})
		if failed != nil {
			return failed
		}
	}
	return nil
}
