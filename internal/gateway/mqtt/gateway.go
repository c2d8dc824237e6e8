// Package mqtt is the MQTT 3.1.1 and 5.0 device gateway: a device connects
// with its registration ID and device secret, subscribes to
// devices/{registration_id} at QoS 1, and receives its inbox as PUBLISH
// packets whose PUBACK is the acknowledgement.
//
// The gateway is a netpoll.Handler, so the same code serves plain TCP
// through the epoll engine and TLS and WebSocket connections through
// netpoll.ServeConn. An idle connection holds no buffer and no goroutine:
// bytes of an incomplete packet are copied aside only until it completes.
package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/session"
)

// Registry authenticates devices.
type Registry interface {
	AuthDevice(ctx context.Context, id, secret string) (push.Device, error)
}

// Inbox is the core as the gateway sees it: *delivery.Service.
type Inbox interface {
	// AttachExclusive connects a subscribed connection to the device's
	// inbox, closing the device's MQTT connections on other nodes: a
	// client ID has one session in the whole cluster.
	AttachExclusive(ctx context.Context, d *push.Device, send delivery.Sender, window int) (*delivery.Stream, error)
	// Ack acknowledges messages of d. The gateway acks by device rather
	// than through the Stream, so that a PUBACK still counts when it
	// arrives during Attach (before the stream exists) or after an
	// UNSUBSCRIBE (after it is gone).
	AckFrom(ctx context.Context, transport string, d *push.Device, ids []string) (int, error)
}

// Options tune the gateway. Zero fields take the defaults named.
type Options struct {
	// MaxPacketSize bounds a packet from a device; larger ones are refused
	// from their fixed header, before anything is buffered. Default 16 KiB:
	// devices only send small control packets.
	MaxPacketSize int
	// ConnectTimeout is how long a new connection may take to send
	// CONNECT. Default 5 s.
	ConnectTimeout time.Duration
	// MaxKeepAlive caps the keepalive a client may ask for; 5.0 clients
	// that ask more (or 0) are told the cap in Server Keep Alive, 3.1.1
	// clients are held to it silently. Default 20 minutes.
	MaxKeepAlive time.Duration
	// Window is the number of unacknowledged messages in flight for a
	// 3.1.1 client, and the cap on a 5.0 client's Receive Maximum.
	// Default 32.
	Window int
	// ServerReference, when set, is where 5.0 clients are sent when this
	// node shuts down: DISCONNECT 0x9C (use another server) with it as
	// Server Reference, rather than 0x8B. In a cluster it names the other
	// nodes or their load balancer (host:port, space-separated for
	// several, as MQTT 5 allows).
	ServerReference string
	// Offload handles CONNECT and SUBSCRIBE, which read the store (the
	// device, then its inbox), on the gateway's workers rather than on the
	// engine's pollers. For a store whose reads are network round trips
	// (PostgreSQL): meanwhile a poller serves none of its other
	// connections. An embedded store answers from memory in microseconds,
	// less than the hand-off to a worker costs, so it is off by default.
	Offload bool
	Log     *slog.Logger
}

// Gateway is the MQTT protocol over netpoll connections.
type Gateway struct {
	reg   Registry // never nil
	inbox Inbox    // never nil
	opts  Options
	limit packet.Limits

	lastPayload atomic.Pointer[encoded] // the last message encoded, for broadcasts
	acks        chan ackReq             // acks for the ack workers
	slow        chan *conn              // connections with a CONNECT or SUBSCRIBE to handle (handOff)
	done        chan struct{}           // closed by Shutdown

	// open counts connections between OnOpen and OnClose. There is no set
	// of them: an entry per connection would cost the memory target, and
	// Shutdown reaches the authenticated ones through byDevice (the engine
	// closes the rest).
	open atomic.Int64

	mu sync.Mutex
	// byDevice finds the connection of a client ID, for takeover and
	// Shutdown; guarded by mu.
	byDevice map[string]*conn
	closing  bool // guarded by mu
}

