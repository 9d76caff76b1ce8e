package dopu_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/dopu"
)

// A provider drops off a document; the person lists it and picks it up.
func Example() {
	dir, _ := os.MkdirTemp("", "dopu-example")
	defer os.RemoveAll(dir)
	db, err := bbolt.Open(filepath.Join(dir, "pfr.db"), 0o600, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	svc, err := dopu.New(db, dopu.Limits{}, dopu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	bundle := `{"resourceType":"Bundle","type":"collection","entry":[
	  {"fullUrl":"urn:uuid:6f0b0e0e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient",
	    "name":[{"family":"Everywoman","given":["Eve"]}],"birthDate":"1955-01-06","gender":"female"}},
	  {"fullUrl":"urn:uuid:6f0b0e0e-0000-4000-8000-000000000002","resource":{"resourceType":"Observation",
	    "status":"final","code":{"text":"weight"},"subject":{"reference":"urn:uuid:6f0b0e0e-0000-4000-8000-000000000001"}}}]}`
	receipt, err := svc.Intake(ctx, "record-1", "application/fhir+json", "", strings.NewReader(bundle),
		dopu.Sender{IP: "192.0.2.10", UserAgent: "clinic-ehr"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("receipt:", receipt.Status)

	inbox, _ := svc.List(ctx, "record-1")
	fmt.Println("inbox:", len(inbox), inbox[0].ResourceCounts["Observation"], "observation")

	p, err := svc.BeginPickup(ctx, "record-1", receipt.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Abort()
	recordPatient := map[string]any{"resourceType": "Patient", "id": "eve",
		"name": []any{map[string]any{"family": "Everywoman", "given": []any{"Eve"}}}, "birthDate": "1955-01-06", "gender": "female"}
	imp, err := p.Prepare(recordPatient, "eve", dopu.PrepareOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("match:", imp.Match.Score, imp.Match.Accepted)
	fmt.Println("entries:", imp.Entries, strings.Contains(string(imp.Transaction), `"reference":"Patient/eve"`))
	// … run imp.Transaction against the record's FHIR base, then:
	if err := p.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	status, _ := svc.Status(ctx, receipt.ID)
	fmt.Println("status:", status)
	// Output:
	// receipt: pending
	// inbox: 1 1 observation
	// match: 0.85 true
	// entries: 1 true
	// status: picked-up
}
