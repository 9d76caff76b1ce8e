package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// Every backward step of a bbolt cursor in the store goes through
// cursorPrev (and cursorBefore).
//
// bbolt (1.5) merges and splits B-tree nodes only when a write
// transaction commits: a leaf whose keys a delete removed stays in the
// tree, empty, until then. Cursor.Next steps over such a leaf;
// Cursor.Prev stops at it and returns nil as if the bucket began there,
// and so does Seek followed by Prev (a fresh cursor is no different). A
// further Prev moves on to the leaf before, so a nil that is not the
// bucket's start is told by the bucket's first key, and the walk resumed
// from where it was. Read transactions see committed trees, without
// empty leaves; the extra work is only ever done at a nil.

// cursorPrev moves c, which is at the key at, to the key before it and
// returns it (nil: at is the bucket's first).
func cursorPrev(c *bolt.Cursor, at []byte) (k, v []byte) {
	if k, v = c.Prev(); k != nil || at == nil {
		return k, v
	}
	if first, _ := c.First(); first == nil || bytes.Compare(first, at) >= 0 {
		return nil, nil
	}
	// A key before at exists: each Prev that returns nil left an empty
	// leaf behind, and the next moves on to the one before it. The steps
	// are bounded all the same (a leaf holds at least one key when
	// written, so a bucket has fewer leaves than the keys a transaction
	// deleted from it, never near the bound): should bbolt ever stop
	// stepping on, the key is found walking forwards from the first.
	c.Seek(at)
	for range maxEmptyLeaves {
		if k, v = c.Prev(); k != nil {
			return k, v
		}
	}
	var lk, lv []byte
	for k, v = c.First(); k != nil && bytes.Compare(k, at) < 0; k, v = c.Next() {
		lk, lv = k, v
	}
	if lk != nil {
		c.Seek(lk)
	}
	return lk, lv
}

// maxEmptyLeaves bounds cursorPrev's steps over emptied leaves (a
// variable so that a test can take the walk forwards).
var maxEmptyLeaves = 1 << 20

// cursorBefore moves c to the last key < k and returns it (nil: none).
func cursorBefore(c *bolt.Cursor, k []byte) (key, v []byte) {
	at, _ := c.Seek(k)
	if at == nil {
		return c.Last() // which steps over empty leaves at the end itself
	}
	return cursorPrev(c, at)
}
