package pfrproc

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// fakeEnv makes the test binary act as a fake pfr: started by Start, it
// prints its arguments and HOME, then does what the variable says.
const fakeEnv = "PFRPROC_FAKE_PFR"

// TestMain runs the fake pfr when asked to, and the tests otherwise.
func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakePFR(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakePFR is a stand-in for `pfr run --config F --adapter caddyfile`. In
// mode "exit" it exits with status 3 at once. In mode "serve" it answers
// 401 on the address written in F until it is interrupted, then exits 0.
func fakePFR(mode string, args []string) int {
	fmt.Printf("args: %s\nHOME=%s\n", strings.Join(args, " "), os.Getenv("HOME"))
	if mode == "exit" || len(args) != 5 {
		return 3
	}
	addr, err := os.ReadFile(args[2])
	if err != nil {
		fmt.Println(err)
		return 1
	}
	// As Caddy does (SO_REUSEPORT), so it can listen on a held port.
	l, err := testkit.ListenReusePort(strings.TrimSpace(string(addr)))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	interrupt := make(chan os.Signal, 1)
	signal.Notify(interrupt, os.Interrupt)
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Printf("request %s %s\n", r.Host, r.URL.Path)
			w.WriteHeader(http.StatusUnauthorized)
		}))
	}()
	<-interrupt
	fmt.Println("interrupted")
	return 0
}
