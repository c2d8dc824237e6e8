package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/store"
)

// conn is one MQTT connection. The read side (partial, the parse state) is
// touched by one goroutine at a time: from OnData, which the engine never
// runs concurrently for one connection, or, while busy, by the worker
// handling the connection's slow packets (see handOff); the hand-overs
// happen under wmu. What pushes from other goroutines also touch is
// guarded by wmu.
//
// Lock order: a delivery.Stream's lock, then wmu. Nothing holds wmu while
// calling into the stream.
type conn struct {
	gw *Gateway
	nc netpoll.Conn

	// partial holds the bytes of a packet that has not fully arrived; nil
	// between packets, so an idle connection keeps no buffer. While busy
	// it holds everything that arrived since the hand-off, and is guarded
	// by wmu.
	partial []byte
	// connectBy is when CONNECT must have arrived (Unix ns), 0 once it
	// has. The engine's idle timeout restarts on every read, so without it
	// a client trickling one byte at a time could stay unauthenticated.
	connectBy int64

	wmu    sync.Mutex
	dev    *push.Device      // set at CONNECT; guarded by wmu
	stream *delivery.Stream  // set at SUBSCRIBE; guarded by wmu
	pids   map[uint16]string // packet ID -> message ID in flight; nil when none; guarded by wmu

	// The small fields last, packed: this struct is most of what an idle
	// connection costs (TestConnStructSize).
	window    int32  // messages in flight at most; guarded by wmu
	maxOut    uint32 // the client's Maximum Packet Size, 0 for none; guarded by wmu
	nextPID   uint16 // guarded by wmu
	version   byte   // set at CONNECT; written under wmu, read without it by the read side
	subQoS    byte   // granted QoS of the subscription; guarded by wmu
	closed    bool   // guarded by wmu
	busy      bool   // a worker has the read side (handOff); guarded by wmu
	connected bool   // only the read side touches it
}

func (c *conn) deviceID() string {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dev == nil {
		return ""
	}
	return c.dev.ID
}

// Slow packets.
//
// CONNECT (the device's look-up) and SUBSCRIBE (the first read of its
// inbox) wait for the store: with PostgreSQL, a network round trip each,
// during which a poller would serve none of its thousands of other
// connections. So with Options.Offload, at such a packet the poller hands
// the connection's read side to one of the gateway's workers, with the bytes from that packet on,
// and from then until the worker is done it only appends what arrives
// (busy). The worker handles the packets in order, the slow ones where it
// is, and gives the read side back once no more bytes came while it
// worked. A connection's packets are still handled one at a time and in
// order, and its answers written in that order.

// slowPacket reports whether handling a packet of type t waits for the
// store.
func slowPacket(t packet.Type) bool {
	return t == packet.TypeConnect || t == packet.TypeSubscribe
}

// maxHeld bounds what a busy connection may send before its worker is
// done: a device waiting for its CONNACK or SUBACK has little to say (a
// PINGREQ, PUBACKs), and nothing of it is read until then.
func (c *conn) maxHeld() int { return 4 * c.gw.opts.MaxPacketSize }

