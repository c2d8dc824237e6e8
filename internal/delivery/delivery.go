// Package delivery is the path of a push: accept it (validation,
// idempotency), make it durable, hand it to live sessions through the router,
// and serve each device's inbox until it acknowledges or the TTL runs out.
package delivery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/store"
)

// Errors of delivery.
var (
	// ErrNoDevices means an audience of only registration IDs and aliases
	// named no device of the app.
	ErrNoDevices = errors.New("delivery: no such device")
	// ErrNotFound means no such message in the app.
	ErrNotFound = errors.New("delivery: no such message")
)

// Service delivers pushes. Create it with New and start its background work
// with Run.
type Service struct {
	store   store.Store        // never nil
	reg     *registry.Registry // never nil
	router  router.Router      // every effect on live sessions goes through it; never nil
	now     func() time.Time   // never nil
	limits  push.Limits
	log     *slog.Logger
	metrics *metrics.M // nil-safe

	sweepEvery time.Duration
	sharedPoll time.Duration
	retain     time.Duration
	subRetain  time.Duration // how long revoked push subscriptions are kept; 0 keeps them

	sent sentLedger // unacknowledged sends of ended streams, for redelivery flags
	kept keptAcks   // acknowledgements the store could not record yet

	routes chan routed   // accepted messages for the dispatcher
	done   chan struct{} // closed when the service stops

	sched scheduler // the one timer for scheduled messages (schedule.go)
	relay *relayer  // the relay queue (relay.go); nil when relaying is off

	mu     sync.Mutex
	closed bool // guarded by mu
}

// Options configure a Service.
type Options struct {
	Limits        push.Limits
	SweepInterval time.Duration
	ReportRetain  time.Duration
	// SubscriptionRetain is how long the sweep keeps a revoked push
	// subscription (a push to it is answered 410) before it purges it (a
	// push is then answered 404). Zero keeps them for ever.
	SubscriptionRetain time.Duration
	Now                func() time.Time // time.Now when nil
	Log                *slog.Logger     // slog.Default when nil
	Metrics            *metrics.M       // nil: none
	// SharedPoll is, with a store other nodes share, how often the node
	// that fires scheduled messages looks for those the others accepted;
	// zero when the store is this node's alone, which arms its timer
	// itself.
	SharedPoll time.Duration
}

// New returns a delivery service.
func New(s store.Store, reg *registry.Registry, r router.Router, o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	svc := &Service{
		store: s, reg: reg, router: r, now: o.Now, limits: o.Limits, log: o.Log, metrics: o.Metrics,
		sweepEvery: o.SweepInterval, sharedPoll: o.SharedPoll, retain: o.ReportRetain, subRetain: o.SubscriptionRetain,
		sched:  scheduler{timer: newStoppedTimer()},
		routes: make(chan routed, 4096), done: make(chan struct{}),
		kept: keptAcks{wake: make(chan struct{}, 1)},
	}
	o.Metrics.Gauge("herald_dispatch_queue_depth", "Accepted messages waiting for the dispatcher to offer them to live sessions.",
		func() float64 { return float64(len(svc.routes)) })
	go svc.dispatch()
	go svc.retryAcks()
	return svc
}

// routed is an accepted message on its way to live sessions, or (m nil) a
// marker whose synced channel is closed when the dispatcher reaches it.
type routed struct {
	m       *push.Message
	targets []string
	synced  chan struct{}
}

// Sync returns once every message accepted before the call has been
// offered to this node's live sessions (or the service stopped).
func (s *Service) Sync() {
	r := routed{synced: make(chan struct{})}
	select {
	case s.routes <- r:
	case <-s.done:
		return
	}
	select {
	case <-r.synced:
	case <-s.done:
	}
}

// dispatch routes accepted messages, in order, until the service stops.
// Messages still queued then are in the store: devices get them when they
// next read their inbox.
func (s *Service) dispatch() {
	for {
		select {
		case r := <-s.routes:
			if r.m == nil {
				close(r.synced)
				continue
			}
			s.router.Route(r.m, r.targets)
		case <-s.done:
			return
		}
	}
}

// Result is the outcome of one accepted push.
type Result struct {
	MsgID     string   `json:"msg_id"`
	Duplicate bool     `json:"duplicate,omitempty"` // an earlier push had the same idempotency key
	Targeted  int      `json:"targeted"`            // devices with an inbox entry (the explicit audience)
	Unknown   []string `json:"unknown,omitempty"`   // registration IDs and aliases that named no device
	// Fanout is set for a broadcast or tag push: it reaches every device
	// that matches when the device reads, besides the Targeted ones, so
	// Targeted 0 does not mean that it reaches nobody.
	Fanout bool `json:"fanout,omitempty"`
}

