package dopu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const crashEnv = "DOPU_CRASH_CHILD_DB"

// TestCrashChildProcess is the child of TestCrashDuringIntake: it drops
// off Bundles as fast as it can and prints "id sha256" after each Intake
// returns, until it is killed.
func TestCrashChildProcess(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("only run as the child of TestCrashDuringIntake")
	}
	unlimited := Rate{PerMinute: -1}
	svc, _ := openCrashDB(t, path, Limits{SourceRate: unlimited, RecordRate: unlimited, PendingPerRecord: 1 << 30, PendingBytesPerRecord: 1 << 40})
	out := bufio.NewWriter(os.Stdout)
	for i := range 5000 {
		body := crashBundle(t, os.Getpid(), i)
		r, err := svc.Intake(context.Background(), fmt.Sprintf("rec%d", i%3), fhir.ContentType, "", bytes.NewReader(body), Sender{IP: "192.0.2.1"})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		fmt.Fprintf(out, "ACK %s %s\n", r.ID, hex.EncodeToString(sum[:]))
		out.Flush()
	}
}

// crashBundle returns a distinct Bundle of 1 KB to about 100 KB, and
// every third one of up to about 1.3 MB: small bodies are kept in bbolt,
// those of FileBodyMin bytes or more in files beside it.
func crashBundle(t testing.TB, pid, i int) []byte {
	repeat := 1 + (i*7919)%100000/10
	if i%3 == 0 {
		repeat *= 14
	}
	text := strings.Repeat(fmt.Sprintf("%d-%d ", pid, i), repeat)
	return bundleJSON(t, "collection", patient("Crash", fmt.Sprint(i), "2000-01-01", "other"),
		map[string]any{"resourceType": "Basic", "text": map[string]any{"status": "generated", "div": text}})
}

func TestCrashDuringIntake(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	// A bbolt file, or a PostgreSQL database in the PostgreSQL run.
	path := filepath.Join(t.TempDir(), "pfr.db")
	if pgtest.OnPostgres() {
		path = pgtest.DSN(t)
	}
	acked := map[string]string{} // id → sha256 of the body
	for round, killAfter := range []int{3, 11, 25} {
		ctx, cancel := context.WithCancel(testkit.WaitContext(t))
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChildProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		n := 0
		for n < killAfter && lines.Scan() {
			if id, sum, ok := parseAck(lines.Text()); ok {
				acked[id] = sum
				n++
			}
		}
		// Kill mid-stream: the child is inside another Intake by now.
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Acknowledgements already written before the kill count too.
		for lines.Scan() {
			if id, sum, ok := parseAck(lines.Text()); ok {
				acked[id] = sum
			}
		}
		cmd.Wait()
		cancel()
		if n < killAfter {
			t.Fatalf("round %d: the child stopped after %d drop-offs: %s", round, n, stderr.String())
		}
		checkCrashDB(t, path, acked, round+1)
	}
}

// openCrashDB opens a Service on the bbolt file or PostgreSQL database at
// path (a DSN); close it with closeCrashDB (the child needs the bbolt file).
func openCrashDB(t *testing.T, path string, limits Limits) (*Service, kv.DB) {
	t.Helper()
	if strings.HasPrefix(path, "postgres://") {
		db, err := pgstate.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		store, err := NewStore(db)
		if err != nil {
			t.Fatal(err)
		}
		return NewWithStore(store, limits, Options{}), db
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(db, limits, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, boltCloser{kv.Bolt(db), db}
}

type boltCloser struct {
	kv.DB
	db *bbolt.DB
}

func (b boltCloser) Close() { b.db.Close() }

func closeCrashDB(db kv.DB) { db.(interface{ Close() }).Close() }

func parseAck(line string) (id, sum string, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ACK" {
		return "", "", false
	}
	return f[1], f[2], true
}

// checkCrashDB asserts that every acknowledged drop-off is complete and
// that every stored drop-off is whole: body, indexes, usage and alert.
// Each kill may leave one drop-off committed but not yet acknowledged.
func checkCrashDB(t *testing.T, path string, acked map[string]string, kills int) {
	t.Helper()
	svc, db := openCrashDB(t, path, Limits{})
	defer closeCrashDB(db)
	for id, want := range acked {
		var body []byte
		err := svc.store.View(context.Background(), func(tx Tx) error {
			var err error
			body, err = tx.Body(id)
			return err
		})
		if err != nil {
			t.Fatalf("acknowledged drop-off %s: %v", id, err)
		}
		got := sha256.Sum256(body)
		if hex.EncodeToString(got[:]) != want {
			t.Fatalf("acknowledged drop-off %s: body differs", id)
		}
	}
	stored := 0
	usage := map[string]int{}
	err := svc.store.View(context.Background(), func(tx Tx) error {
		for _, record := range []string{"rec0", "rec1", "rec2"} {
			list, err := tx.List(record)
			if err != nil {
				return err
			}
			for _, d := range list {
				stored++
				usage[record]++
				body, err := tx.Body(d.ID)
				if err != nil || int64(len(body)) != d.Size || digest(record, body) != d.Digest {
					return fmt.Errorf("drop-off %s half stored: %v", d.ID, err)
				}
				if byDigest, err := tx.ByDigest(d.Digest); err != nil || byDigest.ID != d.ID {
					return fmt.Errorf("drop-off %s: digest index %v", d.ID, err)
				}
				if _, err := tx.Alert(d.ID); err != nil {
					return fmt.Errorf("drop-off %s without its alert: %v", d.ID, err)
				}
			}
			count, _, err := tx.Usage(record)
			if err != nil || count != usage[record] {
				return fmt.Errorf("%s: usage %d, %d drop-offs (%v)", record, count, usage[record], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	counts := keyCount(t, db)
	for _, b := range []string{"dopu/dropoffs", "dopu/bodies", "dopu/digests", "dopu/by-record", "dopu/expiry", "dopu/outbox", "dopu/alerts-due"} {
		if counts[b] != stored {
			t.Errorf("bucket %s holds %d keys for %d drop-offs", b, counts[b], stored)
		}
	}
	if stored < len(acked) || stored > len(acked)+kills {
		t.Errorf("%d drop-offs stored for %d acknowledged", stored, len(acked))
	}
	// Opening the store removed what a kill left of a body file that
	// was staged but never referenced.
	files, refs := 0, 0
	if !strings.HasPrefix(path, "postgres://") {
		entries, err := os.ReadDir(path + ".dropoffs")
		if err != nil {
			t.Fatal(err)
		}
		files = len(entries)
		err = db.View(context.Background(), "test", func(tx kv.Tx) error {
			return tx.Bucket(bucketBodies).ForEach(func(_, v []byte) error {
				if _, ok := parseFileRef(v); ok {
					refs++
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if files != refs {
			t.Errorf("%d body files for %d references", files, refs)
		}
	}
	t.Logf("%d acknowledged, %d stored, %d bodies in files", len(acked), stored, refs)
}
