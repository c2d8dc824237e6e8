// Package netpoll drives many network connections without a goroutine or a
// read buffer per idle connection (ARCHITECTURE.md, decision 1). A protocol
// is written once against Handler and Conn; the Linux epoll engine serves
// plain TCP listeners, and ServeConn drives any net.Conn (TLS, WebSocket)
// with a goroutine, for transports whose library needs one.
package netpoll

import (
	"io"
	"net"
	"net/netip"
	"time"
)

// Handler is a protocol's side of the engine. The engine calls a Handler's
// methods for one connection one at a time, never concurrently; methods
// for different connections do run concurrently (one poller goroutine per
// core), so state shared between connections needs its own locking.
//
// On the epoll engine a callback runs on a poller goroutine that serves
// thousands of other connections: it must not block (no waiting on a
// store, a lock held across I/O, a channel that may be full, the network).
// Slow work goes to another goroutine, which answers later with Write.
type Handler interface {
	// OnOpen is called once for each new connection, before any data.
	OnOpen(c Conn)
	// OnData is called with bytes read from c. data is borrowed from the
	// engine: it is valid only during the call, so a handler that needs
	// bytes later (a partial packet) copies them.
	OnData(c Conn, data []byte)
	// OnClose is called once when c is closed, by either side; err says
	// why (nil for a close the handler asked for). It is the last call for
	// c, and comes after any OnData that was running has returned: after
	// a Close from inside OnData, OnClose follows once OnData returns.
	// Reasons: nil; io.EOF (the peer closed or half-closed); ErrIdleTimeout;
	// ErrWriteQueueFull; ErrEvicted; ErrEngineClosed; or a wrapped read or
	// write error (a reset).
	OnClose(c Conn, err error)
}

// Conn is one connection as a Handler sees it. Its methods are safe to
// call from any goroutine.
type Conn interface {
	// Write writes b, or queues what the socket does not take now (a copy)
	// and writes it when the socket is writable, preserving order. It
	// never blocks on the network. It fails once the connection is closed
	// or when the queue would exceed the engine's limit (a slow reader),
	// in which case the connection is closed. b may be reused as soon as
	// Write returns. Each call's bytes stay contiguous on the wire even
	// when several goroutines write at once (one packet per call).
	Write(b []byte) error
	// Close closes the connection; OnClose follows (not within Close).
	// Bytes Write queued get one last non-blocking attempt, so a reply
	// written just before Close (a refusal CONNACK) goes out.
	Close() error
	// RemoteAddr is the peer's address.
	RemoteAddr() net.Addr
	// SetIdleTimeout closes the connection when no data arrives for d (the
	// CONNECT timeout, 1.5 × keepalive); each OnData restarts the clock.
	// Zero turns it off. Timing is coarse (about a second).
	SetIdleTimeout(d time.Duration)
	// SetContext and Context keep the protocol's per-connection state.
	SetContext(v any)
	Context() any
	// Authenticated tells the engine's Gate that the peer has proven who
	// it is (an MQTT CONNECT was accepted), so that the connection no
	// longer counts among the unauthenticated ones. Without a Gate it does
	// nothing.
	Authenticated()
}

// Gate admits connections before the engine spends anything on them
// (Options.Gate). The engine asks it for every connection it accepts,
// before OnOpen and before the socket is registered with epoll.
type Gate interface {
	// Admit admits a connection from remote and returns its Pass, or
	// refuses it: the socket is then closed at once (with a reset, so
	// that no TIME_WAIT is left behind) and the Handler never sees it.
	Admit(remote netip.AddrPort) (Pass, bool)
	// Shed closes the oldest connections that have not authenticated (a
	// few at most), if any, and reports whether there were any. The
	// accept loops call it when accept fails for want of descriptors
	// while a client waits, to free some.
	Shed() bool
}

// Pass is a connection's admission, as a Gate gave it.
type Pass interface {
	// Bind gives the pass what closes the connection if the Gate evicts
	// it; false means it was evicted already, and the engine closes the
	// connection with ErrEvicted.
	Bind(c io.Closer) bool
	// Authenticated is what Conn.Authenticated calls.
	Authenticated()
	// Release gives the admission back; the engine calls it once the
	// connection is closed. Later calls must do nothing.
	Release()
}
