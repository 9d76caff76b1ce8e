package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCreateRecordAllocates(t *testing.T) {
	e := newTestEnv(t)
	r := &Record{Slug: "john", Relationship: RelationshipSelf, PatientID: "p-1"}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(r) })

	if err := ValidateID(r.ID); err != nil {
		t.Fatalf("allocated id %q: %v", r.ID, err)
	}
	if r.PartitionID != 1 {
		t.Errorf("first PartitionID = %d, want 1 (0 is HAPI's DEFAULT)", r.PartitionID)
	}
	if r.PartitionName != "pfr-"+r.ID {
		t.Errorf("PartitionName = %q, want pfr-<id>", r.PartitionName)
	}
	if r.Status != StatusProvisioning {
		t.Errorf("Status = %q, want provisioning by default", r.Status)
	}
	if !r.Created.Equal(e.clock.Now()) || !r.Updated.Equal(r.Created) {
		t.Errorf("Created, Updated = %v, %v, want the clock's %v", r.Created, r.Updated, e.clock.Now())
	}

	e.view(t, func(tx Tx) error {
		byID, err := tx.Record(r.ID)
		if err != nil {
			return err
		}
		bySlug, err := tx.RecordBySlug("john")
		if err != nil {
			return err
		}
		if *byID != *r || *bySlug != *r {
			t.Errorf("stored record differs:\n got %+v\n and %+v\nwant %+v", byID, bySlug, r)
		}
		return nil
	})
}

func TestCreateRecordRefusesBadInput(t *testing.T) {
	e := newTestEnv(t)
	existing := &Record{Slug: "taken", Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(existing) })

	tests := []struct {
		name   string
		record Record
		want   error
	}{
		{"invalid slug", Record{Slug: "Bad_Slug", Relationship: RelationshipSelf}, ErrInvalidSlug},
		{"reserved slug", Record{Slug: "admin", Relationship: RelationshipSelf}, ErrInvalidSlug},
		{"taken slug", Record{Slug: "taken", Relationship: RelationshipSelf}, ErrSlugTaken},
		{"no relationship", Record{Slug: "anna"}, ErrInvalid},
		{"unknown relationship", Record{Slug: "anna", Relationship: "boss"}, ErrInvalid},
		{"unknown status", Record{Slug: "anna", Relationship: RelationshipSelf, Status: "zombie"}, ErrInvalid},
		{"negative partition", Record{Slug: "anna", Relationship: RelationshipSelf, PartitionID: -5}, ErrInvalid},
		{"used partition", Record{Slug: "anna", Relationship: RelationshipSelf, PartitionID: existing.PartitionID}, ErrConflict},
		{"used id", Record{Slug: "anna", Relationship: RelationshipSelf, ID: existing.ID}, ErrConflict},
		{"malformed id", Record{Slug: "anna", Relationship: RelationshipSelf, ID: "../../etc"}, ErrInvalid},
		{"partition name not derived from id", Record{Slug: "anna", Relationship: RelationshipSelf, PartitionName: "john"}, ErrInvalid},
		{"bad patient id", Record{Slug: "anna", Relationship: RelationshipSelf, PatientID: "a/b"}, ErrInvalid},
		{"webhook not http", Record{Slug: "anna", Relationship: RelationshipSelf, WebhookURL: "file:///etc/passwd"}, ErrInvalid},
		{"webhook with credentials", Record{Slug: "anna", Relationship: RelationshipSelf, WebhookURL: "https://u:p@example.com/"}, ErrInvalid},
		{"webhook secret too long", Record{Slug: "anna", Relationship: RelationshipSelf, WebhookSecret: strings.Repeat("s", MaxWebhookSecretLength+1)}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.record
			before := r
			err := e.store.Update(context.Background(), func(tx Tx) error { return tx.CreateRecord(&r) })
			wantErr(t, err, tt.want)
			if r != before {
				t.Errorf("a failed CreateRecord changed its argument: %+v", r)
			}
		})
	}
	e.view(t, func(tx Tx) error {
		_, err := tx.RecordBySlug("anna")
		wantErr(t, err, ErrNotFound)
		return nil
	})
}

func TestCreateRecordKeepsCallerChosenIDs(t *testing.T) {
	e := newTestEnv(t)
	id := NewID()
	r := &Record{ID: id, Slug: "imported", Relationship: RelationshipOther, PartitionID: 2, Status: StatusActive}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(r) })
	if r.ID != id || r.PartitionID != 2 || r.Status != StatusActive {
		t.Fatalf("caller-chosen fields not kept: %+v", r)
	}
	// Allocation skips the partition id the caller took.
	var ids []int64
	for _, slug := range []string{"first", "second"} {
		r := &Record{Slug: slug, Relationship: RelationshipSelf}
		e.update(t, func(tx Tx) error { return tx.CreateRecord(r) })
		ids = append(ids, r.PartitionID)
	}
	if ids[0] != 1 || ids[1] != 3 {
		t.Fatalf("allocated partition ids %v, want [1 3] (2 was taken)", ids)
	}
}

