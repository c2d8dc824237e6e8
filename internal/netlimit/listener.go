package netlimit

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener wraps ln so that every connection is admitted before Accept
// returns it; a refused one never reaches the caller (net/http's Server):
// refusal(why) (a canned HTTP answer, say; nil for none) is written to it
// without blocking and it is closed at once. A connection Accept returns releases its
// ticket when closed, also after a hijack, and TicketOf finds the ticket.
//
// When accept fails for want of descriptors (EMFILE, ENFILE), the oldest
// unauthenticated connection is closed to free one, and the error goes to
// the caller, which backs off (net/http's Server does, from 5 ms to 1 s).
func (l *Limiter) Listener(ln net.Listener, refusal func(why error) []byte) net.Listener {
	return &listener{Listener: ln, l: l, refusal: refusal, scratch: make([]byte, 4096)}
}

type listener struct {
	net.Listener
	l       *Limiter           // immutable
	refusal func(error) []byte // immutable; may be nil
	// scratch takes what a refused client already sent (see refuse). Only
	// Accept uses it, and net/http calls Accept from one goroutine.
	scratch []byte
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			// Linux's accept takes a descriptor before it looks for a
			// connection, so a full table fails every accept, waiting
			// client or not: shed only for one that is waiting.
			if (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) && pending(ln.Listener) {
				ln.l.Shed()
			}
			return nil, err
		}
		t, err := ln.l.Admit(remoteAddr(c))
		if err != nil {
			var answer []byte
			if ln.refusal != nil {
				answer = ln.refusal(err)
			}
			ln.refuse(c, answer)
			continue
		}
		w := wrap(c, t)
		if !t.Bind(w) {
			// Evicted already, by an admission on another listener.
			w.Close()
			continue
		}
		return w, nil
	}
}

// pending reports whether a connection waits in ln's backlog, when ln
// exposes its socket (a *net.TCPListener does); false when it cannot tell.
func pending(ln net.Listener) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	})
	return ready
}

// refuse answers and closes c. Both the read and the write are one
// non-blocking attempt each: a refusal must not wait on the client. The
// read takes what the client already sent (usually its request), because
// closing a socket with unread bytes sends a reset, which can destroy the
// answer before the client reads it.
func (ln *listener) refuse(c net.Conn, answer []byte) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		syscall.Read(int(fd), ln.scratch)
		return true
	})
	if len(answer) > 0 {
		rc.Write(func(fd uintptr) bool {
			syscall.Write(int(fd), answer)
			return true
		})
	}
}

// remoteAddr is c's peer address, or the zero Addr (which counts as one
// address of its own) when it is not an IP one.
func remoteAddr(c net.Conn) netip.Addr {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	case interface{ AddrPort() netip.AddrPort }:
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

// wrap returns c carrying t, releasing it on Close. A *net.TCPConn keeps
// its own type's methods (ReadFrom for sendfile, CloseWrite), which
// net/http looks for.
func wrap(c net.Conn, t *Ticket) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, t: t}
	}
	return &conn{Conn: c, t: t}
}

type tcpConn struct {
	*net.TCPConn
	t *Ticket // immutable
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.t.Release()
	return err
}

func (c *tcpConn) netlimitTicket() *Ticket { return c.t }

type conn struct {
	net.Conn
	t *Ticket // immutable
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.t.Release()
	return err
}

func (c *conn) netlimitTicket() *Ticket { return c.t }

// NetConn returns the wrapped connection.
func (c *conn) NetConn() net.Conn { return c.Conn }
