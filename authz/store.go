package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Errors of the Store.
var (
	// ErrNotFound: no such client, request, session, code, grant or token.
	ErrNotFound = errors.New("not found")
	// ErrUsed: a single-use secret (code, refresh token) was presented
	// again. The store has already revoked what it let out.
	ErrUsed = errors.New("already used")
	// ErrExists: a client with that id exists.
	ErrExists = errors.New("already exists")
)

// Store keeps the authorization server's state. It is shaped by what the
// server does (use a code once, rotate a refresh token, check a token's
// grant), not by buckets; KVStore implements it on bbolt and PostgreSQL
// alike. Secrets (codes, refresh tokens, session cookies, client secrets)
// are passed and kept as hashes only.
type Store interface {
	// CreateClient stores a new client (ErrExists when its id is taken).
	CreateClient(ctx context.Context, c *Client) error
	// PutStaticClient stores or replaces a client of the configuration;
	// ErrExists when a registered (non-static) client has its id.
	PutStaticClient(ctx context.Context, c *Client) error
	// DropStaticClients deletes the configuration's clients whose id is
	// not in keep (a client removed from the configuration stops working).
	DropStaticClients(ctx context.Context, keep []string) error
	// Client returns the client, or ErrNotFound.
	Client(ctx context.Context, id string) (*Client, error)
	// UpdateClient replaces the registered client c.ID if its registration
	// access token hash is still registrationHash (a token rotated by a
	// concurrent update no longer is); ErrNotFound otherwise.
	UpdateClient(ctx context.Context, c *Client, registrationHash string) error
	// DeleteClient deletes the registered client id with its grants on
	// every record (its refresh and access tokens stop with them) if its
	// registration access token hash is registrationHash; ErrNotFound
	// otherwise.
	DeleteClient(ctx context.Context, id, registrationHash string) error

	// PutPending stores an authorization request waiting for login and
	// consent; Pending returns it (ErrNotFound when absent or expired);
	// DeletePending removes it.
	PutPending(ctx context.Context, p *Pending) error
	Pending(ctx context.Context, id string, now time.Time) (*Pending, error)
	DeletePending(ctx context.Context, id string) error

	// PutSession stores a browser's login; Session returns it by the hash
	// of its cookie (ErrNotFound when absent or expired).
	PutSession(ctx context.Context, s *Session) error
	Session(ctx context.Context, hash string, now time.Time) (*Session, error)

	// Approve saves the grant for (record, client, account), replacing the
	// one before it (whose refresh tokens stop working, since they name
	// its id), and stores the code issued for it, in one transaction. The
	// pending request is deleted.
	Approve(ctx context.Context, g *Grant, c *Code, pendingID string) error
	// SaveGrant saves a grant made without a code (a backend service's),
	// replacing the one before it for (record, client, account).
	SaveGrant(ctx context.Context, g *Grant) error
	// UseCode returns the code and marks it used, once. A second use
	// returns the code with ErrUsed and revokes every refresh token
	// family issued from it (RFC 6749 section 4.1.2).
	UseCode(ctx context.Context, hash string, now time.Time) (*Code, error)
	// CodeIssued records that the code's exchange started refresh family
	// family (so a replay of the code revokes it).
	CodeIssued(ctx context.Context, codeHash, family string) error

	// Grant returns the grant with the given id, or ErrNotFound.
	Grant(ctx context.Context, id string) (*Grant, error)
	// Grants returns a record's grants, ordered by client and account.
	Grants(ctx context.Context, recordID string) ([]Grant, error)
	// ClientGrants returns a client's grants on every record, ordered by
	// record and account.
	ClientGrants(ctx context.Context, clientID string) ([]Grant, error)
	// RevokeGrants deletes the record's grants to client and returns how
	// many there were.
	RevokeGrants(ctx context.Context, recordID, clientID string) (int, error)
	// DeleteRecordGrants deletes every grant of a record.
	DeleteRecordGrants(ctx context.Context, recordID string) error

	// PutRefresh stores a new refresh token (the first of its family).
	PutRefresh(ctx context.Context, hash string, r *Refresh) error
	// RotateRefresh replaces the refresh token oldHash by newHash, once:
	// the old one must exist, be unused, unexpired, of a live family and
	// grant. Presented again after rotation it returns ErrUsed and
	// revokes the family.
	RotateRefresh(ctx context.Context, oldHash, newHash string, next func(old *Refresh) (*Refresh, error), now time.Time) (*Refresh, error)
	// RevokeRefresh revokes the family of the refresh token if it exists
	// and was issued to clientID.
	RevokeRefresh(ctx context.Context, hash, clientID string) error

	// TokenStatus checks, in one read, what an access token depends on:
	// its grant (returned) and client, its refresh family ("" for none) and
	// its jti.
	// ErrNotFound when any of them is gone or revoked.
	TokenStatus(ctx context.Context, grantID, family, jti string) (*Grant, error)
	// RevokeAccessToken puts an access token's jti on the revocation list
	// until exp.
	RevokeAccessToken(ctx context.Context, jti string, exp time.Time) error

	// UseAssertion records a client assertion's jti until exp, once: a
	// second use returns ErrUsed (private_key_jwt replay).
	UseAssertion(ctx context.Context, clientID, jti string, exp time.Time) error

	// Keys returns the signing keys, oldest first.
	Keys(ctx context.Context) ([]StoredKey, error)
	// RotateKeys adds key unless the newest key was created after
	// notBefore (another node rotated already), and deletes keys retired
	// before dropBefore; it returns the keys afterwards, oldest first.
	RotateKeys(ctx context.Context, key StoredKey, notBefore, dropBefore time.Time) ([]StoredKey, error)

	// Prune deletes what expired before now.
	Prune(ctx context.Context, now time.Time) error
}

