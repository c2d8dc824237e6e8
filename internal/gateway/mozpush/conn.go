package mozpush

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/webpush"
)

// conn is one Firefox connection. It is the delivery.Sender of its stream.
//
// The reader goroutine runs the protocol: it alone touches the fields
// marked "reader only". The writer, the timer and the stream reach the
// connection through the fields guarded by mu.
type conn struct {
	gw     *Gateway
	ws     *websocket.Conn
	app    string // the app key the connection named; immutable
	remote string // the client's address; immutable

	// id and secret make up the UAID of this connection once it said
	// hello; dev is the device once it exists (at hello for a known UAID,
	// at the first register for a new one). Reader only.
	id, secret string
	dev        *push.Device

	// lastRead is when the last message or pong arrived, in Unix
	// nanoseconds; helloed is set once the hello was answered. The timer
	// reads them: before the hello it is the hello timeout, after it the
	// ping timer.
	lastRead atomic.Int64
	helloed  atomic.Bool
	timer    *time.Timer // set before the first read

	mu sync.Mutex
	// st is the device's stream once attached; guarded by mu.
	st *delivery.Stream
	// drops are IDs of messages that cannot become notifications (pushes
	// that did not come through a Web Push endpoint, such as a
	// broadcast), acknowledged by a goroutine of their own because Send
	// runs under the stream's lock; dropping is set while it runs.
	// Guarded by mu.
	drops    []string
	dropping bool
	// queue holds encoded messages for the writer, in order; writing is
	// set while a writer goroutine runs. Guarded by mu.
	queue   [][]byte
	writing bool
	// Once closing is set, the writer sends what is queued and closes the
	// socket with closeCode and closeText. Guarded by mu.
	closing   bool
	closeCode websocket.StatusCode
	closeText string
}

