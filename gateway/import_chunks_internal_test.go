package gateway

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestImportChunksOrder checks importChunks on random reference graphs
// (cycles, self-references, references to entries not to write, a cycle
// larger than a chunk): every entry to write comes exactly once; an entry
// is never in a chunk before one it references; entries that reach each
// other share a chunk; a chunk holds more than size entries only when one
// cycle alone is that large.
func TestImportChunksOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 4))
	for round := range 200 {
		n := 1 + r.IntN(60)
		size := 1 + r.IntN(8)
		edges := make([][]int, n)
		for i := range n {
			for range r.IntN(4) {
				edges[i] = append(edges[i], r.IntN(n+2)-1) // -1 and n: not entries
			}
		}
		if round%10 == 0 && n > 12 { // a cycle of 12
			for i := range 12 {
				edges[i] = append(edges[i], (i+1)%12)
			}
		}
		var todo []int
		for i := range n {
			if r.IntN(5) > 0 {
				todo = append(todo, i)
			}
		}
		inTodo := map[int]bool{}
		for _, i := range todo {
			inTodo[i] = true
		}
		chunks := importChunks(n, todo, func(i int) []int { return edges[i] }, size)
		at := map[int]int{}
		for k, c := range chunks {
			for _, i := range c {
				if _, dup := at[i]; dup || !inTodo[i] {
					t.Fatalf("round %d: entry %d twice or not to write", round, i)
				}
				at[i] = k
			}
		}
		if len(at) != len(todo) {
			t.Fatalf("round %d: %d of %d entries in the chunks", round, len(at), len(todo))
		}
		// reach[i][j]: j reachable from i through entries to write.
		reach := func(from int) map[int]bool {
			seen := map[int]bool{from: true}
			stack := []int{from}
			for len(stack) > 0 {
				v := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				for _, w := range edges[v] {
					if inTodo[w] && !seen[w] {
						seen[w] = true
						stack = append(stack, w)
					}
				}
			}
			return seen
		}
		reaches := map[int]map[int]bool{}
		for _, i := range todo {
			reaches[i] = reach(i)
		}
		for _, i := range todo {
			for _, j := range edges[i] {
				if inTodo[j] && at[j] > at[i] {
					t.Fatalf("round %d: %d (chunk %d) references %d, written later (chunk %d)", round, i, at[i], j, at[j])
				}
			}
			for j := range reaches[i] {
				if reaches[j][i] && at[i] != at[j] {
					t.Fatalf("round %d: %d and %d reference each other but are in chunks %d and %d", round, i, j, at[i], at[j])
				}
			}
		}
		for k, c := range chunks {
			if len(c) <= size {
				continue
			}
			// Only a single component this large may exceed size.
			first := c[0]
			if !slices.ContainsFunc(c, func(i int) bool { return !(reaches[first][i] && reaches[i][first]) }) {
				continue
			}
			t.Fatalf("round %d: chunk %d holds %d entries, size %d, not one cycle", round, k, len(c), size)
		}
	}
}
