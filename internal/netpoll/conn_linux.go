package netpoll

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// conn is a connection driven by a poller. It is kept small on purpose
// (112 bytes): it is everything an idle connection costs in Go. The
// 4-byte-aligned fields come first and the peer's address is kept as
// bytes rather than a netip.AddrPort (32 bytes with its padding), which
// makes room for the Gate's pass within the same size class.
type conn struct {
	fd  int32  // immutable; closed (and maybe reused) once state is closed
	gen uint32 // immutable; tells this conn's epoll events from a reused fd's

	// state is a connState. It moves forward only: open on the loop, to
	// closing by closeWith's CAS (from any goroutine), to closed on the
	// loop in finish, with mu held.
	state atomic.Uint32

	// The peer's address; immutable. ip is in 16-byte form, is4 says
	// whether it came as IPv4.
	port uint16
	is4  bool
	ip   [16]byte

	p *poller // immutable; the poller that runs every callback

	// pass is the Gate's admission; immutable, nil without a Gate.
	pass Pass

	// idle is the idle timeout in ns (0: none); deadline is the engine
	// clock after which the sweeper closes the conn (0: none).
	idle     atomic.Int64
	deadline atomic.Int64

	// mu serialises writers with each other, with the EPOLLOUT flush, and
	// with finish closing the fd. A Write holds it across its syscall, which
	// is what keeps concurrent writes contiguous.
	mu sync.Mutex
	wq *writeQueue // guarded by mu; nil when nothing is queued

	// ctxMu is apart from mu so that Context, called on every OnData,
	// never waits for another goroutine's write syscall. It fills the
	// 112-byte size class that conn already used.
	ctxMu sync.Mutex
	ctx   any // guarded by ctxMu
}

// setRemote stores the peer's address ap.
func (c *conn) setRemote(ap netip.AddrPort) {
	c.ip, c.is4, c.port = ap.Addr().As16(), ap.Addr().Is4(), ap.Port()
}

// remote is the peer's address.
func (c *conn) remote() netip.AddrPort {
	a := netip.AddrFrom16(c.ip)
	if c.is4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, c.port)
}

// writeQueue holds what the socket did not take, in order. It exists only
// while the socket is full.
type writeQueue struct {
	buf []byte
}

// Write writes b now if the socket takes it, else queues the rest and arms
// EPOLLOUT. If bytes are already queued, b goes behind them, to keep the
// order. It never blocks on the network.
func (c *conn) Write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.mu.Lock()
	if connState(c.state.Load()) != stateOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	limit := c.p.pp.e.opts.MaxWriteQueue
	if c.wq != nil {
		if len(c.wq.buf)+len(b) > limit {
			c.mu.Unlock()
			c.closeWith(ErrWriteQueueFull)
			return ErrWriteQueueFull
		}
		c.wq.buf = append(c.wq.buf, b...)
		c.mu.Unlock()
		return nil
	}
	n, err := writeFD(int(c.fd), b)
	switch {
	case err == nil:
		c.mu.Unlock()
		return nil
	case err == unix.EAGAIN:
		rest := b[n:]
		if len(rest) > limit {
			c.mu.Unlock()
			c.closeWith(ErrWriteQueueFull)
			return ErrWriteQueueFull
		}
		c.wq = &writeQueue{buf: append([]byte(nil), rest...)}
		c.arm(evWrite)
		c.mu.Unlock()
		return nil
	default:
		c.mu.Unlock()
		err = fmt.Errorf("netpoll: write: %w", err)
		c.closeWith(err)
		return err
	}
}

// flush writes the queue when the socket is writable again, and disarms
// EPOLLOUT once it is empty. It runs on the poller.
func (c *conn) flush() {
	c.mu.Lock()
	if c.wq == nil || connState(c.state.Load()) == stateClosed {
		c.mu.Unlock()
		return
	}
	n, err := writeFD(int(c.fd), c.wq.buf)
	// Slicing forward lets the next append reallocate only the unsent
	// tail, so the queue never keeps what was already written.
	c.wq.buf = c.wq.buf[n:]
	if len(c.wq.buf) == 0 {
		c.wq = nil
		c.arm(evRead)
	}
	c.mu.Unlock()
	if err != nil && err != unix.EAGAIN {
		c.closeWith(fmt.Errorf("netpoll: write: %w", err))
	}
}

