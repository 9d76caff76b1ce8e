package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
)

// kind is a request kind sent to every target.
type kind int

const (
	readKind   kind = iota // GET Observation/{id}
	searchKind             // GET Observation?_count=50
)

var kinds = []kind{readKind, searchKind}

// parseKinds reads read, search or both.
func parseKinds(s string) ([]kind, error) {
	switch s {
	case "read":
		return []kind{readKind}, nil
	case "search":
		return []kind{searchKind}, nil
	case "both":
		return kinds, nil
	}
	return nil, fmt.Errorf("request kind %q: want read, search or both", s)
}

// String names the kind in the table.
func (k kind) String() string {
	if k == readKind {
		return "read"
	}
	return "search"
}

// target is one path to the data: where requests go, what they carry, and
// the FHIR base its answers name.
type target struct {
	label  string      // "(a) pfr_store" in the table
	base   string      // the FHIR base URL the requests go to
	header http.Header // what every request carries: the bearer token and the partition header
	client *http.Client
}

// url is the request URL of kind k on t.
func (t *target) url(k kind, fx *fixture) string {
	if k == readKind {
		return t.base + "/Observation/" + fx.readID
	}
	return t.base + "/Observation?_count=" + strconv.Itoa(searchSize)
}

// checkFast verifies an answer cheaply enough for every measured request:
// the status, the resource asked for, and, for the search, exactly
// searchSize entries whose fullUrl lies under the target's base (so the
// gateway's rewriter ran) and no next page.
func (t *target) checkFast(k kind, fx *fixture, status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %.300s", t.label, k, status, body)
	}
	switch k {
	case readKind:
		if !bytes.Contains(body, []byte(`"resourceType":"Observation"`)) || !bytes.Contains(body, []byte(`"id":"`+fx.readID+`"`)) {
			return fmt.Errorf("%s read: not Observation/%s: %.300s", t.label, fx.readID, body)
		}
	case searchKind:
		entries := bytes.Count(body, []byte(`"fullUrl":"`+t.base+`/Observation/`))
		// A gateway in front of an upstream it does not trust leaves total
		// out (it would count everyone's matches); when present it must be right.
		wrongTotal := bytes.Contains(body, []byte(`"total":`)) && !bytes.Contains(body, []byte(`"total":`+strconv.Itoa(searchSize)+`,`))
		if entries != searchSize || wrongTotal {
			return fmt.Errorf("%s search: %d entries under %s, want %d: %.300s", t.label, entries, t.base, searchSize, body)
		}
		if bytes.Contains(body, []byte(`"relation":"next"`)) {
			return fmt.Errorf("%s search: the searchset has a next page; want exactly one page", t.label)
		}
	}
	return nil
}

// checkFull decodes an answer and verifies it completely: run on every
// warm-up request, so the fast check is known to look at well-formed data.
func (t *target) checkFull(k kind, fx *fixture, status int, body []byte) error {
	if err := t.checkFast(k, fx, status, body); err != nil {
		return err
	}
	type observation struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Subject      struct {
			Reference string `json:"reference"`
		} `json:"subject"`
	}
	checkObservation := func(o observation) error {
		if o.ResourceType != "Observation" || o.Subject.Reference != "Patient/"+fx.patientID {
			return fmt.Errorf("%s %s: Observation/%s is not the record's (%s, subject %q)", t.label, k, o.ID, o.ResourceType, o.Subject.Reference)
		}
		return nil
	}
	switch k {
	case readKind:
		var o observation
		if err := json.Unmarshal(body, &o); err != nil {
			return fmt.Errorf("%s read: invalid JSON: %w", t.label, err)
		}
		if o.ID != fx.readID {
			return fmt.Errorf("%s read: got Observation/%s, want %s", t.label, o.ID, fx.readID)
		}
		return checkObservation(o)
	default:
		var b struct {
			ResourceType string `json:"resourceType"`
			Type         string `json:"type"`
			Total        *int   `json:"total"`
			Entry        []struct {
				FullURL  string      `json:"fullUrl"`
				Resource observation `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return fmt.Errorf("%s search: invalid JSON: %w", t.label, err)
		}
		if b.ResourceType != "Bundle" || b.Type != "searchset" || b.Total != nil && *b.Total != searchSize || len(b.Entry) != searchSize {
			return fmt.Errorf("%s search: %s %s total %v with %d entries, want a searchset of %d", t.label, b.ResourceType, b.Type, b.Total, len(b.Entry), searchSize)
		}
		ids := make([]string, 0, len(b.Entry))
		for _, e := range b.Entry {
			if e.FullURL != t.base+"/Observation/"+e.Resource.ID {
				return fmt.Errorf("%s search: fullUrl %q does not name Observation/%s under %s", t.label, e.FullURL, e.Resource.ID, t.base)
			}
			if err := checkObservation(e.Resource); err != nil {
				return err
			}
			ids = append(ids, e.Resource.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, fx.obsIDs) {
			return fmt.Errorf("%s search: the entries are not the record's %d Observations", t.label, len(fx.obsIDs))
		}
	}
	return nil
}
