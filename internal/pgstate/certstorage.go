package pgstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5"
)

// Lock timing of CertStorage. A held lock is renewed every lockRenew and
// runs out lockTTL after the last renewal, so a node that died holding one
// blocks the others for at most lockTTL; waiters look again every
// lockPoll.
const (
	lockTTL   = 30 * time.Second
	lockRenew = 10 * time.Second
	lockPoll  = 500 * time.Millisecond
)

// CertStorage is certmagic's Storage in PostgreSQL, so that every gateway
// node sees the certificates one of them obtained, and its Locker keeps
// two nodes from obtaining the same certificate at once.
//
// Locks are rows with a random token and an expiry. Lock inserts the row,
// or takes it over only when it has expired, in one statement; a
// goroutine renews the expiry while the lock is held; Unlock deletes the
// row only if the token is still its own (fencing: a holder whose lock
// ran out and was taken over cannot release the new holder's).
type CertStorage struct {
	db *DB

	mu   sync.Mutex
	held map[string]heldLock // lock name → this process's hold
}

type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

var _ certmagic.Storage = (*CertStorage)(nil)

// NewCertStorage returns the certificate storage on db.
func NewCertStorage(db *DB) *CertStorage {
	return &CertStorage{db: db, held: map[string]heldLock{}}
}

// Store implements certmagic.Storage.
func (s *CertStorage) Store(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := s.db.pool.Exec(ctx, `INSERT INTO pfr_certs (key, value, modified) VALUES ($1, $2, now())
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified`, key, value)
	if err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	return nil
}

// Load implements certmagic.Storage; a missing key is fs.ErrNotExist.
func (s *CertStorage) Load(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.db.pool.QueryRow(ctx, "SELECT value FROM pfr_certs WHERE key = $1", key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", key, err)
	}
	return v, nil
}

// Delete implements certmagic.Storage: the key and every key under it.
func (s *CertStorage) Delete(ctx context.Context, key string) error {
	_, err := s.db.pool.Exec(ctx, "DELETE FROM pfr_certs WHERE key = $1 OR starts_with(key, $2)", key, key+"/")
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// Exists implements certmagic.Storage: a file or a directory.
func (s *CertStorage) Exists(ctx context.Context, key string) bool {
	var ok bool
	err := s.db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pfr_certs WHERE key = $1 OR starts_with(key, $2))", key, key+"/").Scan(&ok)
	return err == nil && ok
}

// List implements certmagic.Storage: the keys under path, all of them when
// recursive, else its direct children (files and directories).
func (s *CertStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	prefix := strings.TrimSuffix(path, "/") + "/"
	if path == "" {
		prefix = ""
	}
	rows, err := s.db.pool.Query(ctx, "SELECT key FROM pfr_certs WHERE starts_with(key, $1) ORDER BY key", prefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", path, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	}
	if recursive {
		return keys, nil
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		child, _, _ := strings.Cut(strings.TrimPrefix(k, prefix), "/")
		if name := prefix + child; !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Stat implements certmagic.Storage.
func (s *CertStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	var size int64
	var modified time.Time
	err := s.db.pool.QueryRow(ctx, "SELECT length(value), modified FROM pfr_certs WHERE key = $1", key).Scan(&size, &modified)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: modified, Size: size, IsTerminal: true}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	if s.Exists(ctx, key) {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
}

// Lock implements certmagic.Locker: it waits until it holds name or ctx
// is done.
func (s *CertStorage) Lock(ctx context.Context, name string) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	for {
		ok, err := s.tryLock(ctx, name, token)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockPoll):
		}
	}
	h := heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	go s.renew(name, h)
	s.mu.Lock()
	if old, ok := s.held[name]; ok {
		// This process took over its own expired lock: stop the old
		// renewer, whose token no longer matches anyway.
		close(old.stop)
	}
	s.held[name] = h
	s.mu.Unlock()
	return nil
}

// tryLock takes name for token if nobody holds it or its holder's lease
// has run out.
func (s *CertStorage) tryLock(ctx context.Context, name, token string) (bool, error) {
	tag, err := s.db.pool.Exec(ctx, `INSERT INTO pfr_cert_locks (name, token, expires)
		VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, expires = EXCLUDED.expires
		WHERE pfr_cert_locks.expires < now()`, name, token, lockTTL.String())
	if err != nil {
		return false, fmt.Errorf("locking %s: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// renew keeps the lock alive until stopped or lost.
func (s *CertStorage) renew(name string, h heldLock) {
	defer close(h.done)
	t := time.NewTicker(lockRenew)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lockRenew)
		tag, err := s.db.pool.Exec(ctx, "UPDATE pfr_cert_locks SET expires = now() + $3::interval WHERE name = $1 AND token = $2",
			name, h.token, lockTTL.String())
		cancel()
		if err == nil && tag.RowsAffected() == 0 {
			return // lost: it ran out and another holder took it
		}
	}
}

// Unlock implements certmagic.Locker. It releases only this process's
// own hold: the row is deleted only while its token is ours.
func (s *CertStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h, ok := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("unlocking %s: not locked by this process", name)
	}
	close(h.stop)
	<-h.done
	if _, err := s.db.pool.Exec(ctx, "DELETE FROM pfr_cert_locks WHERE name = $1 AND token = $2", name, h.token); err != nil {
		return fmt.Errorf("unlocking %s: %w", name, err)
	}
	return nil
}
