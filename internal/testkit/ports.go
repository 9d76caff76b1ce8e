package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Port is a loopback TCP port held by this process for as long as it is
// not released: a socket bound to 127.0.0.1 with SO_REUSEPORT that never
// listens. The kernel then never hands the port to anyone else's bind(0),
// so no other process (another copy of the tests, a benchmark) can be given
// it, while Caddy, which binds its listeners with SO_REUSEPORT too, can
// still listen on it (in this process or in a child running as the same
// user). The held socket takes no connections: it does not listen.
//
// Only servers that set SO_REUSEPORT can use a held port; for others (Java,
// Node, PostgreSQL, BIND, Pebble) let them pick port 0 and read it back, or
// use FreePort.
type Port struct {
	Number int
	mu     sync.Mutex
	fd     int // -1 once released
}

// ReservePort holds a loopback port chosen by the kernel.
func ReservePort() (*Port, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserving a loopback port: %w", err)
	}
	// Caddy's own SO_REUSEPORT sockets may share the port with this one.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("reserving a loopback port: SO_REUSEPORT: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("reserving a loopback port: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("reserving a loopback port: %w", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok || in4.Port == 0 {
		_ = syscall.Close(fd)
		return nil, errors.New("reserving a loopback port: the kernel gave no port")
	}
	return &Port{Number: in4.Port, fd: fd}, nil
}

// ReservePorts holds n distinct loopback ports.
func ReservePorts(n int) ([]*Port, error) {
	out := make([]*Port, 0, n)
	for range n {
		p, err := ReservePort()
		if err != nil {
			for _, q := range out {
				_ = q.Release()
			}
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Reserve holds a loopback port until t ends.
func Reserve(t testing.TB) *Port {
	t.Helper()
	p, err := ReservePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Release() })
	return p
}

// Listen listens on the held port with SO_REUSEPORT, as Caddy does: for a
// Go server of the test's own on a port it holds.
func (p *Port) Listen() (net.Listener, error) { return ListenReusePort(p.Addr()) }

// ListenReusePort listens on the TCP address addr with SO_REUSEPORT, as
// Caddy does, so that it can listen on a held port.
func ListenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// Addr is "127.0.0.1:<port>".
func (p *Port) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Number)) }

// Release gives the port back; later calls do nothing.
func (p *Port) Release() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := syscall.Close(p.fd)
	p.fd = -1
	return err
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server that binds without SO_REUSEPORT and cannot be told to pick port 0
// itself. Should another process take the port in between, that server
// fails to start, loudly: it cannot share a port with anyone, so it never
// answers in place of another process's server.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as "127.0.0.1:<port>".
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// FreeUDPAndTCPPort returns a loopback port that was free for both UDP and
// TCP a moment ago (a DNS server serves both).
func FreeUDPAndTCPPort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free loopback port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no loopback port free for both UDP and TCP")
}
