package netpoll

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Every behaviour test runs on each way of driving connections: the epoll
// pollers, ServeConn over a socket it can wait on without a buffer, and
// ServeConn over a conn that hides its socket (as TLS and WebSocket do).
var engines = []struct {
	name string
	wrap func(net.Listener) net.Listener
}{
	{"epoll", func(ln net.Listener) net.Listener { return ln }},
	{"goroutine", func(ln net.Listener) net.Listener { return plainListener{ln} }},
	{"goroutine-opaque", func(ln net.Listener) net.Listener { return opaqueListener{ln} }},
}

// plainListener hides *net.TCPListener, so Serve uses accept + ServeConn.
// It still exposes its socket (SyscallConn), as the server's TLS listener
// does, so the accept loop can tell whether a connection waits.
type plainListener struct{ net.Listener }

func (l plainListener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(*net.TCPListener).SyscallConn()
}

// opaqueListener also hides each conn's socket (no syscall.Conn).
type opaqueListener struct{ net.Listener }

func (l opaqueListener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(*net.TCPListener).SyscallConn()
}

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

type opaqueConn struct{ net.Conn }

func forEachEngine(t *testing.T, f func(t *testing.T, start func(h Handler, o Options) (*Engine, string))) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			f(t, func(h Handler, o Options) (*Engine, string) {
				t.Helper()
				return startEngine(t, h, o, eng.wrap)
			})
		})
	}
}

// startEngine serves h on a fresh loopback listener and shuts the engine
// down when the test ends; it returns the address to dial.
func startEngine(t *testing.T, h Handler, o Options, wrap func(net.Listener) net.Listener) (*Engine, string) {
	t.Helper()
	e, err := New(h, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(wrap(ln)) }()
	t.Cleanup(func() {
		e.Shutdown()
		if err := <-served; !errors.Is(err, ErrEngineClosed) {
			t.Errorf("Serve returned %v, want ErrEngineClosed", err)
		}
	})
	return e, ln.Addr().String()
}

// waitFor polls cond until it returns nil or d passes, then fails with
// cond's last error.
func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a Handler that checks the contract as it goes: OnOpen first,
// callbacks for one conn never overlapping, OnClose once and last.
type recorder struct {
	onOpen func(Conn)
	onData func(Conn, []byte)

	mu        sync.Mutex
	conns     map[Conn]*connRecord
	opens     int
	closes    int
	reasons   []error
	violation error
}

type connRecord struct {
	busy   atomic.Int32
	closed bool
	data   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{conns: make(map[Conn]*connRecord)} }

func (r *recorder) enter(c Conn, what string) *connRecord {
	r.mu.Lock()
	rec := r.conns[c]
	if rec == nil {
		rec = &connRecord{}
		r.conns[c] = rec
		if what != "OnOpen" {
			r.fail(fmt.Errorf("%s before OnOpen", what))
		}
	}
	if rec.closed {
		r.fail(fmt.Errorf("%s after OnClose", what))
	}
	r.mu.Unlock()
	if rec.busy.Add(1) != 1 {
		r.mu.Lock()
		r.fail(fmt.Errorf("%s concurrent with another callback", what))
		r.mu.Unlock()
	}
	return rec
}

// fail records the first violation. Lock must be held.
func (r *recorder) fail(err error) {
	if r.violation == nil {
		r.violation = err
	}
}

func (r *recorder) OnOpen(c Conn) {
	rec := r.enter(c, "OnOpen")
	r.mu.Lock()
	r.opens++
	r.mu.Unlock()
	if r.onOpen != nil {
		r.onOpen(c)
	}
	rec.busy.Add(-1)
}

func (r *recorder) OnData(c Conn, b []byte) {
	rec := r.enter(c, "OnData")
	r.mu.Lock()
	rec.data.Write(b)
	r.mu.Unlock()
	if r.onData != nil {
		r.onData(c, b)
	}
	rec.busy.Add(-1)
}

func (r *recorder) OnClose(c Conn, err error) {
	rec := r.enter(c, "OnClose")
	r.mu.Lock()
	rec.closed = true
	r.closes++
	r.reasons = append(r.reasons, err)
	r.mu.Unlock()
	rec.busy.Add(-1)
}

// counts returns opens and closes, and the first contract violation.
func (r *recorder) counts() (opens, closes int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opens, r.closes, r.violation
}

func (r *recorder) waitCounts(t *testing.T, opens, closes int) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		o, c, err := r.counts()
		if err != nil {
			return err
		}
		if o != opens || c != closes {
			return fmt.Errorf("opens %d closes %d, want %d and %d", o, c, opens, closes)
		}
		return nil
	})
}

func (r *recorder) reasonList() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.reasons...)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echo(c Conn, b []byte) { c.Write(b) }

func TestEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		r.onData = echo
		_, addr := start(r, Options{})
		c := dial(t, addr)
		for i := 0; i < 3; i++ {
			msg := []byte(fmt.Sprintf("hello %d", i))
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo %q, want %q", got, msg)
			}
		}
		c.Close()
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; !errors.Is(got, io.EOF) {
			t.Errorf("OnClose after the peer closed: %v, want io.EOF", got)
		}
	})
}

func TestRemoteAddrAndContext(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		addrs := make(chan string, 1)
		r := newRecorder()
		r.onOpen = func(c Conn) { c.SetContext(c.RemoteAddr().String()) }
		r.onData = func(c Conn, b []byte) { addrs <- c.Context().(string) }
		_, addr := start(r, Options{})
		c := dial(t, addr)
		c.Write([]byte("x"))
		if got, want := <-addrs, c.LocalAddr().String(); got != want {
			t.Errorf("RemoteAddr %s, want %s", got, want)
		}
	})
}

// pattern is a payload whose every byte depends on its offset, so a lost,
// repeated or reordered chunk shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestBigPayloadToSlowReader(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		const size = 8 << 20 // far more than the socket buffers
		payload := pattern(size)
		writeErr := make(chan error, 1)
		r := newRecorder()
		r.onData = func(c Conn, b []byte) {
			// From another goroutine, in chunks, as a fan-out would.
			go func() {
				var err error
				for off := 0; off < size && err == nil; off += 100_000 {
					err = c.Write(payload[off:min(off+100_000, size)])
				}
				writeErr <- err
			}()
		}
		_, addr := start(r, Options{MaxWriteQueue: 16 << 20})
		c := dial(t, addr)
		c.Write([]byte("go"))
		// Nothing read until every Write has returned: the rest must
		// be in the write queue, waiting for EPOLLOUT.
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		for off := 0; off < size; {
			n, err := c.Read(got[off:min(off+4096, size)]) // small reads: a slow reader
			if err != nil {
				t.Fatalf("after %d bytes: %v", off, err)
			}
			off += n
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("payload corrupted")
		}
	})
}

func TestWriteQueueCapClosesSlowReader(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		writeErr := make(chan error, 1)
		r := newRecorder()
		r.onData = func(c Conn, b []byte) {
			go func() {
				chunk := make([]byte, 64<<10)
				for i := 0; i < 1000; i++ { // 64 MiB: more than queue and socket buffers
					if err := c.Write(chunk); err != nil {
						writeErr <- err
						return
					}
				}
				writeErr <- nil
			}()
		}
		_, addr := start(r, Options{MaxWriteQueue: 256 << 10})
		c := dial(t, addr)
		c.Write([]byte("go")) // and never read
		if err := <-writeErr; !errors.Is(err, ErrWriteQueueFull) && !errors.Is(err, ErrClosed) {
			t.Fatalf("Write to a reader that never reads: %v, want ErrWriteQueueFull", err)
		}
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; !errors.Is(got, ErrWriteQueueFull) {
			t.Errorf("OnClose reason %v, want ErrWriteQueueFull", got)
		}
	})
}

func TestConcurrentWritesStayContiguous(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		const writers, each = 16, 200
		r := newRecorder()
		r.onData = func(c Conn, b []byte) {
			for w := 0; w < writers; w++ {
				go func() {
					for seq := 0; seq < each; seq++ {
						// A record: length, writer, seq, then a body of
						// the writer's byte; sizes vary so that some
						// straddle a partial write.
						n := 100 + (w*131+seq*977)%6000
						rec := make([]byte, 12+n)
						binary.BigEndian.PutUint32(rec[0:], uint32(n))
						binary.BigEndian.PutUint32(rec[4:], uint32(w))
						binary.BigEndian.PutUint32(rec[8:], uint32(seq))
						for i := range n {
							rec[12+i] = byte(w)
						}
						if err := c.Write(rec); err != nil {
							return
						}
					}
				}()
			}
		}
		_, addr := start(r, Options{MaxWriteQueue: 64 << 20})
		c := dial(t, addr)
		c.Write([]byte("go"))
		next := make([]int, writers)
		hdr := make([]byte, 12)
		for got := 0; got < writers*each; got++ {
			if _, err := io.ReadFull(c, hdr); err != nil {
				t.Fatalf("record %d: %v", got, err)
			}
			n := binary.BigEndian.Uint32(hdr[0:])
			w := binary.BigEndian.Uint32(hdr[4:])
			seq := binary.BigEndian.Uint32(hdr[8:])
			if w >= writers || int(seq) != next[w] || n > 6100 {
				t.Fatalf("record %d: writer %d seq %d len %d: interleaved or out of order", got, w, seq, n)
			}
			next[w]++
			body := make([]byte, n)
			if _, err := io.ReadFull(c, body); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, bytes.Repeat([]byte{byte(w)}, int(n))) {
				t.Fatalf("record %d of writer %d: body interleaved", seq, w)
			}
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		r.onOpen = func(c Conn) { c.SetIdleTimeout(300 * time.Millisecond) }
		r.onData = func(c Conn, b []byte) {
			if string(b) == "x" {
				c.SetIdleTimeout(0) // this conn stays open
			}
			c.Write(b)
		}
		_, addr := start(r, Options{})
		c := dial(t, addr)
		keep := dial(t, addr)
		keep.Write([]byte("x"))

		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("idle client read: %v, want EOF", err)
		}
		r.waitCounts(t, 2, 1)
		if got := r.reasonList()[0]; !errors.Is(got, ErrIdleTimeout) {
			t.Errorf("OnClose reason %v, want ErrIdleTimeout", got)
		}
		keep.Write([]byte("y"))
		keep.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, 2)
		if _, err := io.ReadFull(keep, got); err != nil || string(got) != "xy" {
			t.Fatalf("conn without a timeout: %q, %v", got, err)
		}
	})
}

