// Package nats routes between the nodes of a cluster over core NATS. The
// store is the truth and the bus only a doorbell: every message is durable
// before it is routed, nothing is acknowledged on the strength of a bus
// message, and a session that may have missed one reads its inbox (after a
// reconnection to NATS, and on a periodic check).
//
// Subjects (prefix "herald" by default):
//
//	herald.fan       fan-out messages (broadcast, tags): every node listens,
//	                 so a broadcast costs one bus message per node
//	herald.d.<id>    everything about one device: its direct messages, acks,
//	                 changes, deletion, takeover and presence; a node listens
//	                 only while it holds a session of the device, so a
//	                 direct push reaches only the nodes that hold a target
//
// docs/decisions/ explains the choice and what it costs.
package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
)

// Options configure a Router.
type Options struct {
	// Prefix begins every subject, so that clusters can share a NATS
	// server; "herald" when empty.
	Prefix string
	// Node names this node in the bus's connection name and in logs.
	Node string
	// Recheck is how often every live session reads its inbox again,
	// whatever the bus said: the last cover for a lost doorbell. 60 s
	// when zero; negative turns it off.
	Recheck time.Duration
	// ConnectTimeout bounds the first connection; 5 s when zero.
	ConnectTimeout time.Duration
	Log            *slog.Logger
	Metrics        *metrics.M // nil: none
}

// Router is a router.Router across nodes: this node's hub, plus the bus.
type Router struct {
	hub    *session.Hub
	local  router.Local
	nc     *natsgo.Conn
	prefix string
	node   string
	log    *slog.Logger
	opts   Options

	in    chan *natsgo.Msg // the fan-out subscription delivers here
	devIn chan busMsg      // and the device connection here
	fan   *natsgo.Subscription
	dev   *deviceConn // the per-device subjects (devices.go)
	done  chan struct{}
	wg    sync.WaitGroup

	// mu makes a device's first Attach and its subscription, and its
	// last Detach and its unsubscription, one step each, so that the bus
	// ends up subscribed exactly while the hub holds the device.
	mu sync.Mutex

	rechecking atomic.Bool // a recheck of every session is under way
	again      atomic.Bool // another was asked for meanwhile
}

// inboxDepth is how many bus messages wait for the dispatcher before NATS
// counts this node a slow consumer and drops them (each drop triggers a
// recheck of every session).
const inboxDepth = 65536