// onData consumes every complete packet in data (after what was kept of an
// earlier read) and keeps the rest of an incomplete one.
func (c *conn) onData(data []byte) {
	c.wmu.Lock()
	if c.busy {
		if len(c.partial)+len(data) > c.maxHeld() {
			c.wmu.Unlock()
			c.gw.opts.Log.Debug("mqtt: closing a connection that sent too much before its answer", "remote", c.nc.RemoteAddr())
			c.nc.Close()
			return
		}
		c.partial = append(c.partial, data...)
		c.wmu.Unlock()
		return
	}
	c.wmu.Unlock()
	if !c.connected {
		left := time.Duration(c.connectBy - time.Now().UnixNano())
		if left <= 0 {
			c.partial = nil
			c.nc.Close()
			return
		}
		c.nc.SetIdleTimeout(left)
	}
	buf := data
	if c.partial != nil {
		c.partial = append(c.partial, data...)
		buf = c.partial
	}
	buf, slow, ok := c.consume(buf, c.gw.opts.Offload)
	switch {
	case !ok:
		c.partial = nil
		return
	case slow:
		// A copy: buf is the engine's buffer, or a suffix of partial.
		held := append([]byte(nil), buf...)
		c.wmu.Lock()
		c.partial, c.busy = held, true
		c.wmu.Unlock()
		c.gw.handOff(c)
		return
	case len(buf) == 0:
		c.partial = nil
		return
	case len(c.partial) > 0 && &buf[0] == &c.partial[0]:
		return // nothing consumed: partial already holds exactly buf
	}
	// Copy: buf is the engine's buffer, or a suffix of partial that would
	// otherwise pin its consumed prefix. The copy is the size of what
	// arrived, never of what the fixed header claims: a client that
	// announces a 16 KiB CONNECT and sends five bytes of it holds five
	// bytes, however many such clients there are. The appends above grow
	// it as the rest arrives (doubling), so it stays within about twice what
	// arrived and a packet in many small reads is copied a few times, not
	// once per read.
	c.partial = append([]byte(nil), buf...)
}

// consume handles the complete packets at the start of buf and returns
// what is left (an incomplete packet), and ok false once the connection is
// closing. With offload it stops at a slow packet, complete, and returns
// slow true with buf from that packet on.
func (c *conn) consume(buf []byte, offload bool) (rest []byte, slow, ok bool) {
	for len(buf) > 0 {
		fh, n, err := packet.ParseFixedHeader(buf, c.gw.opts.MaxPacketSize)
		if errors.Is(err, packet.ErrNeedMore) {
			break
		}
		if err != nil {
			c.protocolError(err)
			return nil, false, false
		}
		if !c.connected && fh.Type != packet.TypeConnect {
			// Not MQTT, or not a client that follows the protocol:
			// nothing is buffered for it, whatever length it claims.
			c.nc.Close()
			return nil, false, false
		}
		total := n + fh.Remaining
		if len(buf) < total {
			break
		}
		if offload && slowPacket(fh.Type) {
			return buf, true, true
		}
		if !c.handle(fh, buf[n:total]) {
			return nil, false, false
		}
		buf = buf[total:]
	}
	return buf, false, true
}

// work is the worker's side of a hand-off: it handles the held packets
// until no more arrive, then gives the read side back to the poller.
func (c *conn) work() {
	c.wmu.Lock()
	buf := c.partial
	c.partial = nil
	c.wmu.Unlock()
	for {
		rest, _, ok := c.consume(buf, false)
		c.wmu.Lock()
		if !ok {
			// Closing: OnClose follows; nothing more is read.
			c.partial = nil
			c.wmu.Unlock()
			return
		}
		if len(c.partial) == 0 {
			// Nothing came meanwhile: the poller takes over again.
			c.partial = nil
			if len(rest) > 0 {
				c.partial = append([]byte(nil), rest...)
			}
			c.busy = false
			c.wmu.Unlock()
			return
		}
		buf = append(rest, c.partial...)
		c.partial = nil
		c.wmu.Unlock()
	}
}