// New returns a gateway.
func New(reg Registry, inbox Inbox, o Options) *Gateway {
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = 16 << 10
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.MaxKeepAlive <= 0 {
		o.MaxKeepAlive = 20 * time.Minute
	}
	if o.Window <= 0 {
		o.Window = 32
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	g := &Gateway{reg: reg, inbox: inbox, opts: o, byDevice: make(map[string]*conn),
		acks: make(chan ackReq, 1<<14), slow: make(chan *conn, 1<<14), done: make(chan struct{})}
	for range ackWorkers {
		go g.ackWorker()
	}
	if o.Offload {
		for range slowWorkers {
			go g.slowWorker()
		}
	}
	return g
}

// ackWorkers is how many acks may wait on the store at once; the store's
// group commit turns them into few disk flushes.
const ackWorkers = 64

// slowWorkers is how many connections may wait on the store at once for
// their CONNECT or SUBSCRIBE; a store that groups concurrent reads (the
// PostgreSQL one) answers a storm of them in few round trips.
const slowWorkers = 64

// Interface guards.
var (
	_ netpoll.Handler = (*Gateway)(nil)
	_ delivery.Sender = (*conn)(nil)
)

// OnOpen implements netpoll.Handler.
func (g *Gateway) OnOpen(nc netpoll.Conn) {
	c := &conn{gw: g, nc: nc, connectBy: time.Now().Add(g.opts.ConnectTimeout).UnixNano()}
	nc.SetContext(c)
	nc.SetIdleTimeout(g.opts.ConnectTimeout)
	g.open.Add(1)
	g.mu.Lock()
	closing := g.closing
	g.mu.Unlock()
	if closing {
		nc.Close()
	}
}

// OnData implements netpoll.Handler.
func (g *Gateway) OnData(nc netpoll.Conn, data []byte) {
	if c, ok := nc.Context().(*conn); ok {
		c.onData(data)
	}
}

// OnClose implements netpoll.Handler.
func (g *Gateway) OnClose(nc netpoll.Conn, err error) {
	c, ok := nc.Context().(*conn)
	if !ok {
		return
	}
	c.detach()
	g.open.Add(-1)
	if dev := c.deviceID(); dev != "" {
		g.forget(dev, c)
	}
}

// forget unregisters c as the connection of client ID id, unless another
// took over.
func (g *Gateway) forget(id string, c *conn) {
	g.mu.Lock()
	if g.byDevice[id] == c {
		delete(g.byDevice, id)
	}
	g.mu.Unlock()
}

// handOff queues c's slow packets for a worker (conn.work). With the queue
// full, the caller handles them itself, as a poller did before there were
// workers: slower, but bounded.
func (g *Gateway) handOff(c *conn) {
	select {
	case g.slow <- c:
	case <-g.done:
		go c.work() // shutting down: the CONNECT is refused at once
	default:
		c.work()
	}
}

func (g *Gateway) slowWorker() {
	for {
		select {
		case c := <-g.slow:
			c.work()
		case <-g.done:
			return
		}
	}
}

// Len returns the number of open connections.
func (g *Gateway) Len() int { return int(g.open.Load()) }

// Shutdown tells every connected client the server is going away (5.0:
// DISCONNECT 0x8B) and closes its connection; from then on new connections
// are closed at once and a CONNECT in progress is refused. Connections that
// have not sent CONNECT yet are left to the engine's shutdown.
func (g *Gateway) Shutdown() {
	g.mu.Lock()
	if !g.closing {
		close(g.done)
	}
	g.closing = true
	conns := make([]*conn, 0, len(g.byDevice))
	for _, c := range g.byDevice {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.Close(errShutdown)
	}
}

var errShutdown = errors.New("mqtt: server shutting down")

// takeOver registers c as the connection of its client ID and returns the
// connection it replaces, if any; ok is false once Shutdown has begun.
func (g *Gateway) takeOver(id string, c *conn) (old *conn, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return nil, false
	}
	old = g.byDevice[id]
	g.byDevice[id] = c
	if old == c {
		return nil, true
	}
	return old, true
}

// Reasons a connection is closed by the server side.
var (
	errTakenOver = errors.New("mqtt: another connection took over this client ID")
)

// reasonFor maps why the core closes a session to a 5.0 DISCONNECT code.
func reasonFor(err error) packet.ReasonCode {
	switch {
	case err == nil:
		return packet.ReasonNormalDisconnection
	case errors.Is(err, errTakenOver), errors.Is(err, session.ErrTakenOver):
		return packet.ReasonSessionTakenOver
	case errors.Is(err, errShutdown), errors.Is(err, session.ErrShuttingDown):
		return packet.ReasonServerShuttingDown
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, session.ErrDeviceDeleted):
		return packet.ReasonNotAuthorized
	}
	return packet.ReasonAdministrativeAction
}

var _ session.Session = (*delivery.Stream)(nil)
