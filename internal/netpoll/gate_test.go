package netpoll

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testGate refuses one source address and records every pass it gives.
type testGate struct {
	refuse netip.Addr

	mu     sync.Mutex
	passes []*testPass
	sheds  int
}

func (g *testGate) Admit(remote netip.AddrPort) (Pass, bool) {
	if remote.Addr() == g.refuse {
		return nil, false
	}
	p := &testPass{remote: remote}
	g.mu.Lock()
	g.passes = append(g.passes, p)
	g.mu.Unlock()
	return p, true
}

func (g *testGate) Shed() bool {
	g.mu.Lock()
	g.sheds++
	g.mu.Unlock()
	return false
}

func (g *testGate) list() []*testPass {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*testPass(nil), g.passes...)
}

type testPass struct {
	remote netip.AddrPort

	mu       sync.Mutex
	closer   io.Closer
	evicted  bool // Bind reports false
	authed   int
	released int
}

func (p *testPass) Bind(c io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closer = c
	return !p.evicted
}

func (p *testPass) Authenticated() {
	p.mu.Lock()
	p.authed++
	p.mu.Unlock()
}

func (p *testPass) Release() {
	p.mu.Lock()
	p.released++
	p.mu.Unlock()
}

func (p *testPass) state() (closer io.Closer, authed, released int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closer, p.authed, p.released
}

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

// TestGateRefuses: a refused connection is closed at once and the Handler
// never hears of it; others are served as usual.
func TestGateRefuses(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		g := &testGate{refuse: netip.MustParseAddr("127.0.0.2")}
		r := newRecorder()
		r.onData = echo
		_, addr := start(r, Options{Gate: g})

		// The reset can come before the dial returns, or after.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		if refused, err := d.Dial("tcp", addr); err == nil {
			defer refused.Close()
			refused.Write([]byte("CONNECT"))
			refused.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := refused.Read(make([]byte, 16)); err == nil || isTimeout(err) {
				t.Fatalf("the refused connection read %d bytes, %v; want it closed", n, err)
			}
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dialing from the refused address: %v; want success or a reset", err)
		}
		ok := dialFrom(t, "127.0.0.1", addr)
		ok.Write([]byte("ping"))
		ok.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(ok, make([]byte, 4)); err != nil {
			t.Fatalf("an admitted connection: %v", err)
		}
		r.waitCounts(t, 1, 0)
		if n := len(g.list()); n != 1 {
			t.Fatalf("%d passes given, want 1", n)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestGatePass: the pass is bound to the connection, hears Authenticated,
// closes the connection with ErrEvicted through what it was bound to, and
// is released once, after the close.
func TestGatePass(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		g := &testGate{}
		r := newRecorder()
		r.onData = func(c Conn, b []byte) { c.Authenticated() }
		_, addr := start(r, Options{Gate: g})

		c := dialFrom(t, "127.0.0.3", addr)
		c.Write([]byte("x"))
		var p *testPass
		waitFor(t, 10*time.Second, func() error {
			ps := g.list()
			if len(ps) != 1 {
				return fmt.Errorf("%d passes", len(ps))
			}
			p = ps[0]
			if _, authed, _ := p.state(); authed != 1 {
				return fmt.Errorf("Authenticated reached the pass %d times, want 1", authed)
			}
			return nil
		})
		if p.remote.Addr() != netip.MustParseAddr("127.0.0.3") {
			t.Errorf("the gate saw %v, want 127.0.0.3", p.remote)
		}
		closer, _, released := p.state()
		if closer == nil || released != 0 {
			t.Fatalf("bound %v, released %d before the close", closer, released)
		}
		closer.Close()
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; !errors.Is(got, ErrEvicted) {
			t.Errorf("OnClose after an eviction: %v, want ErrEvicted", got)
		}
		waitFor(t, 10*time.Second, func() error {
			if _, _, released := p.state(); released != 1 {
				return fmt.Errorf("released %d times, want 1", released)
			}
			return nil
		})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("the evicted connection is still open: %v", err)
		}
	})
}

// TestGateEvictedBeforeOpen: a pass evicted before the engine bound it
// closes the connection with ErrEvicted right after OnOpen.
func TestGateEvictedBeforeOpen(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		g := &evictingGate{}
		r := newRecorder()
		_, addr := start(r, Options{Gate: g})
		dialFrom(t, "127.0.0.4", addr)
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; !errors.Is(got, ErrEvicted) {
			t.Errorf("OnClose: %v, want ErrEvicted", got)
		}
	})
}

// evictingGate gives passes that were evicted before they were bound.
type evictingGate struct{ testGate }

func (g *evictingGate) Admit(remote netip.AddrPort) (Pass, bool) {
	return &testPass{remote: remote, evicted: true}, true
}

// TestServeConnWithPass: a connection admitted elsewhere (a WebSocket
// through the HTTP listener) carries its pass through ServeConnWith.
func TestServeConnWithPass(t *testing.T) {
	r := newRecorder()
	r.onData = func(c Conn, b []byte) { c.Authenticated() }
	e, err := New(r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	a, b := net.Pipe()
	defer b.Close()
	p := &testPass{}
	done := make(chan error, 1)
	go func() { done <- e.ServeConnWith(a, p) }()
	b.Write([]byte("x"))
	waitFor(t, 10*time.Second, func() error {
		if _, authed, _ := p.state(); authed != 1 {
			return errors.New("Authenticated did not reach the pass")
		}
		return nil
	})
	b.Close()
	<-done
	if _, _, released := p.state(); released != 1 {
		t.Fatalf("released %d times after the close, want 1", released)
	}
}