func TestConcurrentCreateSameSlugExactlyOneWins(t *testing.T) {
	e := newTestEnv(t)
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.store.Update(context.Background(), func(tx Tx) error {
				return tx.CreateRecord(&Record{Slug: "race", Relationship: RelationshipSelf})
			})
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrSlugTaken):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creations of the same slug succeeded, want exactly 1", wins)
	}
}

func TestDeleteRecordFreesSlugButNeverIDs(t *testing.T) {
	e := newTestEnv(t)
	owner := e.account(t, "alice")
	first := e.recordOwnedBy(t, "john", owner)

	e.update(t, func(tx Tx) error { return tx.DeleteRecord(first.ID) })
	e.view(t, func(tx Tx) error {
		_, err := tx.Record(first.ID)
		wantErr(t, err, ErrNotFound)
		_, err = tx.RecordBySlug("john")
		wantErr(t, err, ErrNotFound)
		_, err = tx.Membership(first.ID, owner.ID)
		wantErr(t, err, ErrNotFound)
		recs, err := tx.RecordsForAccount(owner.ID)
		if err != nil || len(recs) != 0 {
			t.Errorf("RecordsForAccount after delete = %v, %v; want none", recs, err)
		}
		return nil
	})

	// The slug is free again, but the new record gets a new id and partition.
	second := e.recordOwnedBy(t, "john", owner)
	if second.ID == first.ID || second.PartitionID <= first.PartitionID || second.PartitionName == first.PartitionName {
		t.Fatalf("ids reused after delete: first %+v, second %+v", first, second)
	}

	// Asking for the old ids explicitly is refused too.
	err := e.store.Update(context.Background(), func(tx Tx) error {
		return tx.CreateRecord(&Record{ID: first.ID, Slug: "other", Relationship: RelationshipSelf})
	})
	wantErr(t, err, ErrConflict)
	err = e.store.Update(context.Background(), func(tx Tx) error {
		return tx.CreateRecord(&Record{PartitionID: first.PartitionID, Slug: "other", Relationship: RelationshipSelf})
	})
	wantErr(t, err, ErrConflict)

	err = e.store.Update(context.Background(), func(tx Tx) error { return tx.DeleteRecord(first.ID) })
	wantErr(t, err, ErrNotFound)
}

func TestPartitionIDsStrictlyIncreaseAcrossDeletes(t *testing.T) {
	e := newTestEnv(t)
	var last int64
	for i := range 5 {
		r := &Record{Slug: "cycle", Relationship: RelationshipSelf}
		e.update(t, func(tx Tx) error { return tx.CreateRecord(r) })
		if r.PartitionID <= last {
			t.Fatalf("round %d: partition id %d not above %d", i, r.PartitionID, last)
		}
		last = r.PartitionID
		e.update(t, func(tx Tx) error { return tx.DeleteRecord(r.ID) })
	}
}

func TestFailedUpdateLeavesNothing(t *testing.T) {
	e := newTestEnv(t)
	boom := errors.New("provisioning failed")
	var created Record
	err := e.store.Update(context.Background(), func(tx Tx) error {
		a, err := tx.EnsureAccount("https://issuer.example", "alice")
		if err != nil {
			return err
		}
		created = Record{Slug: "john", Relationship: RelationshipSelf}
		if err := tx.CreateRecord(&created); err != nil {
			return err
		}
		if err := tx.SetMembership(Membership{RecordID: created.ID, AccountID: a.ID, Role: RoleOwner}); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update returned %v, want fn's error unchanged", err)
	}
	e.view(t, func(tx Tx) error {
		_, err := tx.RecordBySlug("john")
		wantErr(t, err, ErrNotFound)
		_, err = tx.Record(created.ID)
		wantErr(t, err, ErrNotFound)
		_, err = tx.AccountByIdentity("https://issuer.example", "alice")
		wantErr(t, err, ErrNotFound)
		return nil
	})
	// A rolled-back id was never visible, so it may be handed out again;
	// what matters is that the slug and the first partition are usable.
	r := &Record{Slug: "john", Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(r) })
	if r.PartitionID != 1 {
		t.Fatalf("PartitionID = %d after a rolled-back create, want 1", r.PartitionID)
	}
}

