package tenancy

import (
	"context"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// BenchmarkAccessRemembered is what the request pipeline pays per request
// for a member's Access on bbolt once its answer is remembered.
func BenchmarkAccessRemembered(b *testing.B) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "pfr.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := NewBoltStore(db)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const iss = "https://issuer.example"
	if err := s.Update(ctx, func(tx Tx) error {
		a, err := tx.EnsureAccount(iss, "alice")
		if err != nil {
			return err
		}
		r := &Record{Slug: "john", Relationship: RelationshipSelf, Status: StatusActive}
		if err := tx.CreateRecord(r); err != nil {
			return err
		}
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: a.ID, Role: RoleOwner})
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, role, err := Access(ctx, s, "john", iss, "alice"); err != nil || role != RoleOwner {
			b.Fatal(role, err)
		}
	}
}
