package backend

import "io"

// streamRewriter rewrites a byte stream through a replacer as it is
// written, carrying at most rp.maxLen bytes (an undecided URL prefix)
// between writes. Bytes of a write that cannot start a base are passed to
// out directly from the caller's slice, never copied.
type streamRewriter struct {
	rp  *replacer
	out io.Writer
	// carry holds the undecided bytes from earlier writes, scratch the
	// carry joined with the head of the next write; both are allocated
	// only when a write ends undecided (a body written whole never is).
	carry    []byte
	scratch  []byte
	replaced int // replacements made so far
}

func newStreamRewriter(rp *replacer, out io.Writer) *streamRewriter {
	return &streamRewriter{rp: rp, out: out}
}

// Write rewrites p. It always accepts all of p unless out fails.
func (s *streamRewriter) Write(p []byte) (int, error) {
	total := len(p)
	if len(s.carry) > 0 {
		// Decide the candidates in the carry with just enough of p.
		head := min(len(p), s.rp.maxLen+1)
		joined := append(append(s.scratch[:0], s.carry...), p[:head]...)
		s.scratch = joined[:0] // kept for the next write (out keeps nothing of it)
		if head == len(p) {
			// p adds too little to decide everything: rewrite what can be,
			// carry the rest.
			n, r, err := s.rp.rewrite(joined, len(joined), false, s.out)
			s.replaced += r
			s.carry = append(s.carry[:0], joined[n:]...)
			return total, err
		}
		n, r, err := s.rp.rewrite(joined, len(s.carry), false, s.out)
		s.replaced += r
		if err != nil {
			return 0, err
		}
		p = p[n-len(s.carry):]
		s.carry = s.carry[:0]
	}
	n, r, err := s.rp.rewrite(p, len(p), false, s.out)
	s.replaced += r
	if err != nil {
		return 0, err
	}
	s.carry = append(s.carry[:0], p[n:]...)
	return total, nil
}

// Close rewrites and writes the carry, the stream having ended.
func (s *streamRewriter) Close() error {
	if len(s.carry) == 0 {
		return nil
	}
	_, r, err := s.rp.rewrite(s.carry, len(s.carry), true, s.out)
	s.replaced += r
	s.carry = s.carry[:0]
	return err
}