func (c *conn) serve(ticket *netlimit.Ticket) {
	c.lastRead.Store(time.Now().UnixNano())
	c.timer = time.AfterFunc(time.Hour, c.tick)
	c.timer.Reset(c.gw.opts.HelloTimeout)
	defer c.timer.Stop()
	defer c.detach()
	// The connection's context outlives the handshake request, whose
	// context must not be used after the hijack; it carries only the
	// request's limiter ticket.
	ctx := netlimit.NewContext(context.Background(), ticket)
	for {
		typ, b, err := c.ws.Read(ctx)
		if errors.Is(err, websocket.ErrMessageTooBig) {
			// The library sent the close (1009). Closing now would reset
			// the socket under the unread rest of the message and lose
			// that close; the handshake reads the rest and waits for the
			// client's close, for 5 s at most.
			c.ws.Close(CloseTooBig, "")
			return
		}
		if err != nil {
			c.ws.CloseNow()
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if c.isClosing() {
			continue // wait for the close handshake to finish the read
		}
		if typ != websocket.MessageText {
			c.Close(errBinary)
			continue
		}
		m, err := Decode(b)
		if err == nil {
			err = c.handle(ctx, m)
		}
		if err != nil {
			c.Close(err)
		}
	}
}

var errBinary = errors.New("mozpush: a binary message; the protocol is JSON text")

// handle runs one client message. An error closes the connection.
func (c *conn) handle(ctx context.Context, m Message) error {
	if !c.helloed.Load() {
		if m.Type != TypeHello {
			return protoErr("the first message must be a hello, not %s", m.Type)
		}
		return c.hello(ctx, m)
	}
	switch m.Type {
	case TypeHello:
		return protoErr("a second hello")
	case TypeRegister:
		return c.register(ctx, m)
	case TypeUnregister:
		return c.unregister(ctx, m)
	case TypeAck:
		return c.ack(ctx, m)
	case TypeNack:
		// Firefox acknowledges the message separately; a nack only says
		// the service worker's push handler failed (codes 301–303).
		c.gw.opts.Log.Debug("mozpush: nack", "version", m.Version, "code", m.Code)
	case TypePing:
		c.enqueue(pong)
	case TypeBroadcastSubscribe:
		// Herald has no broadcast services; nothing is ever sent for one.
	}
	return nil
}

// hello identifies the user agent by its UAID, or gives it a new one.
func (c *conn) hello(ctx context.Context, m Message) error {
	if id, secret, ok := parseUAID(m.UAID); ok {
		d, err := c.gw.reg.AuthDevice(ctx, id, secret)
		switch {
		case err == nil && d.App == c.app:
			c.id, c.secret, c.dev = id, secret, &d
		case err == nil || errors.Is(err, registry.ErrUnauthorized):
			// Unknown, deleted, or of another app: a new UAID, as
			// Mozilla's server does. Firefox then drops its old
			// subscriptions and tells their service workers.
		default:
			c.gw.opts.Log.Error("mozpush: device authentication failed", "err", err)
			return errInternal
		}
	}
	if c.dev == nil {
		// The device is stored at the first register: Firefox says
		// hello on every start, with no UAID until it has a subscription,
		// and most of those connections never subscribe.
		c.id, c.secret = push.NewRegistrationID(), push.NewSecret()
	}
	c.enqueue(mustJSON(helloReply{MessageType: TypeHello, UAID: UAID(c.id, c.secret), Status: 200, UseWebPush: true}))
	c.helloed.Store(true)
	// The hello is this protocol's authentication: a new UAID is a
	// registration with the public app key, as POST /v1/devices is, and a
	// Firefox that has nothing subscribed keeps its socket open all the
	// same. Past it the connection leaves the cap on unauthenticated ones.
	netlimit.Authenticated(ctx)
	c.timer.Reset(c.gw.opts.PingInterval)
	if c.dev != nil {
		return c.attach(ctx)
	}
	return nil
}

// attach makes this the device's connection and opens its stream: what
// waits in the inbox follows the hello at once.
func (c *conn) attach(ctx context.Context) error {
	if old := c.gw.track(c); old != nil {
		old.Close(ErrReplaced)
	}
	st, err := c.gw.inbox.AttachExclusive(ctx, c.dev, c, c.gw.opts.Window)
	if err != nil {
		c.gw.opts.Log.Error("mozpush: attaching the device failed", "device", c.dev.ID, "err", err)
		return errInternal
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st = st
	c.startDropperLocked()
	return nil
}

// register creates a Web Push subscription for a channel. Failures are
// answered with a status, as the protocol does, and the connection stays.
func (c *conn) register(ctx context.Context, m Message) error {
	reply := registerReply{MessageType: TypeRegister, ChannelID: m.ChannelID}
	if m.Key != "" {
		if _, err := webpush.DecodeKey(m.Key); err != nil {
			reply.Status = 400 // not a P-256 public key
			c.enqueue(mustJSON(reply))
			return nil
		}
	}
	if c.dev == nil {
		if !c.gw.limit.allow(c.remote, time.Now()) {
			reply.Status = 429 // too many new devices from this address
			c.enqueue(mustJSON(reply))
			return nil
		}
		d, err := c.gw.reg.RegisterWith(ctx, registry.Registration{AppKey: c.app, Platform: push.Web}, c.id, c.secret)
		if err != nil {
			c.gw.opts.Log.Error("mozpush: storing the device failed", "err", err)
			reply.Status = 500
			c.enqueue(mustJSON(reply))
			return nil
		}
		c.dev = &d
		if err := c.attach(ctx); err != nil {
			return err
		}
	}
	// One live subscription per channel: registering a channel again
	// replaces its endpoint.
	err := c.unsubscribe(ctx, m.ChannelID)
	if err == nil {
		var sub webpush.Created
		sub, err = c.gw.wp.Subscribe(ctx, c.dev, m.Key, m.ChannelID)
		reply.PushEndpoint = sub.Endpoint
	}
	switch {
	case err == nil:
		reply.Status = 200
	case errors.Is(err, webpush.ErrTooManySubscriptions):
		reply.Status = 409
	default:
		c.gw.opts.Log.Error("mozpush: subscribing failed", "device", c.dev.ID, "err", err)
		reply.Status = 500
	}
	c.enqueue(mustJSON(reply))
	return nil
}

// unregister revokes a channel's subscription: pushes to its endpoint are
// answered 410 from then on. Unknown channels are no error, as for
// Mozilla's server.
func (c *conn) unregister(ctx context.Context, m Message) error {
	reply := unregisterReply{MessageType: TypeUnregister, ChannelID: m.ChannelID, Status: 200}
	if c.dev != nil {
		if err := c.unsubscribe(ctx, m.ChannelID); err != nil {
			c.gw.opts.Log.Error("mozpush: unsubscribing failed", "device", c.dev.ID, "err", err)
			reply.Status = 500
		}
	}
	c.enqueue(mustJSON(reply))
	return nil
}

// unsubscribe revokes the device's live subscriptions of a channel.
func (c *conn) unsubscribe(ctx context.Context, channelID string) error {
	subs, err := c.gw.wp.Subscriptions(ctx, c.dev)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if strings.EqualFold(sub.Label, channelID) {
			if err := c.gw.wp.Unsubscribe(ctx, c.dev, sub.ID); err != nil && !errors.Is(err, webpush.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// ack takes acknowledged notifications out of the inbox. Every ack code
// does (see AckDelivered).
func (c *conn) ack(ctx context.Context, m Message) error {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st == nil || len(m.Updates) == 0 {
		return nil
	}
	ids := make([]string, len(m.Updates))
	for i, u := range m.Updates {
		ids[i] = u.Version
	}
	if _, err := st.Ack(ctx, ids...); err != nil {
		// Firefox does not send an ack twice; closing makes it reconnect,
		// and the message comes again and is acknowledged again.
		c.gw.opts.Log.Error("mozpush: ack failed", "device", c.dev.ID, "err", err)
		return errInternal
	}
	return nil
}

// tick runs on the timer: before the hello it ends a connection that did
// not say hello in time; after it, it pings the client after PingInterval
// of silence and closes the connection if no pong comes.
func (c *conn) tick() {
	if !c.helloed.Load() {
		c.Close(errNoHello)
		return
	}
	every := c.gw.opts.PingInterval
	if idle := time.Since(time.Unix(0, c.lastRead.Load())); idle < every {
		c.timer.Reset(every - idle)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.gw.opts.PongTimeout)
	defer cancel()
	// Ping waits for the pong, which the reader goroutine takes in.
	if err := c.ws.Ping(ctx); err != nil {
		c.Close(errSilent)
		return
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.timer.Reset(every)
}

// detach ends the connection's part in delivery once the reader is done.
func (c *conn) detach() {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st != nil {
		st.Detach()
	}
	if c.dev != nil {
		c.gw.untrack(c)
	}
}

// Send implements delivery.Sender: it queues m as a notification.
func (c *conn) Send(m *push.Message, redelivery bool) error {
	n, ok := notification(m)
	if !ok {
		// Firefox could do nothing with it: there is no channel for it.
		c.drop(m.ID)
		return nil
	}
	return c.enqueue(mustJSON(n))
}

// notification turns a push that came through a channel's endpoint into
// the notification Firefox expects; ok is false for any other push. Only a
// message addressed to the one device counts, so a provider's broadcast
// that merely looks like a Web Push payload never reaches a channel.
func notification(m *push.Message) (n Notification, ok bool) {
	p, ok := webpush.Decode(m)
	if !ok || m.Fanout() || len(m.Audience.RegistrationIDs) != 1 || !validUUID(p.Label) {
		return Notification{}, false
	}
	n = Notification{MessageType: TypeNotification, ChannelID: p.Label, Version: m.ID, TTL: int64(m.TTL / time.Second)}
	if p.Data != "" {
		// Mozilla's names for the headers decryption needs: the content
		// coding, and for the older aesgcm its two key headers.
		n.Data = p.Data
		n.Headers = map[string]string{}
		for from, to := range map[string]string{"content-encoding": "encoding", "crypto-key": "crypto_key", "encryption": "encryption"} {
			if v := p.Headers[from]; v != "" {
				n.Headers[to] = v
			}
		}
	}
	return n, true
}

func (c *conn) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drops = append(c.drops, id)
	c.startDropperLocked()
}

func (c *conn) startDropperLocked() {
	if c.st != nil && len(c.drops) > 0 && !c.dropping {
		c.dropping = true
		go c.ackDrops()
	}
}

func (c *conn) ackDrops() {
	for {
		c.mu.Lock()
		ids, st := c.drops, c.st
		c.drops = nil
		if len(ids) == 0 {
			c.dropping = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if _, err := st.Ack(context.Background(), ids...); err != nil {
			// They stay in the inbox and are dropped on a later connection.
			c.gw.opts.Log.Error("mozpush: dropping pushes without a channel failed", "err", err)
		}
	}
}

// Close implements delivery.Sender: the writer sends what is queued, then
// closes with the code that reason maps to. It does not block.
func (c *conn) Close(reason error) {
	code, text := closeCode(reason)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, text)
}

func (c *conn) closeLocked(code websocket.StatusCode, text string) {
	if c.closing {
		return
	}
	c.closing, c.closeCode, c.closeText = true, code, text
	c.startWriterLocked()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// maxQueue is how many messages may wait for a slow reader beyond the
// window before the connection is closed: replies and pongs a client
// provokes without reading its socket.
const maxQueue = 64

func (c *conn) enqueue(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	if len(c.queue) >= c.gw.opts.Window+maxQueue {
		c.closeLocked(closeCode(errSlow))
		return errSlow
	}
	c.queue = append(c.queue, b)
	c.startWriterLocked()
	return nil
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.write()
	}
}

// write sends queued messages until none is left, then closes the socket
// if asked to, and returns: no goroutine waits on an idle connection's
// writes.
func (c *conn) write() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			c.writing = false
			closing, code, text := c.closing, c.closeCode, c.closeText
			c.mu.Unlock()
			if closing {
				c.ws.Close(code, text)
			}
			return
		}
		c.mu.Unlock()
		for _, b := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), c.gw.opts.WriteTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.mu.Lock()
				c.closing, c.queue, c.writing = true, nil, false
				c.mu.Unlock()
				c.ws.CloseNow()
				return
			}
		}
	}
}

// Transport implements delivery.Sender.
func (c *conn) Transport() string { return "mozpush" }
