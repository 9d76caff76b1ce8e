// Command storeserver serves the embedded FHIR store alone, without Caddy,
// for client tests such as test/fhirkit:
//
//	go run ./store/internal/storeserver -db /tmp/pfr.db -addr 127.0.0.1:8089
//
// It creates the partitions named by -partitions (e.g. "1,2") so that
// clients can start writing right away.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pfrgateway/caddy-pfr/store"
)

func main() {
	dbPath := flag.String("db", "pfr-store.db", "bbolt file")
	addr := flag.String("addr", "127.0.0.1:8089", "listen address")
	base := flag.String("base", "/fhir", "FHIR base path")
	partitions := flag.String("partitions", "", "comma-separated partition ids to create at start")
	flag.Parse()
	if err := run(*dbPath, *addr, *base, *partitions); err != nil {
		log.Fatal(err)
	}
}

func run(dbPath, addr, base, partitions string) error {
	db, err := store.Open(dbPath, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	h, err := store.NewHandler(db, store.Config{BasePath: base})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Print(err)
		}
	}()
	url := "http://" + ln.Addr().String() + base
	for _, p := range strings.Split(partitions, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := createPartition(url, p); err != nil {
			return err
		}
	}
	fmt.Printf("serving %s\n", url)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// createPartition creates partition id (named "p<id>") unless it exists.
func createPartition(base, id string) error {
	n, err := strconv.Atoi(id)
	if err != nil {
		return fmt.Errorf("partition %q: %w", id, err)
	}
	body := fmt.Sprintf(`{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":"p%d"}]}`, n, n)
	req, err := http.NewRequest(http.MethodPost, base+"/$partition-management-create-partition", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("X-Request-Partition-IDs", "DEFAULT")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("create partition %d: %w", n, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
		return fmt.Errorf("create partition %d: status %d", n, resp.StatusCode)
	}
	return nil
}