// Buckets, all prefixed "authz/" since the bbolt file is shared with the
// other packages.
var (
	bucketClients  = []byte("authz/clients")         // client id → Client
	bucketPending  = []byte("authz/pending")         // request id → Pending
	bucketSessions = []byte("authz/sessions")        // cookie hash → Session
	bucketCodes    = []byte("authz/codes")           // code hash → Code
	bucketGrants   = []byte("authz/grants")          // grant id → Grant
	bucketGrantIdx = []byte("authz/grant-by")        // record 0 client 0 account → grant id
	bucketClientIx = []byte("authz/grant-by-client") // client 0 record 0 account → grant id
	bucketRefresh  = []byte("authz/refresh")         // token hash → Refresh
	bucketFamilies = []byte("authz/families")        // family → family
	bucketJTI      = []byte("authz/revoked")         // jti → expiry (RFC 3339)
	bucketKeys     = []byte("authz/keys")            // kid → StoredKey
)

// Buckets lists every bucket the store uses.
var Buckets = [][]byte{bucketClients, bucketPending, bucketSessions, bucketCodes, bucketGrants,
	bucketGrantIdx, bucketClientIx, bucketRefresh, bucketFamilies, bucketJTI, bucketKeys}

// family is a chain of rotated refresh tokens.
type family struct {
	GrantID string    `json:"grant"`
	Revoked bool      `json:"revoked,omitempty"`
	Expires time.Time `json:"exp"`
}

// KVStore is the Store on an internal/kv database: the gateway's bbolt file
// (buckets "authz/…") or PostgreSQL for several nodes.
type KVStore struct{ db kv.DB }

var _ Store = (*KVStore)(nil)

// NewStore returns a Store on db, creating its buckets if needed.
func NewStore(db kv.DB) (*KVStore, error) {
	if db == nil {
		return nil, errors.New("authz: nil database")
	}
	if err := db.CreateBuckets(Buckets); err != nil {
		return nil, fmt.Errorf("authz: opening state: %w", err)
	}
	s := &KVStore{db: db}
	if err := s.indexClients(); err != nil {
		return nil, fmt.Errorf("authz: indexing grants by client: %w", err)
	}
	return s, nil
}

// indexClients builds the grants-by-client index of a state written
// before it existed (grants but no index entries); afterwards every grant
// change keeps both indexes, so an empty client index means no grants.
func (s *KVStore) indexClients() error {
	return s.db.Update(context.Background(), owner, func(tx kv.Tx) error {
		byClient := tx.Bucket(bucketClientIx)
		if k, _ := byClient.Cursor().First(); k != nil {
			return nil
		}
		type entry struct{ key, id []byte }
		var add []entry
		if err := tx.Bucket(bucketGrantIdx).ForEach(func(k, v []byte) error {
			if ck, ok := clientKey(k); ok {
				add = append(add, entry{ck, bytes.Clone(v)})
			}
			return nil
		}); err != nil {
			return err
		}
		for _, e := range add {
			if err := byClient.Put(e.key, e.id); err != nil {
				return err
			}
		}
		return nil
	})
}