// handle processes one packet; it returns false once the connection is
// closing.
func (c *conn) handle(fh packet.FixedHeader, body []byte) bool {
	lim := c.gw.limit
	switch fh.Type {
	case packet.TypeConnect:
		if c.connected {
			c.protocolError(&packet.Error{Code: packet.ReasonProtocolError, Msg: "second CONNECT"})
			return false
		}
		return c.connect(fh, body)
	case packet.TypeSubscribe:
		var p packet.Subscribe
		if err := p.Decode(c.version, fh, body, lim); err != nil {
			c.protocolError(err)
			return false
		}
		return c.subscribe(&p)
	case packet.TypePuback:
		var p packet.Puback
		if err := p.Decode(c.version, fh, body, lim); err != nil {
			c.protocolError(err)
			return false
		}
		c.puback(p.PacketID)
		return true
	case packet.TypePingreq:
		return c.write(&packet.Pingresp{})
	case packet.TypeUnsubscribe:
		var p packet.Unsubscribe
		if err := p.Decode(c.version, fh, body, lim); err != nil {
			c.protocolError(err)
			return false
		}
		return c.unsubscribe(&p)
	case packet.TypePublish:
		var p packet.Publish
		if err := p.Decode(c.version, fh, body, lim); err != nil {
			c.protocolError(err)
			return false
		}
		return c.refusePublish(&p)
	case packet.TypeDisconnect:
		var p packet.Disconnect
		p.Decode(c.version, fh, body, lim)
		c.nc.Close()
		return false
	default:
		// PUBREC, PUBREL, PUBCOMP (we never publish at QoS 2, nor accept
		// it), AUTH (no enhanced authentication), server-only packets.
		c.protocolError(&packet.Error{Code: packet.ReasonProtocolError, Msg: "unexpected " + fh.Type.String()})
		return false
	}
}

// protocolError ends the connection for a malformed or forbidden packet:
// a 5.0 client is told the reason code first; 3.1.1 has no way to say it.
func (c *conn) protocolError(err error) {
	code := packet.CodeOf(err)
	if c.connected && c.version == packet.Version5 {
		c.write(&packet.Disconnect{ReasonCode: code})
	}
	c.gw.opts.Log.Debug("mqtt: closing on a bad packet", "remote", c.nc.RemoteAddr(), "reason", code, "err", err)
	c.nc.Close()
}

// write encodes p in the connection's version and writes it; it returns
// false if the connection is gone. Only the poller may call it (it reads
// version without the lock); other goroutines use writeAs.
func (c *conn) write(p packet.Packet) bool { return c.writeAs(p, c.version) }

// writeAs encodes p for version and writes it.
func (c *conn) writeAs(p packet.Packet, version byte) bool {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b, err := p.AppendTo((*bp)[:0], version)
	if err != nil {
		c.gw.opts.Log.Error("mqtt: encoding a packet", "type", p.Type(), "err", err)
		c.nc.Close()
		return false
	}
	*bp = b[:0]
	return c.nc.Write(b) == nil
}