// arm sets c's epoll interest. Lock must be held.
func (c *conn) arm(events uint32) {
	ev := unix.EpollEvent{Events: events, Fd: c.fd, Pad: int32(c.gen)}
	// It can fail only if the fd is gone, and then finish is on its way.
	unix.EpollCtl(c.p.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev)
}

// Close closes the connection. OnClose follows on the poller with a nil
// error, after whatever callback is running now has returned; what Write
// queued gets one last non-blocking try.
func (c *conn) Close() error {
	c.closeWith(nil)
	return nil
}

// closeWith moves an open c to closing and queues it for its poller,
// which closes the fd and calls OnClose(c, err). Only the first call wins.
func (c *conn) closeWith(err error) {
	if !c.state.CompareAndSwap(uint32(stateOpen), uint32(stateClosing)) {
		return
	}
	// A dead poller has already closed every conn it had.
	c.p.post(op{kind: opClose, c: c, err: err})
}

// touch restarts the idle clock after data arrived.
func (c *conn) touch(now int64) {
	if d := c.idle.Load(); d != 0 {
		c.deadline.Store(now + d)
	}
}

// RemoteAddr is the peer's address.
func (c *conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote()) }

// Authenticated tells the Gate the peer has authenticated.
func (c *conn) Authenticated() {
	if c.pass != nil {
		c.pass.Authenticated()
	}
}

// evictor is what the Gate closes an evicted conn with. One pointer, so
// it goes into an io.Closer without an allocation.
type evictor struct{ c *conn }

func (e evictor) Close() error {
	e.c.closeWith(ErrEvicted)
	return nil
}

// SetIdleTimeout closes c when no data arrives for d, checked once a
// second; zero turns it off.
func (c *conn) SetIdleTimeout(d time.Duration) {
	if d <= 0 {
		c.idle.Store(0)
		c.deadline.Store(0)
		return
	}
	c.idle.Store(int64(d))
	c.deadline.Store(c.p.pp.clock() + int64(d))
}

// SetContext stores the protocol's per-connection state.
func (c *conn) SetContext(v any) {
	c.ctxMu.Lock()
	c.ctx = v
	c.ctxMu.Unlock()
}

// Context returns what SetContext stored.
func (c *conn) Context() any {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	return c.ctx
}

// connTable maps an fd to its conn for every poller. Lookups (one per
// epoll event) are lock-free; set and clear take mu, and so does growth,
// which copies into a doubled table and publishes it. A slot is 8 bytes:
// the table is cheaper per connection than a map.
type connTable struct {
	mu    sync.Mutex
	slots atomic.Pointer[[]atomic.Pointer[conn]]
}

func (t *connTable) get(fd int32) *conn {
	s := t.slots.Load()
	if s == nil || int(fd) >= len(*s) || fd < 0 {
		return nil
	}
	return (*s)[fd].Load()
}

func (t *connTable) set(fd int32, c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.slots.Load()
	if s == nil || int(fd) >= len(*s) {
		size := 1024
		if s != nil {
			size = len(*s)
		}
		for size <= int(fd) {
			size *= 2
		}
		grown := make([]atomic.Pointer[conn], size)
		if s != nil {
			for i := range *s {
				grown[i].Store((*s)[i].Load())
			}
		}
		s = &grown
		t.slots.Store(s)
	}
	(*s)[fd].Store(c)
}

// clear empties fd's slot if it still holds c.
func (t *connTable) clear(fd int32, c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.slots.Load(); s != nil && int(fd) < len(*s) {
		(*s)[fd].CompareAndSwap(c, nil)
	}
}

// each calls f for every conn in the table.
func (t *connTable) each(f func(*conn)) {
	s := t.slots.Load()
	if s == nil {
		return
	}
	for i := range *s {
		if c := (*s)[i].Load(); c != nil {
			f(c)
		}
	}
}

// Interface guards.
var _ Conn = (*conn)(nil)