// clientKey turns a grant index key (record 0 client 0 account) into the
// client index's (client 0 record 0 account).
func clientKey(recordKey []byte) ([]byte, bool) {
	parts := bytes.Split(recordKey, []byte{0})
	if len(parts) != 3 {
		return nil, false
	}
	return bytes.Join([][]byte{parts[1], parts[0], parts[2]}, []byte{0}), true
}

const owner = "authz"

func getJSON(b kv.Bucket, key string, v any) error {
	raw := b.Get([]byte(key))
	if raw == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("authz: decoding %q: %w", key, err)
	}
	return nil
}

func putJSON(b kv.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// CreateClient implements Store.
func (s *KVStore) CreateClient(ctx context.Context, c *Client) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClients)
		if b.Get([]byte(c.ID)) != nil {
			return ErrExists
		}
		return putJSON(b, c.ID, c)
	})
}

// PutStaticClient implements Store.
func (s *KVStore) PutStaticClient(ctx context.Context, c *Client) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClients)
		var old Client
		if err := getJSON(b, c.ID, &old); err == nil && !old.Static {
			return ErrExists
		}
		return putJSON(b, c.ID, c)
	})
}

// DropStaticClients implements Store.
func (s *KVStore) DropStaticClients(ctx context.Context, keep []string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClients)
		var drop [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var c Client
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("authz: decoding client %q: %w", k, err)
			}
			if c.Static && !slices.Contains(keep, c.ID) {
				drop = append(drop, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Client implements Store.
func (s *KVStore) Client(ctx context.Context, id string) (*Client, error) {
	var c Client
	err := s.db.View(ctx, owner, func(tx kv.Tx) error { return getJSON(tx.Bucket(bucketClients), id, &c) })
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// registeredClient reads the registered client id whose registration
// access token hash is registrationHash, or fails with ErrNotFound.
func registeredClient(b kv.Bucket, id, registrationHash string) (*Client, error) {
	var c Client
	if err := getJSON(b, id, &c); err != nil {
		return nil, err
	}
	if c.Static || c.RegistrationHash == "" || !equalSecret(c.RegistrationHash, registrationHash) {
		return nil, ErrNotFound
	}
	return &c, nil
}

// UpdateClient implements Store.
func (s *KVStore) UpdateClient(ctx context.Context, c *Client, registrationHash string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClients)
		if _, err := registeredClient(b, c.ID, registrationHash); err != nil {
			return err
		}
		return putJSON(b, c.ID, c)
	})
}

// DeleteClient implements Store.
func (s *KVStore) DeleteClient(ctx context.Context, id, registrationHash string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClients)
		if _, err := registeredClient(b, id, registrationHash); err != nil {
			return err
		}
		if err := grantEntries(tx, bucketClientIx, id+"\x00", func(key, grantID []byte) error {
			return deleteGrant(tx, key, grantID)
		}); err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
}

// PutPending implements Store.
func (s *KVStore) PutPending(ctx context.Context, p *Pending) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error { return putJSON(tx.Bucket(bucketPending), p.ID, p) })
}

// Pending implements Store.
func (s *KVStore) Pending(ctx context.Context, id string, now time.Time) (*Pending, error) {
	var p Pending
	err := s.db.View(ctx, owner, func(tx kv.Tx) error { return getJSON(tx.Bucket(bucketPending), id, &p) })
	if err != nil {
		return nil, err
	}
	if !now.Before(p.Expires) {
		return nil, ErrNotFound
	}
	return &p, nil
}

// DeletePending implements Store.
func (s *KVStore) DeletePending(ctx context.Context, id string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error { return tx.Bucket(bucketPending).Delete([]byte(id)) })
}

// PutSession implements Store.
func (s *KVStore) PutSession(ctx context.Context, se *Session) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error { return putJSON(tx.Bucket(bucketSessions), se.Hash, se) })
}