// bufPool lends encode buffers; netpoll copies what it cannot write at
// once, so a buffer goes back as soon as Write returns.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (c *conn) connect(fh packet.FixedHeader, body []byte) bool {
	var p packet.Connect
	err := p.Decode(0, fh, body, c.gw.limit)
	version := p.Version
	if version < packet.Version31 || version > packet.Version5 {
		// An unknown level is answered in 3.1.1 form (return code 1),
		// which every version of the protocol can read (3.1.1 §3.1.2.2).
		version = packet.Version311
	}
	c.wmu.Lock()
	c.version = version
	c.wmu.Unlock()
	if err != nil {
		code := packet.CodeOf(err)
		// Only these refusals have a CONNACK in 3.1.1; otherwise close.
		if version == packet.Version5 || code == packet.ReasonUnsupportedProtocolVersion || code == packet.ReasonClientIdentifierNotValid {
			c.write(&packet.Connack{ReasonCode: code})
		}
		c.nc.Close()
		return false
	}
	refuse := func(code packet.ReasonCode) bool {
		// The client ID is the registration ID, which is no secret; the
		// password never appears.
		c.gw.opts.Log.Info("mqtt: connection refused", "reason", code.String(), "client", p.ClientID, "remote", c.nc.RemoteAddr().String())
		c.write(&packet.Connack{ReasonCode: code})
		c.nc.Close()
		return false
	}
	if p.Properties.AuthenticationMethod != "" {
		return refuse(packet.ReasonBadAuthenticationMethod)
	}
	if p.ClientID == "" {
		return refuse(packet.ReasonClientIdentifierNotValid)
	}
	if len(p.Password) == 0 {
		return refuse(packet.ReasonBadUserNameOrPassword)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := c.gw.reg.AuthDevice(ctx, p.ClientID, string(p.Password))
	switch {
	case errors.Is(err, registry.ErrUnauthorized):
		// A wrong secret and an unknown device look the same, so that
		// the answer does not tell which registration IDs exist.
		return refuse(packet.ReasonBadUserNameOrPassword)
	case err != nil:
		c.gw.opts.Log.Error("mqtt: authenticating a device", "device", p.ClientID, "err", err)
		return refuse(packet.ReasonServerUnavailable)
	}
	if p.Username != "" && p.Username != dev.ID && p.Username != dev.App {
		return refuse(packet.ReasonNotAuthorized)
	}

	// At least a second: a keepalive of 0 would mean no timeout at all.
	maxKA := uint16(max(min(c.gw.opts.MaxKeepAlive/time.Second, 65535), 1))
	ka := p.KeepAlive
	ack := packet.Connack{ReasonCode: packet.ReasonSuccess}
	if ka == 0 || ka > maxKA {
		ka = maxKA
		if c.version == packet.Version5 {
			ack.Properties.ServerKeepAlive = new(ka)
		}
	}
	window := c.gw.opts.Window
	if c.version == packet.Version5 {
		if rm := int(p.Properties.ReceiveMaximum); rm > 0 {
			window = min(window, rm)
		}
		ack.Properties.MaximumQoS = new(byte(1))
		ack.Properties.RetainAvailable = new(false)
		ack.Properties.WildcardSubAvailable = new(false)
		ack.Properties.SubIDAvailable = new(false)
		ack.Properties.SharedSubAvailable = new(false)
		ack.Properties.MaximumPacketSize = uint32(c.gw.opts.MaxPacketSize)
	}

	// The connection lives on with the device in memory; the secret's
	// hash is not needed past this point.
	dev.SecretHash = nil
	c.wmu.Lock()
	c.dev = &dev
	c.maxOut = p.Properties.MaximumPacketSize
	c.window = int32(window)
	c.wmu.Unlock()
	old, ok := c.gw.takeOver(dev.ID, c)
	if !ok {
		return refuse(packet.ReasonServerUnavailable) // shutting down
	}
	if old != nil {
		old.Close(errTakenOver)
	}
	c.wmu.Lock()
	gone := c.closed
	c.wmu.Unlock()
	if gone {
		// Closed while the worker looked the device up: OnClose came
		// before takeOver registered it, so it is for us to unregister.
		c.gw.forget(dev.ID, c)
		return false
	}
	c.connected, c.connectBy = true, 0
	// From here on the connection counts only against its address, not
	// among the unauthenticated ones (netlimit).
	c.nc.Authenticated()
	// Session Present is always 0: subscriptions are not kept between
	// connections (the inbox is, whatever Clean Start says), so a client
	// must subscribe again and learns that here.
	if !c.write(&ack) {
		return false
	}
	// 1.5 × keepalive (spec §3.1.2.10).
	c.nc.SetIdleTimeout(time.Duration(ka) * 1500 * time.Millisecond)
	return true
}

