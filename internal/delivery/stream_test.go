package delivery_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// wire records what a stream put on the wire, as a transport would.
type wire struct {
	mu      sync.Mutex
	sent    []string
	redeliv []bool
	closed  error
}

func (w *wire) Send(m *push.Message, redelivery bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent = append(w.sent, m.ID)
	w.redeliv = append(w.redeliv, redelivery)
	return nil
}

func (w *wire) Close(reason error) {
	w.mu.Lock()
	w.closed = reason
	w.mu.Unlock()
}

func (w *wire) take() ([]string, []bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, r := w.sent, w.redeliv
	w.sent, w.redeliv = nil, nil
	return s, r
}

type fixture struct {
	svc   *delivery.Service
	reg   *registry.Registry
	store *gatedStore
	app   push.App
	dev   push.Device
}

func newFixture(t *testing.T) *fixture { return newFixtureRouting(t, nil) }

// newFixtureRouting builds the fixture with r as the router; nil routes to
// the service's hub.
func newFixtureRouting(t *testing.T, r router.Router) *fixture {
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gs := &gatedStore{Store: st}
	reg := registry.New(gs, time.Now, 10)
	hub := session.NewHub()
	if r == nil {
		r = router.Local{Hub: hub}
	}
	svc := delivery.New(gs, reg, r, delivery.Options{Limits: push.DefaultLimits()})
	ctx := context.Background()
	app, _, err := reg.CreateApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	dev, _, err := reg.Register(ctx, registry.Registration{AppKey: app.Key, Platform: push.Android})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, reg: reg, store: gs, app: app, dev: dev}
}

// gatedStore is the real store with a hook after each inbox read, so that
// a test can make something happen between a read and its result reaching
// the stream, as a slow disk or a busy scheduler would.
type gatedStore struct {
	store.Store
	afterPending atomic.Pointer[func([]push.Message)]
	reads        atomic.Int64
}

func (g *gatedStore) Pending(ctx context.Context, d *push.Device, now time.Time, limit, maxBytes int) ([]push.Message, error) {
	g.reads.Add(1)
	msgs, err := g.Store.Pending(ctx, d, now, limit, maxBytes)
	if hook := g.afterPending.Load(); hook != nil && err == nil {
		(*hook)(msgs)
	}
	return msgs, err
}