// Connect joins the bus at url (a comma-separated list of NATS servers is
// allowed) with hub as this node's sessions.
func Connect(url string, hub *session.Hub, o Options) (*Router, error) {
	if o.Prefix == "" {
		o.Prefix = "herald"
	}
	if o.Recheck == 0 {
		o.Recheck = time.Minute
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Router{
		hub: hub, local: router.Local{Hub: hub}, prefix: o.Prefix, node: o.Node, log: o.Log, opts: o,
		in: make(chan *natsgo.Msg, inboxDepth), devIn: make(chan busMsg, inboxDepth), done: make(chan struct{}),
	}
	servers, err := parseServers(url)
	if err != nil {
		return nil, err
	}
	r.dev = &deviceConn{
		servers: servers, name: "herald " + o.Node + " devices", prefix: r.prefix + ".d.", log: o.Log,
		devices: hub.DeviceIDs, hold: &r.mu,
		deliver: func(subject, reply string, data []byte) {
			select {
			case r.devIn <- busMsg{subject, reply, data}:
			case <-r.done:
			}
		},
		reconnected: func() { r.recheckAll("device connection back") },
	}
	nc, err := natsgo.Connect(url,
		natsgo.Name("herald "+o.Node),
		natsgo.Timeout(o.ConnectTimeout),
		// A node's own messages reach its own sessions directly.
		natsgo.NoEcho(),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectJitter(250*time.Millisecond, time.Second),
		// A dead bus is noticed within seconds, not the default minutes.
		natsgo.PingInterval(2*time.Second),
		natsgo.MaxPingsOutstanding(2),
		natsgo.DisconnectErrHandler(r.disconnected),
		natsgo.ReconnectHandler(r.reconnected),
		natsgo.ErrorHandler(r.asyncError),
	)
	if err != nil {
		return nil, fmt.Errorf("nats: connecting to %s: %w", url, err)
	}
	r.nc = nc
	if err := r.dev.start(o.ConnectTimeout); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: connecting to %s: %w", url, err)
	}
	if r.fan, err = nc.ChanSubscribe(r.prefix+".fan", r.in); err != nil {
		r.dev.close()
		nc.Close()
		return nil, fmt.Errorf("nats: subscribing: %w", err)
	}
	if err := nc.FlushTimeout(o.ConnectTimeout); err != nil {
		r.dev.close()
		nc.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	o.Metrics.EnableBus()
	o.Metrics.Gauge("herald_bus_connected", "1 while this node is connected to the cluster bus (both of its connections).", func() float64 {
		if r.Health() == nil {
			return 1
		}
		return 0
	})
	r.wg.Go(r.dispatch)
	if o.Recheck > 0 {
		r.wg.Go(r.recheckPeriodically)
	}
	return r, nil
}

// Close leaves the bus.
func (r *Router) Close() {
	select {
	case <-r.done:
		return
	default:
	}
	close(r.done)
	r.nc.Close()
	r.dev.close()
	r.wg.Wait()
}

// Health is nil while the bus is connected.
func (r *Router) Health() error {
	if s := r.nc.Status(); s != natsgo.CONNECTED {
		return fmt.Errorf("bus: NATS %s", strings.ToLower(s.String()))
	}
	if !r.dev.connected() {
		return errors.New("bus: NATS device connection down")
	}
	return nil
}

func (r *Router) deviceSubject(id string) string { return r.prefix + ".d." + id }

// subjectSafe reports whether id can be one token of a subject. Herald's
// registration IDs are base64url and always can; the check keeps an odd
// ID from subscribing to a wildcard.
func subjectSafe(id string) bool {
	return id != "" && !strings.ContainsAny(id, ".*> \t\r\n")
}

// Attach implements router.Router. The subscription to the device's
// subject is confirmed by the bus before Attach returns, so that a push
// committed after the caller's first inbox read is certain to ring here.
// While the bus is down the session is kept all the same: it reads its
// inbox when the bus returns.
func (r *Router) Attach(ctx context.Context, d *push.Device, s session.Session, exclusive bool) error {
	at := time.Now().UnixNano()
	r.mu.Lock()
	if r.hub.Add(d, s, exclusive) && subjectSafe(d.ID) {
		// While the connection is down this fails; the reconnection
		// subscribes for every device the hub holds.
		r.dev.subscribe(d.ID)
	}
	r.mu.Unlock()
	if exclusive {
		r.hub.TakeOver(d.ID, s, at)
		r.publish(r.deviceSubject(d.ID), &envelope{Kind: kindTakeOver, At: at})
	}
	if err := r.flush(ctx); err != nil {
		r.log.Debug("bus: attach not confirmed; the session reads its inbox when the bus returns", "device", d.ID, "err", err)
	}
	return nil
}

// flush waits until the bus has seen everything sent so far on the
// device connection.
func (r *Router) flush(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.dev.flush(fctx)
}

// Detach implements router.Router.
func (r *Router) Detach(d *push.Device, s session.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hub.Remove(d, s) && subjectSafe(d.ID) {
		r.dev.unsubscribe(d.ID)
	}
}

// Route implements router.Router: this node's sessions at once, other
// nodes' through the bus (a fan-out message once to every node, a direct
// one once per target, to the nodes holding it).
func (r *Router) Route(m *push.Message, targets []string) {
	r.local.Route(m, targets)
	if m.Fanout() {
		r.publish(r.prefix+".fan", &envelope{Kind: kindMessage, Msg: toWire(m), Targets: targets})
		return
	}
	body, err := json.Marshal(&envelope{Kind: kindMessage, Node: r.node, Msg: toWire(m), Sent: time.Now().UnixNano()})
	if err != nil {
		r.log.Error("bus: encoding a message", "msg", m.ID, "err", err)
		return
	}
	for _, id := range targets {
		if subjectSafe(id) && r.dev.publish(r.deviceSubject(id), body) == nil {
			r.opts.Metrics.BusPublished(kindMessage)
		}
	}
}

// Acked implements router.Router.
func (r *Router) Acked(ctx context.Context, device string, ids []string) error {
	r.publish(r.deviceSubject(device), &envelope{Kind: kindAcked, IDs: ids})
	return r.local.Acked(ctx, device, ids)
}

// Changed implements router.Router.
func (r *Router) Changed(d *push.Device) {
	r.local.Changed(d)
	r.publish(r.deviceSubject(d.ID), &envelope{Kind: kindChanged, Device: deviceToWire(d)})
}

// Deleted implements router.Router.
func (r *Router) Deleted(id string) {
	r.local.Deleted(id)
	r.publish(r.deviceSubject(id), &envelope{Kind: kindDeleted})
}

// presenceTimeout bounds the wait for another node to say it holds a
// device; a node that holds it answers within a round trip.
const presenceTimeout = 250 * time.Millisecond

// Online implements router.Router: this node's hub, else a request on the
// device's subject, which NATS answers "no responders" at once when no
// node holds the device. A bus that does not answer counts as offline, so
// that an own_first push is relayed rather than held back. The requests go
// out side by side: each is a round trip.
func (r *Router) Online(ctx context.Context, ids []string) []bool {
	out := make([]bool, len(ids))
	var ask []int
	for i, id := range ids {
		if out[i] = r.hub.Online(id); !out[i] && subjectSafe(id) {
			ask = append(ask, i)
		}
	}
	if len(ask) == 0 || r.nc.Status() != natsgo.CONNECTED {
		return out
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(presenceWorkers, len(ask)) {
		wg.Go(func() {
			for i := range next {
				out[i] = r.elsewhere(ctx, ids[i])
			}
		})
	}
	for _, i := range ask {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// presenceBody is every presence request: it names nothing but its kind.
var presenceBody, _ = json.Marshal(&envelope{Kind: kindPresence})

// presenceWorkers bounds the presence requests in flight for one Online.
const presenceWorkers = 32

// elsewhere asks the bus whether another node holds device id.
func (r *Router) elsewhere(ctx context.Context, id string) bool {
	rctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	_, err := r.nc.RequestWithContext(rctx, r.deviceSubject(id), presenceBody)
	if err != nil && !errors.Is(err, natsgo.ErrNoResponders) {
		r.log.Debug("bus: presence request", "device", id, "err", err)
	}
	return err == nil
}

func (r *Router) publish(subject string, e *envelope) {
	e.Node, e.Sent = r.node, time.Now().UnixNano()
	body, err := json.Marshal(e)
	if err != nil {
		r.log.Error("bus: encoding", "kind", e.Kind, "err", err)
		return
	}
	// What cannot be sent while the bus is down is lost to the other
	// nodes; their sessions catch up on the recheck their reconnection
	// starts.
	if strings.HasPrefix(subject, r.prefix+".d.") {
		err = r.dev.publish(subject, body)
	} else {
		err = r.nc.Publish(subject, body)
	}
	if err != nil {
		r.log.Debug("bus: publish", "subject", subject, "err", err)
		return
	}
	r.opts.Metrics.BusPublished(e.Kind)
}

// busMsg is a message of the device connection.
type busMsg struct {
	subject, reply string
	data           []byte
}

// dispatch applies what other nodes publish to this node's sessions, in
// the order the bus delivers it.
func (r *Router) dispatch() {
	for {
		select {
		case <-r.done:
			return
		case msg := <-r.in:
			r.apply(msg.Subject, msg.Reply, msg.Data)
		case msg := <-r.devIn:
			r.apply(msg.subject, msg.reply, msg.data)
		}
	}
}

func (r *Router) apply(subject, reply string, data []byte) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		r.log.Warn("bus: dropping what cannot be decoded", "subject", subject, "err", err)
		return
	}
	var sent time.Time
	if e.Sent > 0 {
		sent = time.Unix(0, e.Sent)
	}
	r.opts.Metrics.BusReceived(e.Kind, sent)
	if subject == r.prefix+".fan" {
		if e.Kind == kindMessage && e.Msg != nil {
			r.hub.Deliver(e.Msg.message(), e.Targets)
		}
		return
	}
	id, ok := strings.CutPrefix(subject, r.prefix+".d.")
	if !ok {
		return
	}
	switch e.Kind {
	case kindMessage:
		if e.Msg != nil {
			r.hub.Deliver(e.Msg.message(), []string{id})
		}
	case kindAcked:
		// A refill reads the store: not on the dispatcher, which would
		// hold every other node's offers behind it.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := r.hub.Acked(ctx, id, e.IDs); err != nil {
				r.log.Warn("bus: refilling after an ack on another node", "device", id, "err", err)
			}
		}()
	case kindChanged:
		if e.Device != nil && e.Device.ID == id {
			r.hub.Refresh(e.Device.device())
		}
	case kindDeleted:
		r.hub.CloseDevice(id, session.ErrDeviceDeleted)
	case kindTakeOver:
		r.hub.TakeOver(id, nil, e.At)
	case kindPresence:
		if reply != "" && r.hub.Online(id) {
			r.dev.publish(reply, []byte("1"))
		}
	}
}

