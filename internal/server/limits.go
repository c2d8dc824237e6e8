package server

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/netpoll"
)

// limitConnections creates the node's connection limiter (one for every
// listener, so that an address's cap counts HTTP and MQTT together) and
// wraps the HTTP listener in it. A refused connection is answered 503
// too_many_connections before net/http sees it.
func (s *Server) limitConnections() {
	s.limits = netlimit.New(netlimit.Options{
		PerAddr: s.cfg.MaxConnsPerAddr, MaxUnauth: s.cfg.MaxUnauthConns, Log: s.log,
	})
	perAddr := apierr.RawResponse(apierr.TooManyConnections)
	busy := apierr.RawResponse(apierr.TooManyConnections.With("too many connections closing at once; retry later"))
	s.httpLn = s.limits.Listener(s.httpLn, func(why error) []byte {
		if errors.Is(why, netlimit.ErrBusy) {
			return busy
		}
		return perAddr
	})
}

// gate is the limiter as the MQTT engine's netpoll.Gate.
type gate struct{ *netlimit.Limiter }

func (g gate) Admit(remote netip.AddrPort) (netpoll.Pass, bool) {
	t, err := g.Limiter.Admit(remote.Addr())
	if err != nil {
		return nil, false
	}
	if t == nil {
		return nil, true
	}
	return t, true
}

// passOf is t as a netpoll.Pass, for MQTT over WebSocket (admitted by the
// HTTP listener); nil, not a nil *Ticket in an interface, when t is nil.
func passOf(t *netlimit.Ticket) netpoll.Pass {
	if t == nil {
		return nil
	}
	return t
}

// withSocket returns ln (a TLS listener over tcp) exposing tcp's socket
// (SyscallConn), so that the engine's accept loop, out of descriptors, can
// tell whether a client waits before it sheds a connection for it.
func withSocket(ln net.Listener, tcp net.Listener) net.Listener {
	sc, ok := tcp.(syscall.Conn)
	if !ok {
		return ln
	}
	return socketListener{ln, sc}
}

type socketListener struct {
	net.Listener
	sc syscall.Conn
}

func (l socketListener) SyscallConn() (syscall.RawConn, error) { return l.sc.SyscallConn() }

// Interface guards.
var (
	_ netpoll.Gate = gate{}
	_ netpoll.Pass = (*netlimit.Ticket)(nil)
)
