package delivery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/session"
)

// Sender is what a persistent transport (MQTT, WebSocket, SSE, mozpush)
// gives a Stream: a way to put one message on the wire and a way to end the
// connection.
type Sender interface {
	// Send writes m to the device. redelivery is set when m was sent on
	// an earlier connection and not acknowledged (MQTT's DUP flag). Send is
	// called with the stream's lock held, in delivery order, so it must
	// not block on the network for long: transports buffer and write.
	Send(m *push.Message, redelivery bool) error
	// Close ends the connection, telling the device why where the
	// protocol can.
	Close(reason error)
	// Transport names the transport in metrics: mqtt, ws, sse, mozpush.
	Transport() string
}

// Stream delivers a device's inbox over one persistent connection: what
// waits in the store when it opens, then every message routed to the device
// while it is open, at most window unacknowledged at a time. Acks go through
// the stream. Create it with Service.Attach; it is a session.Session.
type Stream struct {
	svc    *Service           // never nil
	dev    *push.Device       // immutable snapshot; the hub keeps its own
	send   Sender             // never nil
	window int                // most messages in flight
	counts *metrics.Transport // this transport's message counters; nil-safe

	mu sync.Mutex
	// inflight holds the IDs sent and not yet acknowledged; guarded by mu.
	// Nil while nothing is in flight, so an idle stream costs no map.
	inflight map[string]struct{}
	// ackedInRead holds the IDs acknowledged while refill reads the inbox;
	// nil otherwise; guarded by mu. The read may have begun before those
	// acks were committed, so it can return messages that have just left
	// inflight: refill must not send them again.
	ackedInRead map[string]struct{}
	// sentSeq and sentDue are the highest Seq and the latest SendAt (Unix
	// ns) of the messages sent on this connection; guarded by mu. An offer
	// above either was certainly not sent yet; one below both may have been
	// (see mayHaveSent).
	sentSeq uint64
	sentDue int64
	backlog bool // a message could not be sent for the window; guarded by mu
	// refilling is set while refill reads the inbox; offers that arrive
	// meanwhile are deferred (deferred is set) and picked up by reading
	// again, so that nothing overtakes an older message being read.
	refilling bool // guarded by mu
	deferred  bool // guarded by mu
	kicked    bool // a refillDetached is on its way; guarded by mu
	closed    bool // guarded by mu
}

// Attach opens a stream for device d: it registers it with the router (so
// no push is missed) and then sends what already waits, up to window.
func (s *Service) Attach(ctx context.Context, d *push.Device, send Sender, window int) (*Stream, error) {
	return s.attach(ctx, d, send, window, false)
}

// AttachExclusive is Attach for a transport that allows a device one
// connection (MQTT: one per client ID): the device's other exclusive
// streams, on this node and every other, are closed with
// session.ErrTakenOver.
func (s *Service) AttachExclusive(ctx context.Context, d *push.Device, send Sender, window int) (*Stream, error) {
	return s.attach(ctx, d, send, window, true)
}

func (s *Service) attach(ctx context.Context, d *push.Device, send Sender, window int, exclusive bool) (*Stream, error) {
	st := &Stream{svc: s, dev: d, send: send, window: max(window, 1), counts: s.metrics.Transport(send.Transport())}
	if err := s.router.Attach(ctx, d, st, exclusive); err != nil {
		return nil, err
	}
	s.metrics.Attached(send.Transport())
	if err := st.refill(ctx); err != nil {
		st.Detach()
		return nil, err
	}
	return st, nil
}

// Device returns the stream's device.
func (st *Stream) Device() *push.Device { return st.dev }

// Offer implements session.Session: send m now if the window allows, else
// remember to read the inbox when acks open the window.
func (st *Stream) Offer(m *push.Message) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	if _, sent := st.inflight[m.ID]; sent {
		return
	}
	if st.refilling {
		st.deferred = true
		return
	}
	// When m may have been sent already (a read of the inbox sent it and
	// the device acknowledged it before this offer came, or m is older
	// than what was sent and was never read), only the inbox can tell:
	// read it, as for a message held back by the window.
	if st.mayHaveSent(m) || len(st.inflight) >= st.window || st.backlog {
		st.backlog = true
		if len(st.inflight) < st.window && !st.kicked {
			// There is room, so no ack needs to come first: read now,
			// without making the broadcast that offers m wait for the
			// store.
			st.kicked = true
			go st.refillDetached()
		}
		return
	}
	st.sendLocked(m, st.svc.wasSent(st.dev.ID, m.ID))
}

