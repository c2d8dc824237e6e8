package netpoll

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ServeConn drives nc with h on the calling goroutine and returns, after
// OnClose has returned, the error OnClose got. It is the engine for
// connections the epoll pollers cannot drive because a library owns the
// bytes (TLS, WebSocket), and the whole engine on systems without epoll.
//
// It keeps the Handler contract: OnOpen, OnData and OnClose for nc run one
// at a time on this goroutine, OnClose exactly once. Between packets it
// holds no read buffer when nc exposes its socket (syscall.Conn, as
// *net.TCPConn does) on Linux: it waits for readability and only then
// borrows a buffer from a pool, returning it after OnData. A connection
// that hides its socket (TLS, WebSocket adapters) waits in Read on a
// 512-byte buffer of its own, and borrows a pooled one only after a read
// that filled it. Write never blocks the caller: it queues a copy,
// and a goroutine that exists only while the queue is not empty writes it
// with Options.WriteTimeout.
func ServeConn(nc net.Conn, h Handler, opts Options) error {
	o := opts.withDefaults()
	return newStreamConn(nc, h, &o).serve()
}

// streamConn is a Conn driven by a goroutine that reads a net.Conn.
type streamConn struct {
	nc   net.Conn // immutable
	h    Handler  // immutable
	opts *Options // immutable, shared

	mu       sync.Mutex
	state    connState     // guarded by mu
	closeErr error         // guarded by mu; why, once state is closing
	queue    []byte        // guarded by mu; bytes Write accepted, not yet handed to the flusher
	flushing bool          // guarded by mu; a flusher goroutine is running
	idle     time.Duration // guarded by mu
	ctx      any           // guarded by mu

	pass Pass // the Gate's admission; set before serve, nil without one
}

// connState is where a connection is in its life. It only moves forward.
type connState uint32

const (
	stateNew     connState = iota // accepted, OnOpen not yet called
	stateOpen                     // callbacks may run; Write works
	stateClosing                  // Close asked for; OnClose not yet called
	stateClosed                   // OnClose called or about to be
)

// handshaker is a conn with a handshake to run before its first read, as
// *tls.Conn is.
type handshaker interface {
	HandshakeContext(context.Context) error
}

// probeSize is the read buffer of its own that a ServeConn conn without
// a socket to wait on keeps (see serve): larger than the small packets of
// an idle device (PINGREQ, PUBACK), small beside a goroutine's stack.
const probeSize = 512

// bufPools holds ServeConn's read buffers, one pool per size, so that
// engines with different ReadBufferSize do not trade buffers.
var bufPools sync.Map // int -> *sync.Pool of *[]byte

func bufPool(size int) *sync.Pool {
	if p, ok := bufPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := bufPools.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool)
}

func newStreamConn(nc net.Conn, h Handler, opts *Options) *streamConn {
	return &streamConn{nc: nc, h: h, opts: opts}
}

// serve is the read loop; it returns after OnClose.
func (c *streamConn) serve() error {
	pool := bufPool(c.opts.ReadBufferSize)
	wait := readinessWaiter(c.nc)

	c.mu.Lock()
	c.state = stateOpen
	c.mu.Unlock()
	if c.pass != nil {
		defer c.pass.Release()
		if !c.pass.Bind(streamEvictor{c}) {
			c.closeWith(ErrEvicted) // evicted before it was served
		}
	}
	c.h.OnOpen(c)

	var readErr error
	if hs, ok := c.nc.(handshaker); ok {
		// The handshake (TLS) runs in a goroutine of its own that exits
		// after it: its crypto grows a stack to 8 KiB or more, which this
		// long-lived goroutine would otherwise keep while the device idles.
		// It runs after OnOpen, so the idle timeout set there (the CONNECT
		// timeout) bounds a client that never finishes it.
		done := make(chan error, 1)
		go func() { done <- hs.HandshakeContext(context.Background()) }()
		readErr = <-done
	}
	// A conn that hides its socket cannot be waited on without a read,
	// so it waits in Read on a small buffer of its own (probeSize bytes)
	// rather than on a pooled one: an idle TLS or WebSocket device then
	// holds 512 bytes, not 64 KiB. Only a read that fills the probe, so
	// that more is likely waiting, borrows a pooled buffer for the next.
	var probe []byte
	if wait == nil {
		probe = make([]byte, min(probeSize, c.opts.ReadBufferSize))
	}
	usePool := wait != nil
	for readErr == nil {
		if wait != nil {
			if readErr = wait(); readErr != nil {
				break
			}
		}
		buf, bp := probe, (*[]byte)(nil)
		if usePool {
			bp = pool.Get().(*[]byte)
			buf = *bp
		}
		n, err := c.nc.Read(buf)
		if n > 0 && c.isOpen() {
			c.restartIdle()
			c.h.OnData(c, buf[:n])
		}
		if bp != nil {
			pool.Put(bp)
		}
		if err != nil {
			readErr = err
			break
		}
		if wait == nil {
			usePool = n == len(probe)
		}
	}

	c.mu.Lock()
	reason := c.closeErr
	if c.state != stateClosing {
		reason = c.readReason(readErr)
	}
	c.state = stateClosed
	c.queue = nil
	c.mu.Unlock()
	// The flusher, if one is still writing, fails on the closed conn and
	// exits; closing twice is harmless.
	c.nc.Close()
	c.h.OnClose(c, reason)
	return reason
}

