package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// pickupRound is one pick-up of the Synthea Bundle into a fresh record.
type pickupRound struct {
	slug     string
	dropOff  time.Duration // the drop-off's round trip
	pickup   time.Duration // the pick-up's round trip
	imported int           // entries the pick-up reports written
}

// checkPickup verifies a pick-up's answer: 200, status picked-up, and
// every entry but the sender's Patient imported. It returns the count.
func checkPickup(a *answer, want int) (int, error) {
	if a.status != http.StatusOK {
		return 0, fmt.Errorf("pick-up: status %d, want 200: %.500s", a.status, a.body)
	}
	var res struct {
		Status     string   `json:"status"`
		Imported   int      `json:"imported"`
		Unresolved []string `json:"unresolved"`
		Resumed    bool     `json:"resumed"`
	}
	if err := json.Unmarshal(a.body, &res); err != nil {
		return 0, fmt.Errorf("pick-up: unreadable answer: %w", err)
	}
	switch {
	case res.Status != "picked-up":
		return 0, fmt.Errorf("pick-up: status %q, want picked-up: %.300s", res.Status, a.body)
	case res.Resumed:
		return 0, fmt.Errorf("pick-up: resumed an earlier import; the record was fresh")
	case res.Imported != want:
		return 0, fmt.Errorf("pick-up: imported %d entries, want %d", res.Imported, want)
	case len(res.Unresolved) > 0:
		return 0, fmt.Errorf("pick-up: unresolved references %v", res.Unresolved)
	}
	return res.Imported, nil
}

// pickupOnce creates record slug for the Bundle's Patient, drops the
// Bundle off without a token, times its pick-up by the owner, and then
// checks that the record holds every resource of the Bundle.
func pickupOnce(ctx context.Context, g *gateway, src *syntheaBundle, slug string) (*pickupRound, error) {
	if _, err := g.createRecord(ctx, slug, src.patient); err != nil {
		return nil, err
	}
	round := &pickupRound{slug: slug}
	t0 := time.Now()
	a, err := g.do(ctx, http.MethodPost, g.fhirBase(slug), src.raw, "application/fhir+json", false)
	round.dropOff = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("dropping off %s for %s: %w", src.name, slug, err)
	}
	receipt, err := checkReceipt(a)
	if err != nil {
		return nil, fmt.Errorf("dropping off %s for %s: %w", src.name, slug, err)
	}

	url := g.apex("/pfr/v1/records/" + slug + "/dropoffs/" + receipt + "/pickup")
	t0 = time.Now()
	a, err = g.do(ctx, http.MethodPost, url, nil, "", true)
	round.pickup = time.Since(t0)
	if err != nil {
		return nil, err
	}
	if round.imported, err = checkPickup(a, len(src.entries)-1); err != nil {
		return nil, fmt.Errorf("%s: %w", slug, err)
	}
	if err := checkRecordHolds(ctx, g, slug, src.counts); err != nil {
		return nil, err
	}
	return round, nil
}

// checkRecordHolds counts each resource type in the record and compares
// with the Bundle: every resource imported, the record's own Patient the
// only Patient.
func checkRecordHolds(ctx context.Context, g *gateway, slug string, counts map[string]int) error {
	types := make([]string, 0, len(counts))
	for typ := range counts {
		types = append(types, typ)
	}
	slices.Sort(types)
	for _, typ := range types {
		a, err := g.expect(ctx, http.StatusOK, http.MethodGet, g.fhirBase(slug)+"/"+typ+"?_summary=count", nil, "", true)
		if err != nil {
			return fmt.Errorf("counting %s in %s: %w", typ, slug, err)
		}
		var bundle struct {
			Total *int `json:"total"`
		}
		if err := json.Unmarshal(a.body, &bundle); err != nil || bundle.Total == nil {
			return fmt.Errorf("counting %s in %s: no total in %.300s (%v)", typ, slug, a.body, err)
		}
		if *bundle.Total != counts[typ] {
			return fmt.Errorf("%s holds %d %s after the pick-up, the Bundle had %d", slug, *bundle.Total, typ, counts[typ])
		}
	}
	return nil
}