// mayHaveSent reports whether m, not in flight, may already have been sent
// on this connection and acknowledged. Offers lag behind the store (the
// dispatcher routes each message after it is durable, and a broadcast's
// fan-out takes time), so a stream that read the inbox at attach or on an
// ack may be offered, afterwards, messages that read returned. A message
// with a higher Seq or a later SendAt than every message sent cannot be one
// of them. A message that is never live (a TTL of 0) is never in a read,
// and is offered once, so it cannot have been sent either.
//
// mu must be held.
func (st *Stream) mayHaveSent(m *push.Message) bool {
	if !m.ExpiresAt.After(m.SendAt) {
		return false
	}
	return m.Seq <= st.sentSeq && m.SendAt.UnixNano() <= st.sentDue
}

// Close implements session.Session: the hub or the server ends the stream.
func (st *Stream) Close(reason error) {
	st.detach(closeReason(reason))
	st.send.Close(reason)
}

// closeReason is the reason label of herald_disconnects_total for a
// stream the core closes.
func closeReason(err error) string {
	switch {
	case errors.Is(err, session.ErrTakenOver):
		return "taken_over"
	case errors.Is(err, session.ErrShuttingDown):
		return "shutdown"
	case errors.Is(err, session.ErrDeviceDeleted):
		return "deleted"
	}
	return "server"
}

func (st *Stream) sendLocked(m *push.Message, redelivery bool) {
	if err := st.send.Send(m, redelivery); err != nil {
		return // the transport is closing; the message stays in the inbox
	}
	st.counts.Sent(redelivery)
	if st.inflight == nil {
		st.inflight = make(map[string]struct{}, st.window)
	}
	st.inflight[m.ID] = struct{}{}
	st.sentSeq = max(st.sentSeq, m.Seq)
	st.sentDue = max(st.sentDue, m.SendAt.UnixNano())
}

// Ack acknowledges messages the device received. It goes through
// Service.Ack, which also takes the IDs out of this stream's window and
// refills it if pushes were held back.
func (st *Stream) Ack(ctx context.Context, ids ...string) (int, error) {
	return st.svc.AckFrom(ctx, st.send.Transport(), st.dev, ids)
}

// Acked implements session.Session.
func (st *Stream) Acked(ctx context.Context, ids []string) error { return st.acked(ctx, ids) }

// Recheck implements session.Session: offers may have been lost, so read
// the inbox as a new connection would.
func (st *Stream) Recheck(ctx context.Context) error { return st.refill(ctx) }

// acked takes ids out of the window after the store recorded their ack (or
// the service kept it, see keptAcks), and refills the window from the inbox
// if pushes were held back.
func (st *Stream) acked(ctx context.Context, ids []string) error {
	st.mu.Lock()
	for _, id := range ids {
		delete(st.inflight, id)
	}
	if st.refilling {
		if st.ackedInRead == nil {
			st.ackedInRead = make(map[string]struct{}, len(ids))
		}
		for _, id := range ids {
			st.ackedInRead[id] = struct{}{}
		}
	}
	if len(st.inflight) == 0 {
		st.inflight = nil
	}
	refill := st.backlog && len(st.inflight) < st.window && !st.closed
	st.mu.Unlock()
	if refill {
		return st.refill(ctx)
	}
	return nil
}

