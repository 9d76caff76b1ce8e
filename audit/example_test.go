package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/audit"
)

func Example() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, err := bbolt.Open(filepath.Join(dir, "pfr.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	log, err := audit.New(db, audit.Options{})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- log.Run(ctx) }()

	// On the request path, after the response.
	log.Record(audit.Event{
		RecordID: "k3x7q2mz5c4vn6b2hj4s7d3fwa", Issuer: "https://idp.example.com", Subject: "alice",
		SourceIP: "192.0.2.1", Interaction: "read", Target: "Observation/123", Status: 200,
	})

	// At shutdown: Run writes what is queued.
	stop()
	if err := <-done; err != nil {
		panic(err)
	}

	bundle, err := log.Bundle(context.Background(), "k3x7q2mz5c4vn6b2hj4s7d3fwa", time.Time{}, 10)
	if err != nil {
		panic(err)
	}
	ae := bundle["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	fmt.Println(ae["resourceType"], ae["action"], ae["outcome"], ae["outcomeDesc"])
	// Output: AuditEvent R 0 200 OK
}