// Push accepts one push for app. It returns once the message is durable.
func (s *Service) Push(ctx context.Context, app push.App, req *push.Request) (Result, error) {
	res, errs, err := s.PushBatch(ctx, app, []*push.Request{req})
	if err != nil {
		return Result{}, err
	}
	if errs[0] != nil {
		return Result{}, errs[0]
	}
	return res[0], nil
}

// PushBatch accepts several pushes for app in one durable write. A request
// that is invalid gets its error in errs and the others go on; err is set
// only when nothing could be stored.
func (s *Service) PushBatch(ctx context.Context, app push.App, reqs []*push.Request) (results []Result, errs []error, err error) {
	now := s.now()
	results = make([]Result, len(reqs))
	errs = make([]error, len(reqs))
	batch := make([]store.Accept, 0, len(reqs))
	index := make([]int, 0, len(reqs)) // batch position -> request position
	msgs := make([]*push.Message, len(reqs))
	var explicit []registry.Explicit
	for i, req := range reqs {
		m, err := req.Build(now, s.limits)
		if err != nil {
			errs[i] = err
			continue
		}
		m.ID, m.App = push.NewMessageID(), app.Key
		msgs[i] = m
		if m.Audience.Explicit() {
			explicit = append(explicit, registry.Explicit{Audience: &m.Audience, Platforms: m.Platforms})
		}
	}
	// All the batch's targets in one look-up: one per push was a round
	// trip each to a database.
	resolved, err := s.reg.ResolveAll(ctx, app.Key, explicit)
	if err != nil {
		return nil, nil, err
	}
	for i, m := range msgs {
		if m == nil {
			continue
		}
		var devices []push.Device
		var unknown []string
		if m.Audience.Explicit() {
			devices, unknown = resolved[0].Devices, resolved[0].Unknown
			resolved = resolved[1:]
			if len(devices) == 0 && !m.Fanout() {
				errs[i] = fmt.Errorf("%w: %s", ErrNoDevices, noMatch(m))
				continue
			}
		}
		relays, targets, err := s.relayJobs(ctx, m, devices)
		if err != nil {
			return nil, nil, fmt.Errorf("delivery: channel settings: %w", err)
		}
		results[i] = Result{Targeted: len(devices), Unknown: unknown, Fanout: m.Fanout()}
		batch = append(batch, store.Accept{Msg: m, Targets: targets, Relays: relays})
		index = append(index, i)
	}
	if len(batch) == 0 {
		return results, errs, nil
	}
	accepted, err := s.store.Append(ctx, batch)
	if err != nil {
		return nil, nil, fmt.Errorf("delivery: store: %w", err)
	}
	if s.relay != nil {
		s.relay.poke()
	}
	for j, a := range accepted {
		i := index[j]
		results[i].MsgID, results[i].Duplicate = a.ID, a.Duplicate
		if a.Duplicate {
			continue
		}
		m := batch[j].Msg
		m.Seq = a.Seq
		s.metrics.Pushed(audienceKind(&m.Audience), app.Key, 1)
		s.route(m, batch[j].Targets)
	}
	return results, errs, nil
}

