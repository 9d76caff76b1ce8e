package testkit

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// A held port is never handed out by the kernel again, a server without
// SO_REUSEPORT cannot take it, and Caddy's own listener (SO_REUSEPORT) can:
// every connection then reaches Caddy's listener, none the reservation.
func TestReservedPort(t *testing.T) {
	p, err := ReservePort()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()

	// Another process asking the kernel for any port never gets it.
	var held []net.Listener
	for range 500 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		if l.Addr().(*net.TCPAddr).Port == p.Number {
			t.Fatalf("the kernel handed out reserved port %d", p.Number)
		}
	}
	for _, l := range held {
		l.Close()
	}

	// A server without SO_REUSEPORT cannot bind it.
	if l, err := net.Listen("tcp", p.Addr()); err == nil {
		l.Close()
		t.Fatalf("a plain listener bound reserved port %d", p.Number)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("plain listener: %v, want EADDRINUSE", err)
	}

	// Caddy's listener can, and takes every connection.
	addr, err := caddy.ParseNetworkAddress("tcp/" + p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := addr.Listen(context.Background(), 0, net.ListenConfig{})
	if err != nil {
		t.Fatalf("Caddy cannot listen on the reserved port: %v", err)
	}
	l := ln.(net.Listener)
	defer l.Close()
	accepted := make(chan struct{}, 20)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	for i := range 20 {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Number)))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
		<-accepted
	}

	// So can the test's own server.
	own, err := p.Listen()
	if err != nil {
		t.Fatalf("Port.Listen: %v", err)
	}
	own.Close()

	// Released, the port is free for anyone.
	l.Close()
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l2, err := net.Listen("tcp", p.Addr())
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Close()
}

func TestReservePortsDistinct(t *testing.T) {
	ports, err := ReservePorts(10)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p.Number] {
			t.Fatalf("port %d reserved twice", p.Number)
		}
		seen[p.Number] = true
		p.Release()
	}
}
