package pfrproc

import (
	"fmt"
	"net"
)

// FreePorts reserves n distinct loopback ports chosen by the kernel and
// releases them before returning. Another process could take one before
// pfr binds it: pfr then fails to start loudly, and never is the wrong
// server measured.
func FreePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserving a loopback port: %w", err)
		}
		held = append(held, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
