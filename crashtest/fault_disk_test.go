package crashtest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// mountTinyTmpfs mounts a tmpfs of size on dir (the test runs as root, as
// CI does: scripts/test.sh checks that it can) and unmounts it when the
// test ends, after the processes using it are gone. A test that cannot
// mount fails: it never skips.
func mountTinyTmpfs(t *testing.T, dir, size string) {
	testkit.Needs(t, "root and mount (a tmpfs)")
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a %s tmpfs on %s for the full-disk test failed (it needs root and mount, as in CI): %v %s", size, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v %s", dir, err, out)
		}
	})
}

// fillDisk writes a file in dir until the file system is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	// The last pages too.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	return path
}

// TestFaultDiskFull: with the data directory on a full disk, owner writes,
// transactions and drop-offs answer 507 Insufficient Storage with an
// OperationOutcome that says so (and Retry-After), never a 500 and never a
// 201/202 for something not stored; the log names the file; reads go on.
// Once there is room again, every acknowledged write is there (also after a
// SIGKILL), none of the refused ones, and writes work again.
func TestFaultDiskFull(t *testing.T) {
	var data string
	g := newGatewayWith(t, gatewayOptions{prepare: func(dir string) {
		data = filepath.Join(dir, "data")
		mountTinyTmpfs(t, data, "24m")
	}})
	alice := g.token("alice")
	patientID := g.createRecord(alice, "full", faultPatient())
	baseline := idFromLocation(t, g.do("POST", g.recordURL("full", "/Observation"), alice, faultObservation(patientID, "baseline")).
		Expect(t, http.StatusCreated, "a write before the disk fills"))
	filler := fillDisk(t, data)

	type attempt struct {
		kind, marker, receipt string
		stored                bool
	}
	var attempts []attempt
	full := map[string]int{}
	kinds := []string{"create", "transaction", "drop-off"}
	for i := 0; i < 600 && (full["create"] == 0 || full["transaction"] == 0 || full["drop-off"] == 0); i++ {
		kind := kinds[i%3]
		marker := fmt.Sprintf("full-%s-%d", kind, i)
		var res response
		var ok int
		switch kind {
		case "create":
			res, ok = g.do("POST", g.recordURL("full", "/Observation"), alice, faultObservation(patientID, marker)), http.StatusCreated
		case "transaction":
			res, ok = g.do("POST", g.recordURL("full", ""), alice, faultTransaction(patientID, marker+"-a", marker+"-b")), http.StatusOK
		default:
			res, ok = g.do("POST", g.recordURL("full", ""), "", faultDropOff(marker)), http.StatusAccepted
		}
		a := attempt{kind: kind, marker: marker}
		switch res.Status {
		case ok:
			a.stored = true
			a.receipt = res.Header.Get("X-Pfr-Receipt")
		case http.StatusInsufficientStorage:
			if full[kind] == 0 {
				t.Logf("disk full: %s answered %d (Retry-After %s): %s", kind, res.Status, res.Header.Get("Retry-After"), outcomeText(res))
			}
			full[kind]++
			if res.Body["resourceType"] != "OperationOutcome" || !strings.Contains(outcomeText(res), "storage is full") ||
				res.Header.Get("Retry-After") == "" {
				t.Errorf("%s on a full disk: %d %s (Retry-After %q)", kind, res.Status, res.Raw, res.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("%s on a full disk: %d %.500s", kind, res.Status, res.Raw)
		}
		attempts = append(attempts, a)
	}
	for _, k := range kinds {
		if full[k] == 0 {
			t.Fatalf("%s never met the full disk in %d attempts", k, len(attempts))
		}
	}
	t.Logf("on the full disk: %d attempts, refused with 507: %v", len(attempts), full)
	g.do("GET", g.recordURL("full", "/Observation/"+baseline), alice, nil).Expect(t, http.StatusOK, "a read on the full disk")
	g.do("GET", g.apex("/pfr/v1/records/full/dropoffs"), alice, nil).Expect(t, http.StatusOK, "the inbox on the full disk")
	if !g.logHasLine("disk full", data) {
		t.Errorf("no log line says the disk is full and names %s:\n%s", data, g.logTail(20))
	}

	// Room again; then a power cut for good measure.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	g.restart()
	inbox := g.inbox(alice, "full")
	for _, a := range attempts {
		switch a.kind {
		case "drop-off":
			_, listed := inbox[a.receipt]
			if a.stored != listed || (!a.stored && g.dropOffsWith(alice, inbox, a.marker) != 0) {
				t.Errorf("drop-off %s: acknowledged %v, in the inbox %v", a.marker, a.stored, listed)
			}
		case "create":
			if n := g.stored(alice, "full", a.marker); n != map[bool]int{true: 1, false: 0}[a.stored] {
				t.Errorf("create %s: acknowledged %v, stored %d times", a.marker, a.stored, n)
			}
		case "transaction":
			for _, m := range []string{a.marker + "-a", a.marker + "-b"} {
				if n := g.stored(alice, "full", m); n != map[bool]int{true: 1, false: 0}[a.stored] {
					t.Errorf("transaction %s: acknowledged %v, %s stored %d times", a.marker, a.stored, m, n)
				}
			}
		}
	}
	g.do("POST", g.recordURL("full", "/Observation"), alice, faultObservation(patientID, "after")).Expect(t, http.StatusCreated, "a write once there is room")
	g.dropOffReceipt("full", faultDropOff("after"))
}

// dropOffsWith counts the inbox's drop-offs whose Bundle carries marker
// (a drop-off refused on the full disk must not be there under another
// receipt).
func (g *gatewayProcess) dropOffsWith(token string, inbox map[string]map[string]any, marker string) int {
	g.t.Helper()
	n := 0
	for id := range inbox {
		res := g.do("GET", g.apex("/pfr/v1/records/full/dropoffs/"+id), token, nil).Expect(g.t, http.StatusOK, "drop-off "+id)
		if strings.Contains(string(res.Raw), `"value":"`+marker+`"`) {
			n++
		}
	}
	return n
}