func (r *Router) disconnected(_ *natsgo.Conn, err error) {
	r.log.Warn("bus: disconnected from NATS; reconnecting", "err", err)
}

// reconnected: whatever was published while this node was away is lost
// to it, so every live session reads its inbox.
func (r *Router) reconnected(nc *natsgo.Conn) {
	r.log.Info("bus: reconnected to NATS; live sessions read their inboxes", "server", nc.ConnectedUrlRedacted())
	r.recheckAll("reconnected")
}

func (r *Router) asyncError(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
	if errors.Is(err, natsgo.ErrSlowConsumer) {
		r.log.Warn("bus: messages dropped for a slow dispatcher; live sessions read their inboxes")
		r.recheckAll("slow consumer")
		return
	}
	r.log.Warn("bus: error", "err", err)
}

// recheckWorkers bounds the inbox reads of a recheck of every session, so
// that a reconnection does not put every session's read on the store at
// once.
const recheckWorkers = 16

// recheckAll has every live session read its inbox, once; a call while
// one runs makes it run again when it ends.
func (r *Router) recheckAll(why string) {
	r.again.Store(true)
	if !r.rechecking.CompareAndSwap(false, true) {
		return
	}
	r.wg.Go(func() {
		defer r.rechecking.Store(false)
		for r.again.Swap(false) {
			start := time.Now()
			sessions := r.hub.All()
			r.recheck(sessions)
			r.log.Info("bus: live sessions read their inboxes", "why", why, "sessions", len(sessions), "took", time.Since(start).Round(time.Millisecond))
		}
	})
}

func (r *Router) recheck(sessions []session.Session) {
	work := make(chan session.Session)
	var wg sync.WaitGroup
	for range min(recheckWorkers, len(sessions)) {
		wg.Go(func() {
			for s := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := s.Recheck(ctx); err != nil {
					r.log.Debug("bus: a session's recheck failed", "err", err)
				}
				cancel()
			}
		})
	}
	for _, s := range sessions {
		select {
		case work <- s:
		case <-r.done:
		}
	}
	close(work)
	wg.Wait()
}

// recheckPeriodically has every live session read its inbox once per
// Options.Recheck, spread over the period rather than all at once.
func (r *Router) recheckPeriodically() {
	const chunk = 64
	for {
		sessions := r.hub.All()
		steps := max(1, (len(sessions)+chunk-1)/chunk)
		step := r.opts.Recheck / time.Duration(steps)
		timer := time.NewTimer(step)
		for i := 0; i < steps; i++ {
			select {
			case <-r.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			lo := i * chunk
			if lo < len(sessions) {
				r.recheck(sessions[lo:min(lo+chunk, len(sessions))])
			}
			timer.Reset(step)
		}
		timer.Stop()
	}
}

// Interface guards.
var _ router.Router = (*Router)(nil)
