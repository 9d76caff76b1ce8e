package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// crashChildEnv makes the test binary serve a store instead of testing.
const crashChildEnv = "PFR_STORE_CRASH_CHILD_DB"

// TestMain lets the crash test re-execute this binary as a store server.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		serveCrashChild(path)
		return
	}
	os.Exit(m.Run())
}

// serveCrashChild serves the store at path on 127.0.0.1, prints the
// address, and exits on its own after a minute if nobody kills it.
func serveCrashChild(path string) {
	db, err := Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	h, err := NewHandler(db, Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		time.Sleep(time.Minute)
		os.Exit(3)
	}()
	_ = http.Serve(ln, h)
}

// crashTx is one transaction the parent sent: the ids it writes.
type crashTx struct {
	ids   []string
	acked bool
}

func TestCrashKeepsEveryAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		t.Fatalf("child did not start: %q %v", line, err)
	}
	base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "LISTEN ")) + "/fhir"
	client := &http.Client{Timeout: 10 * time.Second}

	// Four writers send transactions of three client-id Patients each until
	// the child dies; the parent kills it once enough have been answered.
	const writers, perTx, killAfter, maxPerWriter = 4, 3, 40, 200
	var (
		mu    sync.Mutex
		txs   []*crashTx
		acked int
	)
	ackedEnough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < maxPerWriter; i++ {
				tx := &crashTx{}
				var entries []map[string]any
				for k := 0; k < perTx; k++ {
					id := fmt.Sprintf("w%d-t%d-p%d", w, i, k)
					tx.ids = append(tx.ids, id)
					entries = append(entries, putEntry(map[string]any{"resourceType": "Patient", "id": id,
						"name": []any{map[string]any{"family": strings.Repeat("x", 2000)}}}))
				}
				mu.Lock()
				txs = append(txs, tx)
				mu.Unlock()
				raw, _ := json.Marshal(txBundle("transaction", entries...))
				req, _ := http.NewRequest("POST", base, bytes.NewReader(raw))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("X-Request-Partition-IDs", "DEFAULT")
				resp, err := client.Do(req)
				if err != nil {
					return // the child is gone
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					mu.Lock()
					tx.acked = true
					acked++
					if acked >= killAfter {
						once.Do(func() { close(ackedEnough) })
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	select {
	case <-ackedEnough:
	case <-testkit.WaitContext(t).Done():
		t.Fatal("the child answered too few transactions")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	_ = cmd.Wait()
	wg.Wait()

	db, err := Open(path, nil)
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer db.Close()
	stored := map[string]bool{}
	err = db.view(defaultPartitionKey, func(p *ptx) error {
		return p.scanCurrent("Patient", func(id string, _ []byte) error {
			stored[id] = true
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]bool{}
	var ackedTx, partialUnacked, wholeUnacked int
	for _, tx := range txs {
		n := 0
		for _, id := range tx.ids {
			sent[id] = true
			if stored[id] {
				n++
			}
		}
		switch {
		case tx.acked && n != len(tx.ids):
			t.Errorf("acknowledged transaction %v lost writes: %d of %d stored", tx.ids, n, len(tx.ids))
		case n != 0 && n != len(tx.ids):
			partialUnacked++
			t.Errorf("half a transaction is stored: %d of %v", n, tx.ids)
		case tx.acked:
			ackedTx++
		case n == len(tx.ids):
			wholeUnacked++ // committed, killed before the answer: allowed
		}
	}
	for id := range stored {
		if !sent[id] {
			t.Errorf("stored %s that nobody sent", id)
		}
	}
	if ackedTx < killAfter {
		t.Fatalf("only %d acknowledged transactions checked", ackedTx)
	}
	t.Logf("%d acknowledged transactions all present, %d committed without an answer, %d partial", ackedTx, wholeUnacked, partialUnacked)
}
