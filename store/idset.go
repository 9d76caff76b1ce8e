package store

import (
	"hash/maphash"
	"math/bits"
)

// idSet numbers a set of ids (0, 1, … in the order they were added) for
// the membership tests of a search's hot loops: a date sort walks every
// key of the date's index (101 000 on a large record) and asks of each
// whether its id is a match. A Go map of strings reads the key's string
// on most probes; here a probe reads one 8-byte slot (a fingerprint of
// the id's hash and the id's number), and the id itself only when the
// fingerprints agree, so a miss costs about one memory access. Answers
// are exact: a fingerprint only decides which ids are compared.
type idSet struct {
	seed  maphash.Seed
	mask  uint64
	slots []idSlot // a power of two, at least twice the ids
	ids   []string
}

// idSlot is one place of the table: n is the id's number plus one (0:
// empty) and h the high half of its hash.
type idSlot struct {
	h uint32
	n int32
}

// newIDSet returns an empty set sized for about n ids.
func newIDSet(n int) *idSet {
	size := 1 << bits.Len(uint(max(2*n, 8)-1))
	return &idSet{seed: maphash.MakeSeed(), mask: uint64(size - 1), slots: make([]idSlot, size), ids: make([]string, 0, n)}
}

// len is the number of ids.
func (s *idSet) len() int { return len(s.ids) }

// lookup returns the number of id and whether it is in the set.
func (s *idSet) lookup(id []byte) (int32, bool) {
	h := maphash.Bytes(s.seed, id)
	fp := uint32(h >> 32)
	for at := h & s.mask; ; at = (at + 1) & s.mask {
		e := s.slots[at]
		if e.n == 0 {
			return 0, false
		}
		if e.h == fp && s.ids[e.n-1] == string(id) {
			return e.n - 1, true
		}
	}
}

// lookupString is lookup of a string.
func (s *idSet) lookupString(id string) (int32, bool) {
	// maphash.String and maphash.Bytes agree on the same bytes.
	h := maphash.String(s.seed, id)
	fp := uint32(h >> 32)
	for at := h & s.mask; ; at = (at + 1) & s.mask {
		e := s.slots[at]
		if e.n == 0 {
			return 0, false
		}
		if e.h == fp && s.ids[e.n-1] == id {
			return e.n - 1, true
		}
	}
}

// add puts id into the set (a copy of it) unless it is there and
// returns its number and whether it was added.
func (s *idSet) add(id []byte) (int32, bool) {
	if n, ok := s.lookup(id); ok {
		return n, false
	}
	return s.insert(string(id)), true
}

// addString is add of a string (kept as it is).
func (s *idSet) addString(id string) (int32, bool) {
	if n, ok := s.lookupString(id); ok {
		return n, false
	}
	return s.insert(id), true
}

// insert adds id, known not to be in the set.
func (s *idSet) insert(id string) int32 {
	if 2*(len(s.ids)+1) > len(s.slots) {
		s.grow()
	}
	s.ids = append(s.ids, id)
	n := int32(len(s.ids))
	s.place(id, n)
	return n - 1
}

// place puts number n (plus one) of id into the first free slot of its
// probe sequence.
func (s *idSet) place(id string, n int32) {
	h := maphash.String(s.seed, id)
	at := h & s.mask
	for s.slots[at].n != 0 {
		at = (at + 1) & s.mask
	}
	s.slots[at] = idSlot{h: uint32(h >> 32), n: n}
}

// grow doubles the table.
func (s *idSet) grow() {
	s.slots = make([]idSlot, 2*len(s.slots))
	s.mask = uint64(len(s.slots) - 1)
	for i, id := range s.ids {
		s.place(id, int32(i+1))
	}
}