func TestPutRecord(t *testing.T) {
	e := newTestEnv(t)
	owner := e.account(t, "alice")
	john := e.recordOwnedBy(t, "john", owner)
	e.recordOwnedBy(t, "anna", owner)

	e.clock.Advance(time.Minute)
	updated := *john
	updated.Slug = "johnny"
	updated.Status = StatusActive
	updated.PatientID = "pat-42"
	updated.WebhookURL = "https://hooks.example/pfr"
	updated.WebhookSecret = "s3cret"
	updated.Created = time.Time{} // ignored: the store keeps Created
	e.update(t, func(tx Tx) error { return tx.PutRecord(&updated) })
	if !updated.Created.Equal(john.Created) || !updated.Updated.Equal(e.clock.Now()) {
		t.Errorf("Created, Updated = %v, %v; want %v, %v", updated.Created, updated.Updated, john.Created, e.clock.Now())
	}
	e.view(t, func(tx Tx) error {
		_, err := tx.RecordBySlug("john")
		wantErr(t, err, ErrNotFound)
		got, err := tx.RecordBySlug("johnny")
		if err != nil {
			return err
		}
		if *got != updated {
			t.Errorf("stored %+v, want %+v", got, updated)
		}
		return nil
	})

	tests := []struct {
		name   string
		change func(r *Record)
		want   error
	}{
		{"slug of another record", func(r *Record) { r.Slug = "anna" }, ErrSlugTaken},
		{"invalid slug", func(r *Record) { r.Slug = "www" }, ErrInvalidSlug},
		{"partition id", func(r *Record) { r.PartitionID++ }, ErrConflict},
		{"partition name", func(r *Record) { r.PartitionName = "pfr-other" }, ErrConflict},
		{"relationship", func(r *Record) { r.Relationship = RelationshipChild }, ErrConflict},
		{"status", func(r *Record) { r.Status = "gone" }, ErrInvalid},
		{"unknown id", func(r *Record) { r.ID = NewID() }, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := updated
			tt.change(&r)
			err := e.store.Update(context.Background(), func(tx Tx) error { return tx.PutRecord(&r) })
			wantErr(t, err, tt.want)
		})
	}
	// Putting a record under its own slug is no conflict.
	same := updated
	e.update(t, func(tx Tx) error { return tx.PutRecord(&same) })
}

func TestRecordsForAccount(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	zed := e.recordOwnedBy(t, "zed", alice)
	amy := e.recordOwnedBy(t, "amy", bob)
	e.recordOwnedBy(t, "bob-only", bob)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: amy.ID, AccountID: alice.ID, Role: RoleViewer})
	})
	e.view(t, func(tx Tx) error {
		got, err := tx.RecordsForAccount(alice.ID)
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0].ID != amy.ID || got[0].Role != RoleViewer || got[1].ID != zed.ID || got[1].Role != RoleOwner {
			t.Errorf("RecordsForAccount(alice) = %+v, want amy as viewer then zed as owner", got)
		}
		_, err = tx.RecordsForAccount(NewID())
		wantErr(t, err, ErrNotFound)
		return nil
	})
}

func TestStaleRecords(t *testing.T) {
	e := newTestEnv(t)
	stuck := &Record{Slug: "stuck", Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(stuck) })
	dying := &Record{Slug: "dying", Relationship: RelationshipSelf, Status: StatusDeleting}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(dying) })
	active := &Record{Slug: "fine", Relationship: RelationshipSelf, Status: StatusActive}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(active) })
	e.clock.Advance(time.Hour)
	fresh := &Record{Slug: "fresh", Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error { return tx.CreateRecord(fresh) })

	cutoff := e.clock.Now().Add(-30 * time.Minute)
	e.view(t, func(tx Tx) error {
		prov, err := tx.StaleProvisioning(cutoff)
		if err != nil {
			return err
		}
		if len(prov) != 1 || prov[0].ID != stuck.ID {
			t.Errorf("StaleProvisioning = %+v, want only %q", prov, stuck.Slug)
		}
		del, err := tx.StaleDeleting(cutoff)
		if err != nil {
			return err
		}
		if len(del) != 1 || del[0].ID != dying.ID {
			t.Errorf("StaleDeleting = %+v, want only %q", del, dying.Slug)
		}
		return nil
	})
}

func TestRetryingAnotherSlugInOneTxLeavesNoGap(t *testing.T) {
	e := newTestEnv(t)
	e.update(t, func(tx Tx) error { return tx.CreateRecord(&Record{Slug: "john", Relationship: RelationshipSelf}) })
	second := &Record{Slug: "john", Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error {
		if err := tx.CreateRecord(second); !errors.Is(err, ErrSlugTaken) {
			return fmt.Errorf("first try: %v, want ErrSlugTaken", err)
		}
		second.Slug = "john-2"
		return tx.CreateRecord(second)
	})
	if second.PartitionID != 2 {
		t.Fatalf("PartitionID = %d, want 2: the refused try consumed an id", second.PartitionID)
	}
}