// push accepts a message and returns once it has been offered to the
// live sessions (routing is asynchronous).
func (f *fixture) push(t *testing.T, aud *push.Audience) string {
	t.Helper()
	res, err := f.svc.Push(context.Background(), f.app, &push.Request{Audience: aud, Message: []byte(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Sync()
	return res.MsgID
}

func TestStreamDrainsThenDeliversLiveWithinWindow(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	to := &push.Audience{RegistrationIDs: []string{f.dev.ID}}
	waiting := []string{f.push(t, to), f.push(t, &push.Audience{All: true}), f.push(t, to)}

	w := &wire{}
	st, err := f.svc.Attach(ctx, &f.dev, w, 2)
	if err != nil {
		t.Fatal(err)
	}
	if sent, _ := w.take(); !slices.Equal(sent, waiting[:2]) {
		t.Fatalf("attach sent %v, want the first two waiting %v (window 2)", sent, waiting[:2])
	}
	live := f.push(t, to) // the window is full: held back, not lost
	if sent, _ := w.take(); len(sent) != 0 {
		t.Fatalf("sent %v past a full window", sent)
	}
	if n, err := st.Ack(ctx, waiting[0], waiting[1]); err != nil || n != 2 {
		t.Fatalf("Ack = %d, %v", n, err)
	}
	if sent, _ := w.take(); !slices.Equal(sent, []string{waiting[2], live}) {
		t.Fatalf("after acks sent %v, want %v", sent, []string{waiting[2], live})
	}
	st.Ack(ctx, waiting[2], live)
	now := f.push(t, &push.Audience{All: true})
	if sent, _ := w.take(); !slices.Equal(sent, []string{now}) {
		t.Fatalf("a live push with room in the window: sent %v, want [%s]", sent, now)
	}
	st.Detach()
	after := f.push(t, to)
	if sent, _ := w.take(); len(sent) != 0 {
		t.Fatalf("a detached stream sent %v", sent)
	}

	// The unacknowledged message comes again on the next stream, marked as a
	// redelivery; the one never sent is not.
	w2 := &wire{}
	st2, err := f.svc.Attach(ctx, &f.dev, w2, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Detach()
	sent, redelivered := w2.take()
	if !slices.Equal(sent, []string{now, after}) || !slices.Equal(redelivered, []bool{true, false}) {
		t.Fatalf("second stream sent %v with redelivery %v, want [%s %s] with [true false]", sent, redelivered, now, after)
	}
}

// An ack that does not come through the stream (an SSE device posts its
// acks) still opens the stream's window.
func TestStreamWindowRefillsOnAckFromElsewhere(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	to := &push.Audience{RegistrationIDs: []string{f.dev.ID}}
	first := f.push(t, to)
	w := &wire{}
	st, err := f.svc.Attach(ctx, &f.dev, w, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Detach()
	w.take()
	second := f.push(t, to)
	if sent, _ := w.take(); len(sent) != 0 {
		t.Fatalf("sent %v past a full window", sent)
	}
	if n, err := f.svc.Ack(ctx, &f.dev, []string{first}); err != nil || n != 1 {
		t.Fatalf("Service.Ack = %d, %v", n, err)
	}
	if sent, _ := w.take(); !slices.Equal(sent, []string{second}) {
		t.Fatalf("after an ack through the service sent %v, want [%s]", sent, second)
	}
}

// An offer that trails the inbox read which already sent the message, and
// the device's ack of it, does not send the message again: the dispatcher
// routes a message after it is durable, so a device that attaches in
// between reads it from its inbox and is offered it afterwards.
func TestStreamOfferAfterReadAndAckDoesNotResend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	to := &push.Audience{RegistrationIDs: []string{f.dev.ID}}
	older := f.push(t, to)
	res, err := f.svc.Push(ctx, f.app, &push.Request{Audience: to, Message: []byte(`2`)})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Sync()
	// The message as the dispatcher holds it, to offer it late.
	msgs, err := f.svc.Pending(ctx, &f.dev, 10)
	if err != nil || len(msgs) != 2 || msgs[1].ID != res.MsgID {
		t.Fatalf("Pending = %v, %v", msgs, err)
	}
	late := msgs[1]

	w := &wire{}
	st, err := f.svc.Attach(ctx, &f.dev, w, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Detach()
	if sent, _ := w.take(); !slices.Equal(sent, []string{older, late.ID}) {
		t.Fatalf("attach sent %v, want [%s %s]", sent, older, late.ID)
	}
	if n, err := st.Ack(ctx, older, late.ID); err != nil || n != 2 {
		t.Fatalf("Ack = %d, %v", n, err)
	}
	st.Offer(&late)
	// A newer message is still sent at once.
	newer := f.push(t, to)
	waitFor(t, "the newer message", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.sent) > 0
	})
	if sent, _ := w.take(); !slices.Equal(sent, []string{newer}) {
		t.Fatalf("after the late offer sent %v, want only the newer [%s]", sent, newer)
	}
}

// A message acknowledged while a refill reads the inbox, by a read that
// began before the ack was committed, is not sent again.
func TestStreamAckDuringRefillDoesNotResend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	to := &push.Audience{RegistrationIDs: []string{f.dev.ID}}
	ids := []string{f.push(t, to), f.push(t, to), f.push(t, to)}
	w := &wire{}
	st, err := f.svc.Attach(ctx, &f.dev, w, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Detach()
	if sent, _ := w.take(); !slices.Equal(sent, ids[:2]) {
		t.Fatalf("attach sent %v, want %v", sent, ids[:2])
	}
	// The ack of the first opens the window; the refill it starts reads
	// the second (in flight) and the third. Before that read reaches the
	// stream, the device acknowledges the second.
	var once sync.Once
	hook := func(msgs []push.Message) {
		once.Do(func() {
			if _, err := f.svc.Ack(ctx, &f.dev, []string{ids[1]}); err != nil {
				t.Error(err)
			}
		})
	}
	f.store.afterPending.Store(&hook)
	// The hook acks from inside the refill, on this goroutine: the ack
	// comes through the service, as an SSE device's POST would, while the
	// stream's read is outstanding.
	if _, err := st.Ack(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	f.store.afterPending.Store(nil)
	if sent, _ := w.take(); !slices.Equal(sent, ids[2:]) {
		t.Fatalf("after the acks sent %v, want only %v", sent, ids[2:])
	}
}

// heldRoutes keeps the messages the service routes instead of offering
// them, so that a test offers them in the order it chooses.
type heldRoutes struct {
	router.Local
	mu   sync.Mutex
	msgs []*push.Message
}

func (h *heldRoutes) Route(m *push.Message, _ []string) {
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

// Concurrent pushers can route their messages in the other order than the
// store accepted them: the older one, offered after the newer was sent,
// was never sent, and reaches the device without waiting for an ack.
func TestStreamOlderOfferAfterNewerIsDelivered(t *testing.T) {
	held := &heldRoutes{Local: router.Local{Hub: session.NewHub()}}
	f := newFixtureRouting(t, held)
	ctx := context.Background()
	w := &wire{}
	st, err := f.svc.Attach(ctx, &f.dev, w, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Detach()
	to := &push.Audience{RegistrationIDs: []string{f.dev.ID}}
	for _, body := range []string{`1`, `2`} {
		if _, err := f.svc.Push(ctx, f.app, &push.Request{Audience: to, Message: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	f.svc.Sync()
	held.mu.Lock()
	older, newer := held.msgs[0], held.msgs[1]
	held.mu.Unlock()
	st.Offer(newer)
	st.Offer(older)
	waitFor(t, "both messages", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.sent) >= 2
	})
	if sent, _ := w.take(); !slices.Equal(sent, []string{newer.ID, older.ID}) {
		t.Fatalf("sent %v, want [%s %s] (each once)", sent, newer.ID, older.ID)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// device is a fake connected device for the race tests: it records every
// message its stream sends and acknowledges each one soon after, from
// another goroutine, as a transport's ack workers do.
type device struct {
	svc *delivery.Service
	dev push.Device

	mu    sync.Mutex
	first map[string]int // message ID -> times sent without the redelivery flag
}

func (d *device) Send(m *push.Message, redelivery bool) error {
	d.mu.Lock()
	if !redelivery {
		d.first[m.ID]++
	}
	d.mu.Unlock()
	// Send runs under the stream's lock, so the ack must not wait for it.
	go d.svc.Ack(context.Background(), &d.dev, []string{m.ID})
	return nil
}

func (d *device) Close(error) {}

// received returns how many distinct messages arrived and which arrived
// more than once without the redelivery flag.
func (d *device) received() (distinct int, dups []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, n := range d.first {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	return len(d.first), dups
}

// Devices that connect while broadcasts are being offered, and that
// acknowledge what they get at once, receive each broadcast once: the
// inbox read at attach, the offers racing it and the acks racing both
// never send a message twice on one connection.
func TestStreamNoDuplicatesWhileConnectingDuringBroadcasts(t *testing.T) {
	const (
		connected  = 600 // attached before the broadcasts
		connecting = 600 // attached while they are offered
		broadcasts = 30
		pushers    = 4 // concurrent pushers, so routes may overtake each other
		window     = 8
	)
	f := newFixture(t)
	ctx := context.Background()
	devs := make([]*device, connected+connecting)
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	for i := range devs {
		wg.Go(func() {
			d, _, err := f.reg.Register(ctx, registry.Registration{AppKey: f.app.Key, Platform: push.Android})
			if err != nil {
				errs <- err
				return
			}
			devs[i] = &device{svc: f.svc, dev: d, first: make(map[string]int)}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var streams []*delivery.Stream
	var smu sync.Mutex
	attach := func(d *device) {
		st, err := f.svc.Attach(ctx, &d.dev, d, window)
		if err != nil {
			t.Error(err)
			return
		}
		smu.Lock()
		streams = append(streams, st)
		smu.Unlock()
	}
	for _, d := range devs[:connected] {
		attach(d)
	}
	defer func() {
		for _, st := range streams {
			st.Detach()
		}
	}()

	var next sync.WaitGroup
	work := make(chan int)
	for range pushers {
		next.Go(func() {
			for range work {
				if _, err := f.svc.Push(ctx, f.app, &push.Request{Audience: &push.Audience{All: true}, Message: []byte(`1`)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	joining := make(chan *device)
	for range 16 {
		next.Go(func() {
			for d := range joining {
				attach(d)
			}
		})
	}
	go func() {
		for i := range broadcasts {
			work <- i
		}
		close(work)
	}()
	for _, d := range devs[connected:] {
		joining <- d
	}
	close(joining)
	next.Wait()
	f.svc.Sync()

	deadline := time.Now().Add(20 * time.Second)
	for _, d := range devs {
		for {
			n, _ := d.received()
			if n == broadcasts {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %s received %d of %d broadcasts", d.dev.ID, n, broadcasts)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Every ack committed: nothing is left that could send again.
	for _, d := range devs {
		for {
			msgs, err := f.svc.Pending(ctx, &d.dev, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %s still has %s pending", d.dev.ID, msgs[0].ID)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("%d inbox reads for %d devices", f.store.reads.Load(), len(devs))
	total, affected := 0, 0
	for _, d := range devs {
		if _, dups := d.received(); len(dups) > 0 {
			total += len(dups)
			affected++
		}
	}
	if total > 0 {
		t.Fatalf("%d messages were sent twice without the redelivery flag, to %d of %d devices", total, affected, len(devs))
	}
}

func (w *wire) Transport() string { return "test" }

func (d *device) Transport() string { return "test" }