// Session implements Store.
func (s *KVStore) Session(ctx context.Context, hash string, now time.Time) (*Session, error) {
	var se Session
	err := s.db.View(ctx, owner, func(tx kv.Tx) error { return getJSON(tx.Bucket(bucketSessions), hash, &se) })
	if err != nil {
		return nil, err
	}
	if !now.Before(se.Expires) {
		return nil, ErrNotFound
	}
	return &se, nil
}

func grantKey(recordID, clientID, accountID string) string {
	return recordID + "\x00" + clientID + "\x00" + accountID
}

// putGrant writes g in place of the grant before it for (record, client,
// account).
func putGrant(tx kv.Tx, g *Grant) error {
	grants, idx := tx.Bucket(bucketGrants), tx.Bucket(bucketGrantIdx)
	key := []byte(grantKey(g.RecordID, g.ClientID, g.AccountID))
	if old := idx.Get(key); old != nil {
		if err := grants.Delete(old); err != nil {
			return err
		}
	}
	if err := idx.Put(key, []byte(g.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketClientIx).Put([]byte(grantKey(g.ClientID, g.RecordID, g.AccountID)), []byte(g.ID)); err != nil {
		return err
	}
	return putJSON(grants, g.ID, g)
}

// SaveGrant implements Store.
func (s *KVStore) SaveGrant(ctx context.Context, g *Grant) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error { return putGrant(tx, g) })
}

// Approve implements Store.
func (s *KVStore) Approve(ctx context.Context, g *Grant, c *Code, pendingID string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		if err := putGrant(tx, g); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketCodes), c.Hash, c); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Delete([]byte(pendingID))
	})
}

// UseCode implements Store.
func (s *KVStore) UseCode(ctx context.Context, hash string, now time.Time) (*Code, error) {
	var c Code
	var used bool
	err := s.db.Update(ctx, owner, func(tx kv.Tx) error {
		codes := tx.Bucket(bucketCodes)
		if err := getJSON(codes, hash, &c); err != nil {
			return err
		}
		if c.Used {
			used = true
			for _, f := range c.Families {
				if err := revokeFamily(tx, f); err != nil {
					return err
				}
			}
			return nil
		}
		if !now.Before(c.Expires) {
			return ErrNotFound
		}
		c.Used = true
		return putJSON(codes, hash, &c)
	})
	if err != nil {
		return nil, err
	}
	if used {
		return &c, ErrUsed
	}
	return &c, nil
}

// CodeIssued implements Store.
func (s *KVStore) CodeIssued(ctx context.Context, codeHash, fam string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		codes := tx.Bucket(bucketCodes)
		var c Code
		if err := getJSON(codes, codeHash, &c); err != nil {
			return err
		}
		c.Families = append(c.Families, fam)
		return putJSON(codes, codeHash, &c)
	})
}

func revokeFamily(tx kv.Tx, name string) error {
	b := tx.Bucket(bucketFamilies)
	var f family
	if err := getJSON(b, name, &f); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	f.Revoked = true
	return putJSON(b, name, &f)
}

// Grant implements Store.
func (s *KVStore) Grant(ctx context.Context, id string) (*Grant, error) {
	var g Grant
	err := s.db.View(ctx, owner, func(tx kv.Tx) error { return getJSON(tx.Bucket(bucketGrants), id, &g) })
	if err != nil {
		return nil, err
	}
	return &g, nil
}

// grantEntries calls fn for every entry whose key starts with prefix in
// index: the record index (bucketGrantIdx: record 0 client 0 account) or
// the client index (bucketClientIx: client 0 record 0 account). fn gets
// the record index's key either way.
func grantEntries(tx kv.Tx, index []byte, prefix string, fn func(recordKey, grantID []byte) error) error {
	p := []byte(prefix)
	c := tx.Bucket(index).Cursor()
	var keys, ids [][]byte
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		key := bytes.Clone(k)
		if bytes.Equal(index, bucketClientIx) {
			var ok bool
			if key, ok = clientKey(k); !ok { // the swap is its own inverse
				continue
			}
		}
		keys, ids = append(keys, key), append(ids, bytes.Clone(v))
	}
	for i := range keys {
		if err := fn(keys[i], ids[i]); err != nil {
			return err
		}
	}
	return nil
}

