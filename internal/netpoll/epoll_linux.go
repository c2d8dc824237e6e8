package netpoll

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The epoll engine.
//
// Every accepted socket belongs to one poller for its whole life. A poller
// is a goroutine around its own epoll instance and owns one read buffer
// that it lends to OnData for every readable socket, so an idle connection
// holds no buffer and no goroutine: only its *conn (112 bytes) and a
// slot in the fd table.
//
// Lock order: conn.mu, then connTable.mu (finish holds both); poller.mu
// is a leaf, and no lock is held while a Handler method runs.
//
// All of a connection's callbacks run on its poller: OnOpen (handed over
// from the accept loop through the poller's op queue), OnData, and OnClose
// (a Close from any goroutine only marks the conn closing and queues it).
// That one goroutine is what keeps them from running concurrently and
// OnClose to exactly once.
//
// Level-triggered, not edge-triggered: a poller reads each readable socket
// once per wake-up, up to the buffer's size. Edge-triggered would need a
// read until EAGAIN, a second syscall for the usual small MQTT packet; a
// socket with more than a buffer's worth is reported again on the next
// epoll_wait, which also shares the poller fairly between busy sockets.
// EPOLLOUT is armed only while a write queue is not empty.
//
// An epoll event carries the fd and a generation number. The fd table
// maps fd to *conn; an event whose generation does not match is stale (its
// fd was closed and reused during one batch) and is dropped. Events are
// hints in any case: what a connection does is decided by what read and
// write return.

// Epoll interest sets: reads and peer shutdown always; writes while queued.
const (
	evRead  = unix.EPOLLIN | unix.EPOLLRDHUP
	evWrite = evRead | unix.EPOLLOUT
)

// pollers is the epoll side of an Engine.
type pollers struct {
	e     *Engine
	ps    []*poller
	table connTable
	start time.Time     // the clock's origin (monotonic)
	next  atomic.Uint32 // round-robin poller choice
	gen   atomic.Uint32 // connection generations
	wg    sync.WaitGroup
	stop  chan struct{} // closed by shutdown; stops the idle sweeper

	// stopfd is an eventfd that shutdown makes readable for good, to wake
	// every accept loop waiting in poll.
	stopfd int
	// serving counts accept loops, so that stopfd closes after the last;
	// Engine.Serve adds under Engine.mu.
	serving sync.WaitGroup
}

// poller is one epoll goroutine.
type poller struct {
	pp     *pollers
	epfd   int
	wakefd int    // eventfd that wakes epoll_wait for queued ops
	buf    []byte // the shared read buffer; used only by the loop
	now    int64  // clock at the last wake-up; used only by the loop

	mu   sync.Mutex
	ops  []op // guarded by mu; work for the loop
	dead bool // guarded by mu; the loop has exited

	// awake is true while the loop is not in epoll_wait (or is about to
	// leave it): a poster then need not write the eventfd.
	awake atomic.Bool
}

// op is work handed to a poller's loop: open a new conn, close one, or
// shut down.
type op struct {
	kind opKind
	c    *conn
	err  error
}

type opKind uint8

const (
	opOpen opKind = iota
	opClose
	opShutdown
)

func startPollers(e *Engine) (*pollers, error) {
	stopfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	pp := &pollers{e: e, start: time.Now(), stop: make(chan struct{}), stopfd: stopfd}
	for i := 0; i < e.opts.Pollers; i++ {
		p, err := newPoller(pp)
		if err != nil {
			for _, p := range pp.ps {
				p.closeFDs()
			}
			unix.Close(stopfd)
			return nil, err
		}
		pp.ps = append(pp.ps, p)
	}
	for _, p := range pp.ps {
		pp.wg.Add(1)
		go p.loop()
	}
	go pp.sweepIdle()
	return pp, nil
}

func newPoller(pp *pollers) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	// The wake fd's event carries fd -1, which no connection has.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("netpoll: epoll_ctl wake fd: %w", err)
	}
	p := &poller{pp: pp, epfd: epfd, wakefd: wakefd, buf: make([]byte, pp.e.opts.ReadBufferSize)}
	p.awake.Store(true)
	return p, nil
}

func (p *poller) closeFDs() {
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}

// clock is the engine's monotonic time in nanoseconds.
func (pp *pollers) clock() int64 { return int64(time.Since(pp.start)) }

