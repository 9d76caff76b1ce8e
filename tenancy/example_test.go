package tenancy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// The life of a record: commit it in StatusProvisioning with its owner,
// provision the upstream outside any transaction, then activate it; invite
// a viewer; list what the viewer can see.
func Example() {
	dir, _ := os.MkdirTemp("", "tenancy-example")
	defer os.RemoveAll(dir)
	db, err := bbolt.Open(filepath.Join(dir, "pfr.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	store, err := tenancy.NewBoltStore(db)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	const issuer = "https://login.example"

	// 1. Create the record and make the caller its owner, atomically.
	record := &tenancy.Record{Slug: "john", Relationship: tenancy.RelationshipSelf}
	err = store.Update(ctx, func(tx tenancy.Tx) error {
		owner, err := tx.EnsureAccount(issuer, "alice")
		if err != nil {
			return err
		}
		if err := tx.CreateRecord(record); err != nil {
			return err // ErrSlugTaken, ErrInvalidSlug, ...
		}
		return tx.SetMembership(tenancy.Membership{RecordID: record.ID, AccountID: owner.ID, Role: tenancy.RoleOwner})
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(record.Slug, record.Status, record.PartitionID)

	// 2. Provision partition record.PartitionID upstream here, then activate.
	var code string
	err = store.Update(ctx, func(tx tenancy.Tx) error {
		r, err := tx.Record(record.ID)
		if err != nil {
			return err
		}
		r.Status, r.PatientID = tenancy.StatusActive, "example-patient"
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		owner, err := tx.AccountByIdentity(issuer, "alice")
		if err != nil {
			return err
		}
		code, err = tx.CreateInvitation(r.ID, tenancy.RoleViewer, owner.ID, 24*time.Hour)
		return err
	})
	if err != nil {
		panic(err)
	}

	// 3. Someone else accepts the code.
	err = store.Update(ctx, func(tx tenancy.Tx) error {
		bob, err := tx.EnsureAccount(issuer, "bob")
		if err != nil {
			return err
		}
		if _, err := tx.AcceptInvitation(code, bob.ID); err != nil {
			return err // ErrInvitationUsed, ErrInvitationExpired, ErrNotFound, ...
		}
		records, err := tx.RecordsForAccount(bob.ID)
		for _, r := range records {
			fmt.Println(r.Slug, r.Status, r.Role, r.Role.CanWrite())
		}
		return err
	})
	if err != nil {
		panic(err)
	}
	// Output:
	// john provisioning 1
	// john active viewer false
}