// refill reads the inbox and sends what is not in flight, up to the window,
// in inbox (acceptance) order. The read happens outside the lock; pushes
// offered meanwhile are deferred, and if any were, the inbox is read again:
// they are durable, so the next read has them in their place.
func (st *Stream) refill(ctx context.Context) error {
	for {
		st.mu.Lock()
		st.kicked = false // whatever a detached refill would read, this one reads
		if st.refilling || st.closed {
			// Another refill is reading; it will see what we would.
			st.deferred = true
			st.mu.Unlock()
			return nil
		}
		st.backlog, st.deferred = false, false
		room := st.window - len(st.inflight)
		want := room + len(st.inflight)
		if room <= 0 {
			st.backlog = true
			st.mu.Unlock()
			return nil
		}
		st.refilling = true
		st.mu.Unlock()

		msgs, err := st.svc.Pending(ctx, st.dev, want)

		st.mu.Lock()
		st.refilling = false
		acked := st.ackedInRead
		st.ackedInRead = nil
		if err != nil || st.closed {
			st.backlog = true
			st.mu.Unlock()
			return err
		}
		full := false
		for i := range msgs {
			m := &msgs[i]
			if _, sent := st.inflight[m.ID]; sent {
				continue
			}
			if _, gone := acked[m.ID]; gone {
				continue // sent, then acknowledged while we read
			}
			if len(st.inflight) >= st.window {
				full = true
				break
			}
			st.sendLocked(m, st.svc.wasSent(st.dev.ID, m.ID))
		}
		// There may be more than we asked for. With the window full, the
		// next ack reads again; with room left (what we skipped was
		// acknowledged meanwhile, and the next read no longer has it), or
		// with offers deferred, read again now.
		more := full || len(msgs) == want
		again := (st.deferred || more) && len(st.inflight) < st.window
		st.backlog = !again && (more || st.deferred)
		st.mu.Unlock()
		if !again {
			return nil
		}
	}
}

// refillDetached refills from a goroutine of its own, for an offer that
// must not wait for the store. It also retries a read that failed while
// nothing was in flight, which no ack would retry.
func (st *Stream) refillDetached() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.refill(ctx); err != nil {
		st.svc.log.Error("delivery: reading the inbox for a live stream", "device", st.dev.ID, "err", err)
	}
}

// Detach unregisters the stream and remembers what was in flight, so that
// the next connection marks those messages as redeliveries.
func (st *Stream) Detach() { st.detach("closed") }

// detach is Detach, counted in herald_disconnects_total under reason:
// "closed" when the transport ended the connection (the device left, the
// network broke, the gateway's own limits), else why the core closed it.
func (st *Stream) detach(reason string) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	inflight := st.inflight
	st.inflight = nil
	st.mu.Unlock()
	st.svc.router.Detach(st.dev, st)
	st.svc.metrics.Detached(st.send.Transport(), reason)
	st.svc.rememberSent(st.dev.ID, inflight)
}

// sentLedger remembers, per device, messages sent on a connection that
// ended before they were acknowledged. It is bounded: past its size the
// oldest device is forgotten, which only costs a redelivery flag.
type sentLedger struct {
	// devices mirrors len(byDev), so that the hot path (every offer of a
	// broadcast asks wasSent) skips the lock while the ledger is empty.
	devices atomic.Int64

	mu     sync.Mutex
	byDev  map[string]map[string]struct{} // guarded by mu
	order  []string                       // devices, oldest first; guarded by mu
	maxDev int
}

func (s *Service) rememberSent(dev string, ids map[string]struct{}) {
	if len(ids) == 0 {
		return
	}
	l := &s.sent
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byDev == nil {
		l.byDev = make(map[string]map[string]struct{})
		l.maxDev = 100_000
	}
	set := l.byDev[dev]
	if set == nil {
		set = make(map[string]struct{}, len(ids))
		l.byDev[dev] = set
		l.order = append(l.order, dev)
	}
	for id := range ids {
		set[id] = struct{}{}
	}
	for len(l.order) > l.maxDev {
		delete(l.byDev, l.order[0])
		l.order = l.order[1:]
	}
	l.devices.Store(int64(len(l.byDev)))
}

func (s *Service) wasSent(dev, id string) bool {
	l := &s.sent
	if l.devices.Load() == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.byDev[dev][id]
	return ok
}

func (s *Service) forgetSent(dev string, ids []string) {
	l := &s.sent
	if l.devices.Load() == 0 {
		return // every ack asks; most find nothing to forget
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	set := l.byDev[dev]
	if set == nil {
		return
	}
	for _, id := range ids {
		delete(set, id)
	}
	if len(set) == 0 {
		delete(l.byDev, dev)
		l.devices.Store(int64(len(l.byDev)))
		// order keeps the stale entry; it falls off the front in time.
	}
}