// recordGrants calls fn for every grant index entry of recordID (and of
// clientID when not empty).
func recordGrants(tx kv.Tx, recordID, clientID string, fn func(key, grantID []byte) error) error {
	prefix := recordID + "\x00"
	if clientID != "" {
		prefix += clientID + "\x00"
	}
	return grantEntries(tx, bucketGrantIdx, prefix, fn)
}

// grants returns the grants of the index entries under prefix.
func (s *KVStore) grants(ctx context.Context, index []byte, prefix string) ([]Grant, error) {
	var out []Grant
	err := s.db.View(ctx, owner, func(tx kv.Tx) error {
		grants := tx.Bucket(bucketGrants)
		return grantEntries(tx, index, prefix, func(_, id []byte) error {
			var g Grant
			if err := getJSON(grants, string(id), &g); err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
	})
	return out, err
}

// Grants implements Store.
func (s *KVStore) Grants(ctx context.Context, recordID string) ([]Grant, error) {
	return s.grants(ctx, bucketGrantIdx, recordID+"\x00")
}

// ClientGrants implements Store.
func (s *KVStore) ClientGrants(ctx context.Context, clientID string) ([]Grant, error) {
	return s.grants(ctx, bucketClientIx, clientID+"\x00")
}

// RevokeGrants implements Store.
func (s *KVStore) RevokeGrants(ctx context.Context, recordID, clientID string) (int, error) {
	n := 0
	err := s.db.Update(ctx, owner, func(tx kv.Tx) error {
		n = 0
		return recordGrants(tx, recordID, clientID, func(key, id []byte) error {
			n++
			return deleteGrant(tx, key, id)
		})
	})
	return n, err
}

// deleteGrant deletes the grant id and its entries in both indexes (key is
// the record index's).
func deleteGrant(tx kv.Tx, key, id []byte) error {
	if err := tx.Bucket(bucketGrants).Delete(id); err != nil {
		return err
	}
	if ck, ok := clientKey(key); ok {
		if err := tx.Bucket(bucketClientIx).Delete(ck); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketGrantIdx).Delete(key)
}

// DeleteRecordGrants implements Store.
func (s *KVStore) DeleteRecordGrants(ctx context.Context, recordID string) error {
	_, err := s.RevokeGrants(ctx, recordID, "")
	return err
}

// PutRefresh implements Store.
func (s *KVStore) PutRefresh(ctx context.Context, hash string, r *Refresh) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		if err := putJSON(tx.Bucket(bucketFamilies), r.Family, family{GrantID: r.GrantID, Expires: r.FamilyExpires}); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketRefresh), hash, r)
	})
}

// RotateRefresh implements Store.
func (s *KVStore) RotateRefresh(ctx context.Context, oldHash, newHash string, next func(old *Refresh) (*Refresh, error), now time.Time) (*Refresh, error) {
	var out *Refresh
	var reused bool
	err := s.db.Update(ctx, owner, func(tx kv.Tx) error {
		reused = false
		tokens := tx.Bucket(bucketRefresh)
		var old Refresh
		if err := getJSON(tokens, oldHash, &old); err != nil {
			return err
		}
		if old.Used {
			reused = true
			return revokeFamily(tx, old.Family)
		}
		var f family
		if err := getJSON(tx.Bucket(bucketFamilies), old.Family, &f); err != nil {
			return err
		}
		if f.Revoked || !now.Before(old.Expires) || tx.Bucket(bucketGrants).Get([]byte(old.GrantID)) == nil {
			return ErrNotFound
		}
		n, err := next(&old)
		if err != nil {
			return err
		}
		old.Used = true
		if err := putJSON(tokens, oldHash, &old); err != nil {
			return err
		}
		out = n
		return putJSON(tokens, newHash, n)
	})
	if err != nil {
		return nil, err
	}
	if reused {
		return nil, ErrUsed
	}
	return out, nil
}

// RevokeRefresh implements Store.
func (s *KVStore) RevokeRefresh(ctx context.Context, hash, clientID string) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		var r Refresh
		if err := getJSON(tx.Bucket(bucketRefresh), hash, &r); err != nil {
			return err
		}
		if r.ClientID != clientID {
			return ErrNotFound
		}
		return revokeFamily(tx, r.Family)
	})
}

