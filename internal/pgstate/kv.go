package pgstate

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// tx implements kv.Tx on a PostgreSQL transaction. kv's Get and cursor
// moves return no error (bbolt's cannot fail); here a failed query is kept
// in err, the method returns "absent", and Update and View return err
// instead of fn's result, so nothing decided on a failed read is committed
// or believed. PostgreSQL refuses every later statement of a failed
// transaction anyway.
type tx struct {
	ctx context.Context
	tx  pgx.Tx
	err error
	// gen counts writes, so cursors know their read-ahead is stale.
	gen int
}

func (t *tx) fail(err error) {
	if t.err == nil && err != nil {
		t.err = err
	}
}

func (t *tx) Bucket(name []byte) kv.Bucket { return &bucket{t: t, name: string(name)} }

type bucket struct {
	t    *tx
	name string
}

var _ kv.Bucket = (*bucket)(nil)

func (b *bucket) Get(key []byte) []byte {
	var v []byte
	err := b.t.tx.QueryRow(b.t.ctx, "SELECT value FROM pfr_kv WHERE bucket = $1 AND key = $2", b.name, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		b.t.fail(fmt.Errorf("reading %s: %w", b.name, err))
		return nil
	}
	if v == nil {
		v = []byte{}
	}
	return v
}

func (b *bucket) Put(key, value []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("writing %s: empty key", b.name)
	}
	if value == nil {
		value = []byte{}
	}
	b.t.gen++
	_, err := b.t.tx.Exec(b.t.ctx, `INSERT INTO pfr_kv (bucket, key, value) VALUES ($1, $2, $3)
		ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value`, b.name, key, value)
	if err != nil {
		err = fmt.Errorf("writing %s: %w", b.name, err)
		b.t.fail(err)
	}
	return err
}

func (b *bucket) Delete(key []byte) error {
	b.t.gen++
	_, err := b.t.tx.Exec(b.t.ctx, "DELETE FROM pfr_kv WHERE bucket = $1 AND key = $2", b.name, key)
	if err != nil {
		err = fmt.Errorf("deleting from %s: %w", b.name, err)
		b.t.fail(err)
	}
	return err
}

func (b *bucket) NextSequence() (uint64, error) {
	var n int64
	err := b.t.tx.QueryRow(b.t.ctx, `INSERT INTO pfr_kv_sequences (bucket, value) VALUES ($1, 1)
		ON CONFLICT (bucket) DO UPDATE SET value = pfr_kv_sequences.value + 1 RETURNING value`, b.name).Scan(&n)
	if err != nil {
		err = fmt.Errorf("sequence of %s: %w", b.name, err)
		b.t.fail(err)
		return 0, err
	}
	return uint64(n), nil
}

func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return b.t.err
}

func (b *bucket) Cursor() kv.Cursor { return &cursor{b: b} }

// pageSize is how many rows a cursor reads ahead in its direction.
const pageSize = 128

// cursor walks a bucket by key, reading ahead a page at a time. It
// remembers the key it stands on, so writes in between (the read-ahead is
// dropped when the transaction wrote) never make it skip or repeat a key.
type cursor struct {
	b   *bucket
	key []byte // where it stands; nil before the first move or past an end
	// page holds the rows read ahead after key in direction fwd.
	page []row
	fwd  bool
	gen  int
}

type row struct{ k, v []byte }

var _ kv.Cursor = (*cursor)(nil)

// load reads up to pageSize rows from the bound in the direction, the
// bound itself included when incl, and moves to the first.
func (c *cursor) load(bound []byte, fwd, incl bool) ([]byte, []byte) {
	t := c.b.t
	var q string
	args := []any{c.b.name, pageSize}
	switch {
	case bound == nil && fwd:
		q = "SELECT key, value FROM pfr_kv WHERE bucket = $1 ORDER BY key LIMIT $2"
	case bound == nil:
		q = "SELECT key, value FROM pfr_kv WHERE bucket = $1 ORDER BY key DESC LIMIT $2"
	case fwd && incl:
		q = "SELECT key, value FROM pfr_kv WHERE bucket = $1 AND key >= $3 ORDER BY key LIMIT $2"
	case fwd:
		q = "SELECT key, value FROM pfr_kv WHERE bucket = $1 AND key > $3 ORDER BY key LIMIT $2"
	default:
		q = "SELECT key, value FROM pfr_kv WHERE bucket = $1 AND key < $3 ORDER BY key DESC LIMIT $2"
	}
	if bound != nil {
		args = append(args, bound)
	}
	rows, err := t.tx.Query(t.ctx, q, args...)
	if err != nil {
		t.fail(fmt.Errorf("reading %s: %w", c.b.name, err))
		return c.end()
	}
	page := make([]row, 0, pageSize)
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.k, &r.v); err != nil {
			rows.Close()
			t.fail(fmt.Errorf("reading %s: %w", c.b.name, err))
			return c.end()
		}
		if r.v == nil {
			r.v = []byte{}
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		t.fail(fmt.Errorf("reading %s: %w", c.b.name, err))
		return c.end()
	}
	c.page, c.fwd, c.gen = page, fwd, t.gen
	return c.step()
}

// step moves to the next read-ahead row.
func (c *cursor) step() ([]byte, []byte) {
	if len(c.page) == 0 {
		return c.end()
	}
	r := c.page[0]
	c.page = c.page[1:]
	c.key = r.k
	return r.k, r.v
}

func (c *cursor) end() ([]byte, []byte) {
	c.key, c.page = nil, nil
	return nil, nil
}

func (c *cursor) First() ([]byte, []byte) { return c.load(nil, true, true) }
func (c *cursor) Last() ([]byte, []byte)  { return c.load(nil, false, true) }

func (c *cursor) Seek(seek []byte) ([]byte, []byte) {
	if len(seek) == 0 {
		return c.First()
	}
	return c.load(seek, true, true)
}

func (c *cursor) move(fwd bool) ([]byte, []byte) {
	if c.key == nil {
		return nil, nil
	}
	if c.fwd == fwd && c.gen == c.b.t.gen && len(c.page) > 0 {
		return c.step()
	}
	return c.load(c.key, fwd, false)
}

func (c *cursor) Next() ([]byte, []byte) { return c.move(true) }
func (c *cursor) Prev() ([]byte, []byte) { return c.move(false) }