// serve accepts on tl with accept4 on its own fd, so each socket is born
// non-blocking and never becomes a net.Conn. The runtime does not lend a
// listener's readiness (RawConn.Read fails on one), so this goroutine
// waits in poll(2) on the fd and on stopfd, and accepts inside
// RawConn.Control, which holds the listener open meanwhile: a Close from
// elsewhere cannot hand the fd number to another socket under accept4,
// and makes Control fail, which ends the loop. The poll timeout bounds how
// long that takes when the listener is closed by someone else.
// Engine.Serve has counted it in pp.serving.
func (pp *pollers) serve(tl *net.TCPListener) error {
	defer pp.serving.Done()
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var lfd int
	if err := rc.Control(func(fd uintptr) { lfd = int(fd) }); err != nil {
		return err
	}
	log := pp.e.opts.Logger
	var backoff time.Duration
	for {
		fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}, {Fd: int32(pp.stopfd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 1000); err != nil && err != unix.EINTR {
			return fmt.Errorf("netpoll: poll: %w", err)
		}
		if pp.e.isClosed() {
			return ErrEngineClosed
		}
		var acceptErr error
		err := rc.Control(func(fd uintptr) {
			for {
				nfd, sa, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				switch {
				case err == nil:
					backoff = 0
					pp.add(nfd, sa)
				case err == unix.EINTR || err == unix.ECONNABORTED:
					// Interrupted, or the peer gave up in the backlog.
				case err == unix.EAGAIN:
					return // wait for the next connection
				default:
					acceptErr = err
					return
				}
			}
		})
		if err != nil {
			return err // the listener was closed
		}
		if acceptErr == nil {
			continue
		}
		if !isTemporaryAccept(acceptErr) {
			return fmt.Errorf("netpoll: accept4: %w", acceptErr)
		}
		// Out of descriptors: the connection waits in the backlog (poll
		// said so) and poll would report it again at once, so sleep
		// rather than spin, and free a descriptor held by a connection
		// that has not authenticated, if the Gate has one.
		pp.e.shed(acceptErr)
		backoff = nextBackoff(backoff)
		log.Warn("netpoll: accept failed; backing off", "err", acceptErr, "delay", backoff)
		if !pp.e.sleep(backoff) {
			return ErrEngineClosed
		}
	}
}

// add hands a freshly accepted socket to a poller, which opens it, once
// the Gate (if any) admits it; a refused one is closed here, before it
// costs a conn or an epoll registration.
func (pp *pollers) add(fd int, sa unix.Sockaddr) {
	ap := addrPort(sa)
	var pass Pass
	if g := pp.e.opts.Gate; g != nil {
		var ok bool
		if pass, ok = g.Admit(ap); !ok {
			refuseFD(fd)
			return
		}
	}
	// Small packets must not wait for Nagle: MQTT is request-response.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	p := pp.ps[int(pp.next.Add(1))%len(pp.ps)]
	c := &conn{fd: int32(fd), gen: pp.gen.Add(1), p: p, pass: pass}
	c.setRemote(ap)
	if !p.post(op{kind: opOpen, c: c}) {
		unix.Close(fd)
		c.release()
	}
}

// refuseFD closes a socket the Gate refused with a reset (SO_LINGER 0):
// nothing was said on it, and a reset leaves no TIME_WAIT behind on this
// side however many refusals a flood causes.
func refuseFD(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// release gives c's pass back, if it has one.
func (c *conn) release() {
	if c.pass != nil {
		c.pass.Release()
	}
}

// addrPort converts an accept4 peer address.
func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// post queues o for p's loop and wakes the loop if it sleeps. It reports
// false when the loop has exited (the engine is shut down).
func (p *poller) post(o op) bool {
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return false
	}
	p.ops = append(p.ops, o)
	p.mu.Unlock()
	// Appended before the check: the loop clears awake before it looks at
	// ops, so either it sees this op or we see it asleep and wake it.
	if p.awake.CompareAndSwap(false, true) {
		var one = [8]byte{1}
		unix.Write(p.wakefd, one[:])
	}
	return true
}

