package store

import (
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
	"net/http"
	"sort"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// capabilityStatement is the subset of CapabilityStatement this server fills.
type capabilityStatement struct {
	ResourceType   string            `json:"resourceType"`
	Status         string            `json:"status"`
	Date           string            `json:"date"`
	Kind           string            `json:"kind"`
	Software       map[string]string `json:"software"`
	Implementation map[string]string `json:"implementation"`
	FhirVersion    string            `json:"fhirVersion"`
	Format         []string          `json:"format"`
	PatchFormat    []string          `json:"patchFormat"`
	Rest           []capRest         `json:"rest"`
}

type capRest struct {
	Mode        string         `json:"mode"`
	Resource    []capResource  `json:"resource"`
	Interaction []capCode      `json:"interaction"`
	Operation   []capOperation `json:"operation"`
}

type capResource struct {
	Type              string         `json:"type"`
	Interaction       []capCode      `json:"interaction"`
	Versioning        string         `json:"versioning"`
	ReadHistory       bool           `json:"readHistory"`
	UpdateCreate      bool           `json:"updateCreate"`
	ConditionalCreate bool           `json:"conditionalCreate"`
	ConditionalUpdate bool           `json:"conditionalUpdate"`
	ConditionalDelete string         `json:"conditionalDelete"`
	SearchInclude     []string       `json:"searchInclude,omitempty"`
	SearchRevInclude  []string       `json:"searchRevInclude,omitempty"`
	SearchParam       []capParam     `json:"searchParam,omitempty"`
	Operation         []capOperation `json:"operation,omitempty"`
}

type capCode struct {
	Code string `json:"code"`
}

type capParam struct {
	Name          string `json:"name"`
	Definition    string `json:"definition,omitempty"`
	Type          string `json:"type"`
	Documentation string `json:"documentation,omitempty"`
}

type capOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

// resourceInteractions is what every resource type supports.
var resourceInteractions = []capCode{
	{"read"}, {"vread"}, {"update"}, {"patch"}, {"delete"},
	{"history-instance"}, {"history-type"}, {"create"}, {"search-type"},
}

// capabilities answers GET metadata: exactly what this server does.
func (q *request) capabilities() error {
	types := searchparam.ResourceTypes()
	sort.Strings(types)

	rest := capRest{
		Mode:        "server",
		Interaction: []capCode{{"transaction"}, {"batch"}, {"history-system"}},
		Operation: []capOperation{
			{Name: "partition-management-create-partition", Definition: "http://hapifhir.io/fhir/OperationDefinition/partition-management-create-partition"},
			{Name: "partition-management-delete-partition", Definition: "http://hapifhir.io/fhir/OperationDefinition/partition-management-delete-partition"},
			{Name: "partition-management-list-partitions", Definition: "http://hapifhir.io/fhir/OperationDefinition/partition-management-list-partitions"},
			{Name: "partition-management-read-partition", Definition: "http://hapifhir.io/fhir/OperationDefinition/partition-management-read-partition"},
		},
	}
	for _, t := range types {
		r := capResource{
			Type:              t,
			Interaction:       resourceInteractions,
			Versioning:        "versioned-update",
			ReadHistory:       true,
			UpdateCreate:      true,
			ConditionalCreate: true,
			ConditionalUpdate: true,
			ConditionalDelete: "single",
		}
		for _, sp := range q.h.engine.params(t) {
			r.SearchParam = append(r.SearchParam, capParam(sp))
		}
		r.SearchInclude = q.h.engine.includes(t)
		r.SearchRevInclude = q.h.engine.revIncludes(t)
		if t == "Patient" {
			r.Operation = []capOperation{{Name: "everything", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything"}}
		}
		rest.Resource = append(rest.Resource, r)
	}
	cs := &capabilityStatement{
		ResourceType:   "CapabilityStatement",
		Status:         "active",
		Date:           instant(q.h.db.clock()),
		Kind:           "instance",
		Software:       map[string]string{"name": "caddy-pfr embedded FHIR store"},
		Implementation: map[string]string{"description": "Personal FHIR Record store (partitioned by " + q.h.cfg.PartitionHeader + ")", "url": q.base},
		FhirVersion:    "4.0.1",
		Format:         []string{"application/fhir+json", "json"},
		PatchFormat:    []string{fhir.MediaTypeJSONPatch, "application/fhir+json"},
		Rest:           []capRest{rest},
	}
	fhir.WriteJSON(q.w, http.StatusOK, cs)
	return nil
}
