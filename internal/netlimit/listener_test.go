package netlimit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// served accepts from a wrapped listener and keeps what it accepted.
type served struct {
	mu    sync.Mutex
	conns []net.Conn
}

func serve(t *testing.T, l *Limiter, refusal string) (*served, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var answer func(error) []byte
	if refusal != "" {
		answer = func(error) []byte { return []byte(refusal) }
	}
	ln := l.Listener(inner, answer)
	s := &served{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s, inner.Addr().String()
}

func (s *served) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *served) get(i int) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[i]
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads what c gets until the server closes it.
func readAll(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestListenerRefusesOverTheAddressCap(t *testing.T) {
	l := New(Options{PerAddr: 2, Log: quiet()})
	refusal := "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
	s, addr := serve(t, l, refusal)

	dialFrom(t, "127.0.0.2", addr)
	dialFrom(t, "127.0.0.2", addr)
	waitFor(t, 5*time.Second, func() error {
		if n := s.count(); n != 2 {
			return fmt.Errorf("%d connections accepted, want 2", n)
		}
		return nil
	})
	over := dialFrom(t, "127.0.0.2", addr)
	got, err := readAll(t, over)
	if err != nil || got != refusal {
		t.Fatalf("the connection over the cap read %q, %v; want the refusal and EOF", got, err)
	}
	// Another address is served meanwhile.
	dialFrom(t, "127.0.0.3", addr)
	waitFor(t, 5*time.Second, func() error {
		if n := s.count(); n != 3 {
			return fmt.Errorf("%d connections accepted, want 3 (the refused one never reaches Accept)", n)
		}
		return nil
	})
	// Closing an accepted connection gives its slot back.
	s.get(0).Close()
	if got := l.Conns(netip.MustParseAddr("127.0.0.2")); got != 1 {
		t.Fatalf("Conns = %d after a close, want 1", got)
	}
	dialFrom(t, "127.0.0.2", addr)
	waitFor(t, 5*time.Second, func() error {
		if n := s.count(); n != 4 {
			return fmt.Errorf("%d connections accepted, want 4", n)
		}
		return nil
	})
}

// TestListenerRefusesARequestAlreadySent: a client that wrote its request
// before the refusal still reads the refusal, not a reset (the request is
// read away before the close).
func TestListenerRefusesARequestAlreadySent(t *testing.T) {
	l := New(Options{PerAddr: 1, Log: quiet()})
	refusal := "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
	s, addr := serve(t, l, refusal)
	dialFrom(t, "127.0.0.4", addr)
	waitFor(t, 5*time.Second, func() error {
		if s.count() != 1 {
			return errors.New("first connection not accepted")
		}
		return nil
	})
	// The server is blocked in Accept, so the request is in the socket
	// when it accepts; it must be read away so that the close is a FIN.
	over := dialFrom(t, "127.0.0.4", addr)
	if _, err := over.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, over); got != refusal {
		t.Fatalf("read %q, %v; want the refusal", got, err)
	}
}

func TestListenerClosesTheOldestUnauthenticated(t *testing.T) {
	l := New(Options{MaxUnauth: 2, Log: quiet()})
	s, addr := serve(t, l, "")
	first := dialFrom(t, "127.0.0.5", addr)
	dialFrom(t, "127.0.0.6", addr)
	waitFor(t, 5*time.Second, func() error {
		if s.count() != 2 {
			return errors.New("connections not accepted")
		}
		return nil
	})
	TicketOf(s.get(1)).Authenticated()
	dialFrom(t, "127.0.0.7", addr)
	dialFrom(t, "127.0.0.8", addr) // third unauthenticated: the oldest goes
	if got, err := readAll(t, first); got != "" || err != nil {
		t.Fatalf("the oldest unauthenticated connection read %q, %v; want EOF", got, err)
	}
	waitFor(t, 5*time.Second, func() error {
		if n := l.Unauthenticated(); n != 2 {
			return fmt.Errorf("%d unauthenticated, want 2", n)
		}
		return nil
	})
}

// TestTicketOfLooksThroughTLS: net/http's ConnContext gets the *tls.Conn
// when the listener is wrapped in TLS; the ticket is found under it.
func TestTicketOfLooksThroughTLS(t *testing.T) {
	l := New(Options{MaxUnauth: 2, Log: quiet()})
	s, addr := serve(t, l, "")
	dialFrom(t, "127.0.0.9", addr)
	waitFor(t, 5*time.Second, func() error {
		if s.count() != 1 {
			return errors.New("not accepted")
		}
		return nil
	})
	c := s.get(0)
	if TicketOf(c) == nil {
		t.Fatal("no ticket on the accepted connection")
	}
	if TicketOf(tls.Server(c, &tls.Config{})) != TicketOf(c) {
		t.Fatal("TicketOf does not look through a *tls.Conn")
	}
	if TicketOf(nil) != nil {
		t.Fatal("TicketOf(nil) is not nil")
	}
}

// BenchmarkListenerRefuse is one refusal over the address cap through a
// real loopback listener, client side included: dial, the canned answer
// read to its end. The limiter's own part is BenchmarkRefuse.
func BenchmarkListenerRefuse(b *testing.B) {
	l := New(Options{PerAddr: 1, Log: quiet()})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	refusal := []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	ln := l.Listener(inner, func(error) []byte { return refusal })
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr := inner.Addr().String()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	held, err := d.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer held.Close()
	for l.Conns(netip.MustParseAddr("127.0.0.2")) != 1 {
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 256)
	for b.Loop() {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(c, buf[:len(refusal)])
		c.Close()
		if n != len(refusal) {
			b.Fatalf("read %d bytes of the refusal", n)
		}
	}
}
