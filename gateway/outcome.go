package gateway

import (
	"encoding/json"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// outcomeIssues returns the issues of an OperationOutcome body from the
// upstream, or one issue saying fallback when the body is not one.
func outcomeIssues(body []byte, fallback string) []fhir.Issue {
	var oo fhir.OperationOutcome
	if json.Unmarshal(body, &oo) == nil && oo.ResourceType == "OperationOutcome" && len(oo.Issue) > 0 {
		return oo.Issue
	}
	return []fhir.Issue{{Severity: fhir.SeverityError, Code: fhir.CodeProcessing, Diagnostics: fallback}}
}