func (c *conn) subscribe(p *packet.Subscribe) bool {
	c.wmu.Lock()
	dev := c.dev
	topic := "devices/" + dev.ID
	ack := packet.Suback{PacketID: p.PacketID, ReasonCodes: make([]packet.ReasonCode, len(p.Subscriptions))}
	attach := false
	for i, s := range p.Subscriptions {
		if s.Filter != topic {
			// 3.1.1 has one failure code (0x80); 5.0 says why.
			ack.ReasonCodes[i] = packet.ReasonUnspecifiedError
			if c.version == packet.Version5 {
				ack.ReasonCodes[i] = packet.ReasonNotAuthorized
			}
			continue
		}
		c.subQoS = min(s.QoS, 1)
		ack.ReasonCodes[i] = packet.ReasonCode(c.subQoS)
		attach = c.stream == nil
	}
	c.wmu.Unlock()
	if !c.write(&ack) {
		return false
	}
	if !attach {
		return true
	}
	// The stream sends what waits in the inbox now, through Send; pushes
	// arriving from here on come the same way.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.wmu.Lock()
	window := int(c.window)
	c.wmu.Unlock()
	st, err := c.gw.inbox.AttachExclusive(ctx, dev, c, window)
	if err != nil {
		c.gw.opts.Log.Error("mqtt: attaching the inbox", "device", dev.ID, "err", err)
		c.Close(err)
		return false
	}
	c.wmu.Lock()
	if c.closed {
		c.wmu.Unlock()
		st.Detach()
		return false
	}
	c.stream = st
	c.wmu.Unlock()
	return true
}

func (c *conn) unsubscribe(p *packet.Unsubscribe) bool {
	c.wmu.Lock()
	topic := "devices/" + c.dev.ID
	var detach *delivery.Stream
	ack := packet.Unsuback{PacketID: p.PacketID, ReasonCodes: make([]packet.ReasonCode, len(p.Filters))}
	for i, f := range p.Filters {
		if f == topic && c.stream != nil {
			detach, c.stream = c.stream, nil
			ack.ReasonCodes[i] = packet.ReasonSuccess
		} else {
			ack.ReasonCodes[i] = packet.ReasonNoSubscriptionExisted
		}
	}
	c.wmu.Unlock()
	// Messages in flight stay in c.pids: a PUBACK that follows the
	// UNSUBSCRIBE still acknowledges its message.
	if detach != nil {
		detach.Detach()
	}
	return c.write(&ack)
}

// refusePublish answers a device's PUBLISH: devices only receive here.
func (c *conn) refusePublish(p *packet.Publish) bool {
	if c.version != packet.Version5 {
		// 3.1.1 has no refusal for a PUBLISH; closing is what it allows.
		c.nc.Close()
		return false
	}
	switch p.QoS {
	case 1:
		return c.write(&packet.Puback{PacketID: p.PacketID, ReasonCode: packet.ReasonNotAuthorized})
	case 2:
		return c.write(&packet.Pubrec{PacketID: p.PacketID, ReasonCode: packet.ReasonNotAuthorized})
	}
	c.protocolError(&packet.Error{Code: packet.ReasonNotAuthorized, Msg: "devices may not publish"})
	return false
}

func (c *conn) puback(pid uint16) {
	c.wmu.Lock()
	id, ok := c.pids[pid]
	if ok {
		delete(c.pids, pid)
		if len(c.pids) == 0 {
			c.pids = nil
		}
	}
	dev := c.dev
	c.wmu.Unlock()
	if ok {
		c.gw.ack(dev, id)
	}
}