// loop is the poller goroutine.
func (p *poller) loop() {
	defer p.pp.wg.Done()
	events := make([]unix.EpollEvent, 256)
	for {
		if p.runOps() {
			return
		}
		p.awake.Store(false)
		p.mu.Lock()
		pending := len(p.ops) > 0
		p.mu.Unlock()
		timeout := -1
		if pending {
			timeout = 0
		}
		n, err := unix.EpollWait(p.epfd, events, timeout)
		p.awake.Store(true)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Only a bug (EBADF, EINVAL) gets here; stopping would strand
			// every connection, so log and carry on.
			p.pp.e.opts.Logger.Error("netpoll: epoll_wait", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.now = p.pp.clock()
		for i := 0; i < n; i++ {
			ev := &events[i]
			if ev.Fd == -1 {
				var buf [8]byte
				unix.Read(p.wakefd, buf[:])
				continue
			}
			c := p.pp.table.get(ev.Fd)
			if c == nil || c.gen != uint32(ev.Pad) {
				continue // stale: the fd was closed, maybe reused
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.flush()
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.read(c)
			}
		}
	}
}

// runOps runs the queued ops until none is left; it reports true after a
// shutdown, when the loop must exit.
func (p *poller) runOps() bool {
	for {
		p.mu.Lock()
		ops := p.ops
		p.ops = nil
		p.mu.Unlock()
		if len(ops) == 0 {
			return false
		}
		for i, o := range ops {
			switch o.kind {
			case opOpen:
				p.open(o.c)
			case opClose:
				p.finish(o.c, o.err)
			case opShutdown:
				p.shutdown(ops[i+1:])
				return true
			}
			ops[i] = op{} // drop references for the GC
		}
	}
}

// open registers c with epoll and calls OnOpen. It runs on the loop, so
// no event for c can be handled before OnOpen returns.
func (p *poller) open(c *conn) {
	p.pp.table.set(c.fd, c)
	ev := unix.EpollEvent{Events: evRead, Fd: c.fd, Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		p.pp.table.clear(c.fd, c)
		unix.Close(int(c.fd))
		c.release()
		p.pp.e.opts.Logger.Warn("netpoll: epoll_ctl add", "err", err)
		return
	}
	c.state.Store(uint32(stateOpen))
	p.pp.e.conns.Add(1)
	if c.pass != nil && !c.pass.Bind(evictor{c}) {
		c.closeWith(ErrEvicted) // evicted before it was opened
	}
	p.pp.e.h.OnOpen(c)
}

// read reads c once into the shared buffer and hands the bytes to OnData.
// EOF (the peer's FIN: MQTT has no use for a half-closed socket) and
// errors (RST) close c.
func (p *poller) read(c *conn) {
	if connState(c.state.Load()) != stateOpen {
		return // closing: finish will run before the next epoll_wait
	}
	n, err := readFD(int(c.fd), p.buf)
	switch {
	case n > 0:
		c.touch(p.now)
		p.pp.e.h.OnData(c, p.buf[:n])
	case err == nil:
		c.closeWith(io.EOF)
	case err == unix.EAGAIN:
		// A stale or spurious event.
	default:
		c.closeWith(fmt.Errorf("netpoll: read: %w", err))
	}
}

// finish closes c and calls OnClose, once: only a closeWith that moved c
// to closing posts it. It holds c.mu while the fd closes, so no Write can
// use the fd after it is closed (and perhaps reused).
func (p *poller) finish(c *conn, err error) {
	c.mu.Lock()
	if c.wq != nil {
		// One last try, so that a reply written just before Close (a
		// refusal CONNACK) usually goes out.
		writeFD(int(c.fd), c.wq.buf)
		c.wq = nil
	}
	c.state.Store(uint32(stateClosed))
	p.pp.table.clear(c.fd, c)
	unix.Close(int(c.fd)) // also removes it from epoll
	c.mu.Unlock()
	c.release()
	p.pp.e.conns.Add(-1)
	p.pp.e.h.OnClose(c, err)
}

// shutdown closes every conn of this poller with ErrEngineClosed, drops
// conns not yet opened, and marks the poller dead so later posts fail.
// rest is what followed the shutdown op in the batch being run.
func (p *poller) shutdown(rest []op) {
	p.mu.Lock()
	p.dead = true
	rest = append(rest, p.ops...)
	p.ops = nil
	p.mu.Unlock()
	for _, o := range rest {
		switch o.kind {
		case opOpen:
			unix.Close(int(o.c.fd)) // never opened: no callbacks
			o.c.release()
		case opClose:
			p.finish(o.c, o.err)
		}
	}
	p.pp.table.each(func(c *conn) {
		if c.p == p {
			c.state.Store(uint32(stateClosing))
			p.finish(c, ErrEngineClosed)
		}
	})
	p.closeFDs()
}

// shutdown stops every poller after its conns are closed, and the sweeper.
func (pp *pollers) shutdown() {
	close(pp.stop)
	// Never read, so it stays readable until every accept loop is out.
	one := [8]byte{1}
	unix.Write(pp.stopfd, one[:])
	pp.serving.Wait()
	unix.Close(pp.stopfd)
	for _, p := range pp.ps {
		p.post(op{kind: opShutdown})
	}
	pp.wg.Wait()
}

// sweepIdle closes, once a second, every conn whose idle deadline passed.
// A sweep rather than a timer wheel: measured at 19,000 conns it costs a
// few tens of microseconds a second (BenchmarkIdleSweep), and it needs no
// per-conn links and no work on each OnData beyond storing a deadline.
func (pp *pollers) sweepIdle() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-pp.stop:
			return
		case <-t.C:
			pp.sweep(pp.clock())
		}
	}
}

func (pp *pollers) sweep(now int64) {
	pp.table.each(func(c *conn) {
		// idle is checked too: a touch racing SetIdleTimeout(0) from
		// another goroutine may store a deadline after it was cleared.
		if d := c.deadline.Load(); d != 0 && now > d && c.idle.Load() != 0 {
			c.closeWith(ErrIdleTimeout)
		}
	})
}

// readFD reads once, retrying on EINTR.
func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// writeFD writes b until it is all written or the socket is full
// (EAGAIN) or fails; it returns how much was written.
func writeFD(fd int, b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n, err := unix.Write(fd, b[written:])
		if n > 0 {
			written += n
		}
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return written, err
		case n == 0:
			return written, unix.EAGAIN
		}
	}
	return written, nil
}
