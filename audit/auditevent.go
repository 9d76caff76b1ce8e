package audit

import (
	"fmt"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"net/http"
	"strings"
	"time"
)

// Code systems of the AuditEvent elements.
const (
	systemEventType   = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	systemInteraction = "http://hl7.org/fhir/restful-interaction"
	// SystemPFR codes the gateway's own interactions (dropoff, pickup, …)
	// in AuditEvent.subtype.
	SystemPFR = "urn:pfr:audit"
	// Observer names the gateway in AuditEvent.source.observer.display.
	Observer = "caddy-pfr"
)

// restfulInteractions are the codes of http://hl7.org/fhir/restful-interaction
// (R4).
var restfulInteractions = map[string]bool{
	"read": true, "vread": true, "update": true, "patch": true, "delete": true,
	"history": true, "history-instance": true, "history-type": true, "history-system": true,
	"create": true, "search": true, "search-type": true, "search-system": true,
	"capabilities": true, "transaction": true, "batch": true, "operation": true,
}

// auditEvent returns ev as a FHIR R4 AuditEvent resource.
func auditEvent(ev Stored) map[string]any {
	e := ev.Event
	ae := map[string]any{
		"resourceType": "AuditEvent",
		"id":           ev.ID,
		"type": map[string]any{
			"system": systemEventType, "code": "rest", "display": "RESTful Operation",
		},
		"action":   e.Action,
		"recorded": e.Time.UTC().Format(time.RFC3339Nano),
		"agent":    []any{requestor(e)},
		"source":   map[string]any{"observer": map[string]any{"display": Observer}},
	}
	if sub := subtype(e.Interaction, e.Target); sub != nil {
		ae["subtype"] = []any{sub}
	}
	if e.Status != 0 {
		ae["outcome"] = outcome(e.Status)
		desc := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
		if e.Detail != "" {
			desc += ": " + e.Detail
		}
		ae["outcomeDesc"] = strings.TrimSpace(desc)
	} else if e.Detail != "" {
		ae["outcomeDesc"] = e.Detail
	}
	switch {
	case isInstanceRef(e.Target):
		ae["entity"] = []any{map[string]any{"what": map[string]any{"reference": e.Target}}}
	case e.Target != "":
		// A type or anything else the gateway named: a descriptor, not a
		// reference.
		ae["entity"] = []any{map[string]any{"name": e.Target}}
	}
	return ae
}

// requestor returns the agent who asked: identified by token issuer and
// subject, or only by network address for an anonymous sender.
func requestor(e Event) map[string]any {
	agent := map[string]any{"requestor": true}
	if e.Subject != "" || e.Issuer != "" {
		id := map[string]any{}
		if e.Issuer != "" {
			id["system"] = e.Issuer
		}
		if e.Subject != "" {
			id["value"] = e.Subject
		}
		agent["who"] = map[string]any{"identifier": id}
	}
	if e.ClientID != "" {
		agent["altId"] = e.ClientID
	}
	if e.SourceIP != "" {
		// Type 2 of network-type: an IP address.
		agent["network"] = map[string]any{"address": e.SourceIP, "type": "2"}
	}
	return agent
}

// subtype codes the interaction: a RESTful interaction made as precise as
// the target allows, or one of the gateway's own.
func subtype(interaction, target string) map[string]any {
	if interaction == "" {
		return nil
	}
	level := "system"
	switch {
	case isInstanceRef(target):
		level = "instance"
	case fhir.IsResourceType(target):
		level = "type"
	}
	switch {
	case interaction == "history":
		interaction = "history-" + level
	case interaction == "search" && level != "instance":
		interaction = "search-" + level
	}
	if restfulInteractions[interaction] {
		return map[string]any{"system": systemInteraction, "code": interaction}
	}
	return map[string]any{"system": SystemPFR, "code": interaction}
}

// outcome maps an HTTP status to http://hl7.org/fhir/audit-event-outcome:
// 0 success, 4 minor failure (the client's), 8 serious failure (ours).
func outcome(status int) string {
	switch {
	case status >= 500:
		return "8"
	case status >= 400:
		return "4"
	default:
		return "0"
	}
}

// isInstanceRef reports whether a target names one resource, optionally one
// version of it: "Observation/123", "Observation/123/_history/2".
func isInstanceRef(target string) bool {
	_, _, _, ok := fhir.ParseReference(target)
	return ok
}
