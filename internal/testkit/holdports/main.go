// Command holdports runs a command with loopback ports held for it: it
// reserves n ports (testkit.Port: bound with SO_REUSEPORT, never
// listening), passes their numbers in PFR_PORTS (space-separated), runs the
// command and exits with its status. While the command runs the kernel
// gives these ports to no one else, so a Caddy the command starts (Caddy
// binds with SO_REUSEPORT) listens on ports no other process has, and
// whatever answers there is that Caddy. For the scripts under scripts/it:
//
//	go run ./internal/testkit/holdports -n 2 -- bash scripts/it/quickstart.sh
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func main() {
	n := flag.Int("n", 1, "how many ports to hold")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: holdports [-n N] -- command [args...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ports, err := testkit.ReservePorts(*n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "holdports:", err)
		os.Exit(1)
	}
	numbers := make([]string, len(ports))
	for i, p := range ports {
		numbers[i] = strconv.Itoa(p.Number)
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "PFR_PORTS="+strings.Join(numbers, " "))
	// Ctrl-C reaches the command through the terminal's process group;
	// this process waits for it to finish instead of dying first.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	err = cmd.Run()
	for _, p := range ports {
		_ = p.Release()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		os.Exit(exit.ExitCode())
	default:
		fmt.Fprintln(os.Stderr, "holdports:", err)
		os.Exit(1)
	}
}