// Send implements delivery.Sender: one message as a QoS 1 PUBLISH.
func (c *conn) Send(m *push.Message, redelivery bool) error {
	payload := c.gw.payload(m)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed || c.dev == nil {
		return errClosed
	}
	p := packet.Publish{Topic: "devices/" + c.dev.ID, Payload: payload, QoS: c.subQoS, Dup: redelivery && c.subQoS > 0}
	if c.version == packet.Version5 {
		if left := time.Until(m.ExpiresAt); left > 0 {
			p.Properties.MessageExpiry = new(uint32(left / time.Second))
		}
		p.Properties.PayloadFormat = 1
		p.Properties.ContentType = "application/json"
	}
	if p.QoS > 0 {
		p.PacketID = c.allocPID()
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b, err := p.AppendTo((*bp)[:0], c.version)
	if err != nil {
		return err
	}
	*bp = b[:0]
	if c.maxOut > 0 && len(b) > int(c.maxOut) {
		// The client cannot take it (spec §3.1.2.11.4: discard and act
		// as if delivered): acknowledge it away rather than retry forever.
		c.gw.opts.Log.Warn("mqtt: message larger than the client's maximum packet size; dropped",
			"device", c.dev.ID, "msg", m.ID, "size", len(b), "max", c.maxOut)
		c.gw.ack(c.dev, m.ID)
		return nil
	}
	if err := c.nc.Write(b); err != nil {
		return err
	}
	if p.QoS == 0 {
		// At QoS 0 there is no PUBACK: the write is all the delivery.
		c.gw.ack(c.dev, m.ID)
		return nil
	}
	if c.pids == nil {
		c.pids = make(map[uint16]string, 4)
	}
	c.pids[p.PacketID] = m.ID
	return nil
}

// allocPID returns a packet ID not in flight. wmu must be held.
func (c *conn) allocPID() uint16 {
	for {
		c.nextPID++
		if c.nextPID == 0 {
			c.nextPID = 1
		}
		if _, used := c.pids[c.nextPID]; !used {
			return c.nextPID
		}
	}
}

var errClosed = errors.New("mqtt: connection closed")

// Close implements delivery.Sender (and so session.Session through the
// stream): the core ends the connection, and a 5.0 client is told why.
func (c *conn) Close(reason error) {
	c.wmu.Lock()
	v5 := c.version == packet.Version5 && c.dev != nil && !c.closed
	c.wmu.Unlock()
	if v5 {
		d := &packet.Disconnect{ReasonCode: reasonFor(reason)}
		if d.ReasonCode == packet.ReasonServerShuttingDown && c.gw.opts.ServerReference != "" {
			d.ReasonCode, d.Properties.ServerReference = packet.ReasonUseAnotherServer, c.gw.opts.ServerReference
		}
		c.writeAs(d, packet.Version5)
	}
	c.nc.Close()
}

// detach runs once the connection is closed.
func (c *conn) detach() {
	c.wmu.Lock()
	c.closed = true
	st := c.stream
	c.stream = nil
	c.wmu.Unlock()
	if st != nil {
		st.Detach()
	}
}

// payload returns m's JSON as devices receive it. A broadcast offers the
// same *push.Message to every connection, so the last encoding is kept and
// reused: one encoding per message, not per device.
func (g *Gateway) payload(m *push.Message) []byte {
	if last := g.lastPayload.Load(); last != nil && last.msg == m {
		return last.json
	}
	b, _ := json.Marshal(m.Delivered())
	g.lastPayload.Store(&encoded{msg: m, json: b})
	return b
}

type encoded struct {
	msg  *push.Message
	json []byte
}

// ack acknowledges a message on a pool of goroutines: an ack is a durable
// write, and the engine's pollers must not wait for a disk. Concurrent acks
// share the store's group commit. It never blocks, so it may be called with
// a stream's lock held (from Send).
func (g *Gateway) ack(dev *push.Device, id string) {
	select {
	case g.acks <- ackReq{dev, id}:
	case <-g.done:
		go g.doAck(ackReq{dev, id})
	default:
		go g.doAck(ackReq{dev, id})
	}
}

type ackReq struct {
	dev *push.Device
	id  string
}

func (g *Gateway) ackWorker() {
	for {
		select {
		case r := <-g.acks:
			g.doAck(r)
		case <-g.done:
			return
		}
	}
}

func (g *Gateway) doAck(r ackReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := g.inbox.AckFrom(ctx, "mqtt", r.dev, []string{r.id})
	switch {
	case errors.Is(err, store.ErrUnavailable):
		// Kept and retried by the core; the store logs the fault once.
		g.opts.Log.Debug("mqtt: acknowledging: store unavailable", "device", r.dev.ID, "msg", r.id, "err", err)
	case err != nil:
		g.opts.Log.Error("mqtt: acknowledging", "device", r.dev.ID, "msg", r.id, "err", err)
	}
}

// Transport implements delivery.Sender.
func (c *conn) Transport() string { return "mqtt" }