// TokenStatus implements Store.
func (s *KVStore) TokenStatus(ctx context.Context, grantID, fam, jti string) (*Grant, error) {
	var g Grant
	err := s.db.View(ctx, owner, func(tx kv.Tx) error {
		if err := getJSON(tx.Bucket(bucketGrants), grantID, &g); err != nil {
			return err
		}
		if tx.Bucket(bucketClients).Get([]byte(g.ClientID)) == nil {
			return ErrNotFound // a client removed from the configuration
		}
		if fam != "" {
			var f family
			if err := getJSON(tx.Bucket(bucketFamilies), fam, &f); err != nil {
				return err
			}
			if f.Revoked || f.GrantID != grantID {
				return ErrNotFound
			}
		}
		if jti != "" && tx.Bucket(bucketJTI).Get([]byte(jti)) != nil {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &g, nil
}

// RevokeAccessToken implements Store.
func (s *KVStore) RevokeAccessToken(ctx context.Context, jti string, exp time.Time) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		return tx.Bucket(bucketJTI).Put([]byte(jti), []byte(exp.UTC().Format(time.RFC3339Nano)))
	})
}

// UseAssertion implements Store.
func (s *KVStore) UseAssertion(ctx context.Context, clientID, jti string, exp time.Time) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketJTI)
		key := []byte("assertion\x00" + clientID + "\x00" + jti)
		if b.Get(key) != nil {
			return ErrUsed
		}
		return b.Put(key, []byte(exp.UTC().Format(time.RFC3339Nano)))
	})
}

// Keys implements Store.
func (s *KVStore) Keys(ctx context.Context) ([]StoredKey, error) {
	var out []StoredKey
	err := s.db.View(ctx, owner, func(tx kv.Tx) error {
		var err error
		out, err = readKeys(tx)
		return err
	})
	return out, err
}

func readKeys(tx kv.Tx) ([]StoredKey, error) {
	var out []StoredKey
	err := tx.Bucket(bucketKeys).ForEach(func(_, v []byte) error {
		var k StoredKey
		if err := json.Unmarshal(v, &k); err != nil {
			return fmt.Errorf("authz: decoding a signing key: %w", err)
		}
		out = append(out, k)
		return nil
	})
	sortKeys(out)
	return out, err
}

// RotateKeys implements Store.
func (s *KVStore) RotateKeys(ctx context.Context, key StoredKey, notBefore, dropBefore time.Time) ([]StoredKey, error) {
	var out []StoredKey
	err := s.db.Update(ctx, owner, func(tx kv.Tx) error {
		keys, err := readKeys(tx)
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketKeys)
		if len(keys) == 0 || !keys[len(keys)-1].Created.After(notBefore) {
			// The newest key stops signing now: it retires.
			if len(keys) > 0 {
				last := keys[len(keys)-1]
				last.Retired = key.Created
				if err := putJSON(b, last.Kid, last); err != nil {
					return err
				}
			}
			if err := putJSON(b, key.Kid, key); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if !k.Retired.IsZero() && k.Retired.Before(dropBefore) {
				if err := b.Delete([]byte(k.Kid)); err != nil {
					return err
				}
			}
		}
		out, err = readKeys(tx)
		return err
	})
	return out, err
}

// Prune implements Store.
func (s *KVStore) Prune(ctx context.Context, now time.Time) error {
	return s.db.Update(ctx, owner, func(tx kv.Tx) error {
		type expiring struct {
			Expires time.Time `json:"exp"`
		}
		for _, name := range [][]byte{bucketPending, bucketSessions, bucketCodes, bucketRefresh, bucketFamilies} {
			b := tx.Bucket(name)
			var dead [][]byte
			if err := b.ForEach(func(k, v []byte) error {
				var e expiring
				if json.Unmarshal(v, &e) == nil && !e.Expires.IsZero() && e.Expires.Before(now) {
					dead = append(dead, bytes.Clone(k))
				}
				return nil
			}); err != nil {
				return err
			}
			for _, k := range dead {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		b := tx.Bucket(bucketJTI)
		var dead [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			if t, err := time.Parse(time.RFC3339Nano, string(v)); err == nil && t.Before(now) {
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}