// readReason maps the error that ended the read loop to the reason
// OnClose gets. Lock must be held (for idle).
func (c *streamConn) readReason(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return io.EOF
	case errors.Is(err, os.ErrDeadlineExceeded) && c.idle > 0:
		return ErrIdleTimeout
	}
	return err
}

func (c *streamConn) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateOpen
}

// restartIdle moves the read deadline on after data arrived.
func (c *streamConn) restartIdle() {
	c.mu.Lock()
	d := c.idle
	c.mu.Unlock()
	if d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	}
}

// Write queues a copy of b and makes sure a flusher goroutine writes it.
// Writes from several goroutines each stay contiguous, in the order their
// calls took the lock.
func (c *streamConn) Write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	if len(c.queue)+len(b) > c.opts.MaxWriteQueue {
		c.mu.Unlock()
		c.closeWith(ErrWriteQueueFull)
		return ErrWriteQueueFull
	}
	c.queue = append(c.queue, b...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.mu.Unlock()
	return nil
}

// flush writes the queue until it is empty, then exits. A Close asked for
// while it runs is carried out by it, after the queue is written, so a
// last packet (a refusal CONNACK) goes out before the socket closes.
func (c *streamConn) flush() {
	for {
		c.mu.Lock()
		q := c.queue
		if len(q) == 0 || c.state == stateClosed {
			c.flushing = false
			closing := c.state == stateClosing
			c.mu.Unlock()
			if closing {
				c.nc.Close()
			}
			return
		}
		c.queue = nil
		c.mu.Unlock()

		c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
		if _, err := c.nc.Write(q); err != nil {
			c.mu.Lock()
			c.flushing = false
			c.mu.Unlock()
			c.closeWith(err)
			c.nc.Close()
			return
		}
	}
}

// Close closes the connection once what Write queued is written; OnClose
// follows with a nil error.
func (c *streamConn) Close() error {
	c.closeWith(nil)
	return nil
}

// closeWith moves an open connection to closing with reason err and
// unblocks the read loop, which calls OnClose. A close the handler asked
// for (err == nil) lets a running flusher finish first; any other closes
// the socket at once.
func (c *streamConn) closeWith(err error) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.state = stateClosing
	c.closeErr = err
	wait := err == nil && c.flushing
	c.mu.Unlock()
	if !wait {
		c.nc.Close()
	}
}

// RemoteAddr is the peer's address.
func (c *streamConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetIdleTimeout sets the read deadline d from now, and from every later
// read; zero removes it.
func (c *streamConn) SetIdleTimeout(d time.Duration) {
	c.mu.Lock()
	c.idle = d
	c.mu.Unlock()
	if d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
}

// SetContext stores the protocol's per-connection state.
func (c *streamConn) SetContext(v any) {
	c.mu.Lock()
	c.ctx = v
	c.mu.Unlock()
}

// Context returns what SetContext stored.
func (c *streamConn) Context() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctx
}

// Authenticated tells the Gate the peer has authenticated.
func (c *streamConn) Authenticated() {
	if c.pass != nil {
		c.pass.Authenticated()
	}
}

// streamEvictor is what the Gate closes an evicted streamConn with.
type streamEvictor struct{ c *streamConn }

func (e streamEvictor) Close() error {
	e.c.closeWith(ErrEvicted)
	return nil
}

// isTemporaryAccept reports accept errors worth a back-off and a retry:
// out of descriptors or kernel memory, or a peer that gave up in the
// backlog.
func isTemporaryAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// Interface guards.
var _ Conn = (*streamConn)(nil)