func TestCloseSendsWhatWasWritten(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		r.onData = func(c Conn, b []byte) {
			c.Write([]byte("refused"))
			c.Close()
			if err := c.Write([]byte("more")); !errors.Is(err, ErrClosed) {
				t.Errorf("Write after Close: %v, want ErrClosed", err)
			}
		}
		_, addr := start(r, Options{})
		c := dial(t, addr)
		c.Write([]byte("CONNECT"))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "refused" {
			t.Fatalf("read %q, %v; want \"refused\" then EOF", got, err)
		}
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; got != nil {
			t.Errorf("OnClose after Close: %v, want nil", got)
		}
	})
}

func TestPeerReset(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		_, addr := start(r, Options{})
		c := dial(t, addr)
		c.Write([]byte("x"))
		r.waitCounts(t, 1, 0)
		c.(*net.TCPConn).SetLinger(0) // close sends RST
		c.Close()
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; got == nil {
			t.Error("OnClose after a reset: nil error")
		}
	})
}

// TestOnCloseOnce closes the same conns from every side at once: the
// handler, another goroutine, the peer, a full write queue and Shutdown.
func TestOnCloseOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		const n = 200
		r := newRecorder()
		r.onData = func(c Conn, b []byte) {
			go c.Close()
			go c.Write(make([]byte, 4096))
			if b[0]%2 == 0 {
				c.Close()
			}
		}
		e, addr := start(r, Options{MaxWriteQueue: 1024})
		clients := make([]net.Conn, n)
		for i := range clients {
			clients[i] = dial(t, addr)
			clients[i].Write([]byte{byte(i)})
			if i%3 == 0 {
				clients[i].Close()
			}
		}
		r.waitCounts(t, n, n)
		e.Shutdown()
		if _, _, err := r.counts(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestShutdownClosesAll(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		const n = 50
		r := newRecorder()
		e, addr := start(r, Options{})
		clients := make([]net.Conn, n)
		for i := range clients {
			clients[i] = dial(t, addr)
		}
		r.waitCounts(t, n, 0)
		if got := e.Conns(); got != n {
			t.Errorf("Conns() = %d, want %d", got, n)
		}
		e.Shutdown()
		// Shutdown returns after the last OnClose.
		if o, c, err := r.counts(); o != n || c != n || err != nil {
			t.Fatalf("after Shutdown: opens %d closes %d, %v", o, c, err)
		}
		for _, err := range r.reasonList() {
			if !errors.Is(err, ErrEngineClosed) {
				t.Fatalf("OnClose reason %v, want ErrEngineClosed", err)
			}
		}
		for _, c := range clients {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("client still open after Shutdown")
			}
		}
		if _, err := net.Dial("tcp", addr); err == nil {
			t.Error("listener still accepts after Shutdown")
		}
		if got := e.Conns(); got != 0 {
			t.Errorf("Conns() after Shutdown = %d", got)
		}
	})
}

func TestManyConns(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 500
	}
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		r.onData = echo
		_, addr := start(r, Options{})
		clients := make([]net.Conn, n)
		for i := range clients {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			clients[i] = c
		}
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		r.waitCounts(t, n, 0)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := []byte(fmt.Sprintf("conn %d", i))
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d echo %q, %v", i, got, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, c := range clients {
			c.Close()
		}
		r.waitCounts(t, n, n)
	})
}

func TestServeConn(t *testing.T) {
	server, client := net.Pipe() // no socket at all
	r := newRecorder()
	r.onData = echo
	done := make(chan error, 1)
	go func() { done <- ServeConn(server, r, Options{}) }()
	client.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	client.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Errorf("ServeConn returned %v, want io.EOF", err)
	}
	r.waitCounts(t, 1, 1)
}

func TestNewRejectsNilHandler(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

func init() {
	// The suite leans on real parallelism between pollers and writers.
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}
