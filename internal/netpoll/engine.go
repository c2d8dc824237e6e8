package netpoll

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Engine serves listeners with one Handler. On Linux a plain TCP listener
// is driven by a few epoll goroutines (see epoll_linux.go), so an idle
// connection costs no goroutine and no buffer; any other listener, and
// every listener on other systems, is served by accept plus ServeConn.
//
// An Engine is safe for concurrent use. Shutdown stops it for good.
type Engine struct {
	h    Handler // immutable; never nil
	opts Options // immutable; defaults applied

	// poll is the epoll side; nil where the system has none.
	poll *pollers

	// conns counts open connections, for Conns.
	conns atomic.Int64

	mu        sync.Mutex
	closed    bool                      // guarded by mu; set once by Shutdown
	listeners map[net.Listener]struct{} // guarded by mu
	served    map[*streamConn]struct{}  // guarded by mu; ServeConn connections
	servedWG  sync.WaitGroup            // ServeConn connections not yet past OnClose
	done      chan struct{}             // closed by Shutdown
	stopOnce  sync.Once
}

// New returns an Engine that drives its connections with h. It starts the
// pollers at once; Shutdown stops them.
func New(h Handler, opts Options) (*Engine, error) {
	if h == nil {
		return nil, errors.New("netpoll: nil Handler")
	}
	e := &Engine{
		h:         h,
		opts:      opts.withDefaults(),
		listeners: make(map[net.Listener]struct{}),
		served:    make(map[*streamConn]struct{}),
		done:      make(chan struct{}),
	}
	p, err := startPollers(e)
	if err != nil {
		return nil, err
	}
	e.poll = p
	return e, nil
}

// Serve accepts connections on ln until ln fails or the engine shuts down,
// and then returns ErrEngineClosed (after Shutdown) or the accept error.
// A *net.TCPListener goes to the epoll pollers on Linux; any other
// listener (a TLS one, say) gets accept plus ServeConn. Serve may be called
// for several listeners at once; Shutdown closes them all.
func (e *Engine) Serve(ln net.Listener) error {
	tl, polled := ln.(*net.TCPListener)
	polled = polled && e.poll != nil
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return ErrEngineClosed
	}
	e.listeners[ln] = struct{}{}
	if polled {
		// Counted under mu, so Shutdown's wait for accept loops cannot
		// miss one that is starting.
		e.poll.serving.Add(1)
	}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.listeners, ln)
		e.mu.Unlock()
	}()

	var err error
	if polled {
		err = e.poll.serve(tl)
	} else {
		err = e.serveAccept(ln)
	}
	if e.isClosed() {
		return ErrEngineClosed
	}
	return err
}

// serveAccept is the portable accept loop: a goroutine per connection
// through ServeConn. Temporary accept errors (EMFILE) back off as net/http
// does, so a full file table does not spin.
func (e *Engine) serveAccept(ln net.Listener) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.isClosed() {
				return ErrEngineClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Linux's accept takes a descriptor before it looks for
				// a connection: a full table fails every accept, so shed
				// only for a client that is waiting.
				if pending(ln) {
					e.shed(err)
				}
				backoff = nextBackoff(backoff)
				e.opts.Logger.Warn("netpoll: accept failed; backing off", "err", err, "delay", backoff)
				if !e.sleep(backoff) {
					return ErrEngineClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		var pass Pass
		if g := e.opts.Gate; g != nil {
			var ok bool
			if pass, ok = g.Admit(remoteAddrPort(nc)); !ok {
				refuseConn(nc)
				continue
			}
		}
		go e.ServeConnWith(nc, pass)
	}
}

// shed asks the Gate to free a descriptor after an accept failed for want
// of them while a connection waits.
func (e *Engine) shed(err error) {
	if g := e.opts.Gate; g != nil && (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) {
		g.Shed()
	}
}

// remoteAddrPort is nc's peer address, or the zero AddrPort when it is not
// an IP one.
func remoteAddrPort(nc net.Conn) netip.AddrPort {
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case interface{ AddrPort() netip.AddrPort }:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// refuseConn closes a connection the Gate refused, with a reset when its
// TCP socket can be reached (through a *tls.Conn's NetConn, say): nothing
// was said on it, and no TIME_WAIT is left behind.
func refuseConn(nc net.Conn) {
	for c := nc; c != nil; {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
			break
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	nc.Close()
}

// nextBackoff doubles d from 5ms up to 1s.
func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	if d *= 2; d > time.Second {
		d = time.Second
	}
	return d
}

// sleep waits for d or until Shutdown; it reports false on Shutdown.
func (e *Engine) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.done:
		return false
	}
}

// ServeConn drives nc with the engine's Handler and options, like the
// package-level ServeConn, and blocks until nc is closed. The engine keeps
// track of it, so Shutdown closes it too: use it for the TLS and WebSocket
// connections that a gateway serves beside its TCP listener.
func (e *Engine) ServeConn(nc net.Conn) error { return e.ServeConnWith(nc, nil) }

// ServeConnWith is ServeConn for a connection admitted elsewhere (an MQTT
// WebSocket, admitted by the HTTP listener's limiter): the connection's
// Authenticated reaches pass, an eviction closes it with ErrEvicted, and
// pass is released when it closes. A nil pass is ServeConn.
func (e *Engine) ServeConnWith(nc net.Conn, pass Pass) error {
	c := newStreamConn(nc, e.h, &e.opts)
	c.pass = pass
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		nc.Close()
		if pass != nil {
			pass.Release()
		}
		return ErrEngineClosed
	}
	e.served[c] = struct{}{}
	e.servedWG.Add(1)
	e.mu.Unlock()
	e.conns.Add(1)
	defer func() {
		e.conns.Add(-1)
		e.mu.Lock()
		delete(e.served, c)
		e.mu.Unlock()
		e.servedWG.Done()
	}()
	return c.serve()
}

// Conns is the number of open connections, on every listener and through
// Engine.ServeConn.
func (e *Engine) Conns() int { return int(e.conns.Load()) }

// Shutdown closes every listener and every connection (each gets OnClose
// with ErrEngineClosed) and returns when the last OnClose has returned.
// Later calls return at once.
func (e *Engine) Shutdown() {
	e.stopOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		close(e.done)
		for ln := range e.listeners {
			ln.Close()
		}
		served := make([]*streamConn, 0, len(e.served))
		for c := range e.served {
			served = append(served, c)
		}
		e.mu.Unlock()

		if e.poll != nil {
			e.poll.shutdown()
		}
		for _, c := range served {
			c.closeWith(ErrEngineClosed)
		}
		e.servedWG.Wait()
	})
}

// Close is Shutdown, for callers that want an io.Closer.
func (e *Engine) Close() error {
	e.Shutdown()
	return nil
}

func (e *Engine) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}