// noMatch says what an explicit audience named that matched no device.
func noMatch(m *push.Message) string {
	var named []string
	if n := len(m.Audience.RegistrationIDs); n > 0 {
		named = append(named, plural(n, "registration ID", "registration IDs"))
	}
	if n := len(m.Audience.Aliases); n > 0 {
		named = append(named, plural(n, "alias", "aliases"))
	}
	msg := "no device of this app"
	if len(m.Platforms) > 0 {
		ps := make([]string, len(m.Platforms))
		for i, p := range m.Platforms {
			ps[i] = string(p)
		}
		msg += " on " + strings.Join(ps, ", ")
	}
	return msg + " matches the " + strings.Join(named, " and ") + " named"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// audienceKind is the audience label of herald_pushes_accepted_total: the
// widest part of a.
func audienceKind(a *push.Audience) string {
	switch {
	case a.All:
		return "broadcast"
	case len(a.Tags) > 0 || len(a.TagAnd) > 0 || len(a.TagNot) > 0:
		return "tag"
	case len(a.Aliases) > 0:
		return "alias"
	}
	return "direct"
}

// route hands m to live sessions now or, if it is scheduled, makes sure the
// scheduler wakes when it is due; the store holds it until then (see
// schedule.go), so nothing of it is kept here.
//
// Routing happens on the dispatcher goroutine, not the caller's: the
// provider's 202 waits for the durable write, never for a broadcast's
// fan-out to thousands of connections. One dispatcher keeps the order in
// which messages were accepted; a full queue makes pushers wait, which is
// the backpressure a slow fan-out should cause.
func (s *Service) route(m *push.Message, targets []string) {
	if m.SendAt.After(m.AcceptedAt) {
		// Even one due by now goes through the store's schedule, which
		// has it: routing it here too would offer it twice.
		s.armAt(m.SendAt)
		return
	}
	s.enqueue(routed{m: m, targets: targets})
}

// enqueue queues r for the dispatcher, unless the service stopped.
func (s *Service) enqueue(r routed) {
	select {
	case s.routes <- r:
	case <-s.done:
	}
}

// Pending returns up to limit messages waiting for device d, oldest first.
func (s *Service) Pending(ctx context.Context, d *push.Device, limit int) ([]push.Message, error) {
	return s.pending(ctx, d, limit, 0)
}

// pending is Pending bounded by bytes as well (store.Store.Pending).
func (s *Service) pending(ctx context.Context, d *push.Device, limit, maxBytes int) ([]push.Message, error) {
	kept := s.kept.of(d.ID)
	if kept == nil {
		return s.store.Pending(ctx, d, s.now(), limit, maxBytes)
	}
	msgs, err := s.store.Pending(ctx, d, s.now(), limit+len(kept), maxBytes)
	return dropKept(msgs, kept, limit), err
}

// Wait returns d's pending messages, waiting up to wait for one to arrive
// when there are none. It wakes as soon as a message is routed to the
// device, not on a timer. Messages with a TTL of 0, which are for devices
// online now and never wait in the inbox, reach a waiting device this way.
// maxBytes bounds the messages' Size as in store.Store.Pending (0: no
// bound).
func (s *Service) Wait(ctx context.Context, d *push.Device, wait time.Duration, limit, maxBytes int) ([]push.Message, error) {
	msgs, err := s.pending(ctx, d, limit, maxBytes)
	if err != nil || len(msgs) > 0 || wait <= 0 {
		return msgs, err
	}
	w := &waiter{wake: make(chan struct{}, 1)}
	if err := s.router.Attach(ctx, d, w, false); err != nil {
		return nil, err
	}
	defer s.router.Detach(d, w)
	// Read again now that offers reach us: a push accepted between the
	// first read and Add would otherwise wait for the timeout.
	if msgs, err = s.pending(ctx, d, limit, maxBytes); err != nil || len(msgs) > 0 {
		return msgs, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.wake:
	case <-timer.C:
		return msgs, nil
	case <-ctx.Done():
		return msgs, nil
	}
	if msgs, err = s.pending(ctx, d, limit, maxBytes); err != nil {
		return nil, err
	}
	now := s.now()
	for _, m := range w.take() {
		if !m.Live(now) && m.TTL == 0 && !m.Recalled && len(msgs) < limit {
			msgs = append(msgs, *m)
		}
	}
	slices.SortFunc(msgs, func(a, b push.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	return msgs, nil
}

// waiter is the session of one long-poll request.
type waiter struct {
	wake chan struct{} // capacity 1: one pending wake-up is enough

	mu      sync.Mutex
	offered []*push.Message // guarded by mu
}

func (w *waiter) Offer(m *push.Message) {
	w.mu.Lock()
	w.offered = append(w.offered, m)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *waiter) Close(error) { w.poke() }

// Acked implements session.Session: a long-poll has no window.
func (w *waiter) Acked(context.Context, []string) error { return nil }

// Recheck implements session.Session: the poll reads the inbox again.
func (w *waiter) Recheck(context.Context) error {
	w.poke()
	return nil
}

func (w *waiter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *waiter) take() []*push.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.offered
}

// Ack acknowledges messages for d and returns how many were newly acked.
// Whatever transport and node the ack came through, d's streams learn of
// it through the router, so that their windows refill: an SSE device,
// whose stream cannot carry acks, acknowledges with POST /v1/inbox/ack,
// perhaps to another node. An ack the store is unavailable for is returned
// as the error, and also kept, counted as acknowledged and retried (see
// keptAcks), since an MQTT device has no answer to its PUBACK.
func (s *Service) Ack(ctx context.Context, d *push.Device, ids []string) (int, error) {
	return s.AckFrom(ctx, "", d, ids)
}

// AckFrom is Ack through transport (mqtt, ws, poll, ...), which
// herald_messages_acked_total counts the acks under.
func (s *Service) AckFrom(ctx context.Context, transport string, d *push.Device, ids []string) (int, error) {
	n, err := s.store.Ack(ctx, d, ids)
	if transport == "" {
		transport = "other"
	}
	s.metrics.Acked(transport, n)
	s.metrics.AppAcked(d.App, n)
	if errors.Is(err, store.ErrUnavailable) {
		s.keepAck(d, ids)
		s.router.Acked(ctx, d.ID, ids)
		return n, err
	}
	if err != nil {
		return n, err
	}
	s.kept.forget(d.ID, ids)
	s.forgetSent(d.ID, ids)
	return n, s.router.Acked(ctx, d.ID, ids)
}

// DeviceChanged tells d's live sessions, on every node, its new tags and
// platform, for fan-out matching.
func (s *Service) DeviceChanged(d *push.Device) { s.router.Changed(d) }

// DeviceDeleted closes the live sessions of device id on every node.
func (s *Service) DeviceDeleted(id string) { s.router.Deleted(id) }

// Recall stops app's message id from reaching any device that has not
// received it yet.
func (s *Service) Recall(ctx context.Context, app, id string) error {
	err := s.store.Recall(ctx, app, id)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// Report is a message's delivery report.
type Report struct {
	MsgID      string    `json:"msg_id"`
	State      string    `json:"state"` // scheduled, pending, delivered (every target acknowledged), expired, recalled or replaced
	AcceptedAt time.Time `json:"accepted_at"`
	SendAt     time.Time `json:"send_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Targeted   int       `json:"targeted"`  // devices the message was for
	Delivered  int       `json:"delivered"` // devices that acknowledged it
	Pending    int       `json:"pending"`   // devices it still waits for
	Expired    int       `json:"expired"`   // devices it expired before reaching
	Recalled   int       `json:"recalled"`  // devices it was recalled before reaching
	Replaced   int       `json:"replaced"`  // devices that got a newer message with its collapse ID instead
	// Channels is the message's outcome per channel: "own" (Herald's
	// connections) and each vendor channel it was relayed on.
	Channels map[string]ChannelReport `json:"channels"`
}

// Report returns the delivery report of app's message id. For a fan-out
// message, targeted counts the app's devices that match it now.
func (s *Service) Report(ctx context.Context, app, id string) (Report, error) {
	m, c, err := s.store.Message(ctx, app, id)
	if errors.Is(err, store.ErrNotFound) {
		return Report{}, ErrNotFound
	}
	if err != nil {
		return Report{}, err
	}
	targeted := c.Targeted
	if m.Fanout() {
		err := s.store.EachDevice(ctx, app, func(d *push.Device) bool {
			if m.For(d) && !slices.Contains(m.Audience.RegistrationIDs, d.ID) {
				targeted++
			}
			return true
		})
		if err != nil {
			return Report{}, err
		}
	}
	return s.reportOf(&m, c, targeted), nil
}

// Run fires scheduled messages when they are due, starting with those the
// store holds from before (due already: at once), and sweeps expired
// messages every sweep interval, until ctx ends. Each of these, and the
// relay queue, runs under a lease of the store, so that nodes sharing one
// run each on one node at a time, and another takes it over when that
// node dies.
func (s *Service) Run(ctx context.Context) {
	defer s.stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.lead(ctx, "schedule", s.schedule) })
	if s.relay != nil {
		wg.Go(func() { s.leadRelay(ctx) })
	}
	if s.sweepEvery > 0 {
		wg.Go(func() { s.lead(ctx, "sweep", s.sweep) })
	}
	<-ctx.Done()
}

// lead runs work whenever this node holds the store's lease name, until
// ctx ends: work's context ends when the lease is lost, and the node then
// waits to take it again.
func (s *Service) lead(ctx context.Context, name string, work func(context.Context)) {
	for ctx.Err() == nil {
		lost, release, err := s.store.Lead(ctx, name)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("cannot take a lease; trying again", "lease", name, "err", err)
				sleep(ctx, 5*time.Second)
			}
			continue
		}
		s.log.Debug("this node leads", "lease", name)
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lost:
				s.log.Warn("a lease was lost; another node may take it", "lease", name)
				cancel()
			case <-lctx.Done():
			}
		}()
		work(lctx)
		cancel()
		release()
	}
}

// sweep purges expired messages every sweep interval until ctx ends.
func (s *Service) sweep(ctx context.Context) {
	tick := time.NewTicker(s.sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n, err := s.store.Sweep(ctx, s.now(), s.retain)
			if err != nil && ctx.Err() == nil {
				s.log.Error("sweep failed", "err", err)
			} else if n > 0 {
				s.metrics.Expired(n)
				s.log.Debug("swept expired messages", "purged", n)
			}
			s.purgeSubscriptions(ctx)
		}
	}
}

// purgeSubscriptions deletes push subscriptions revoked longer ago than
// the retention.
func (s *Service) purgeSubscriptions(ctx context.Context) {
	if s.subRetain <= 0 {
		return
	}
	n, err := s.store.PurgeSubscriptions(ctx, s.now().Add(-s.subRetain))
	if err != nil && ctx.Err() == nil {
		s.log.Error("purging revoked push subscriptions failed", "err", err)
	} else if n > 0 {
		s.log.Debug("purged revoked push subscriptions", "purged", n)
	}
}

func (s *Service) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	s.sched.stop()
}
