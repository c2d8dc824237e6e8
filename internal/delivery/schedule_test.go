package delivery_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// The scheduler's tests run in a synctest bubble: its clock is the timers'
// clock, so a message due in an hour is checked to the nanosecond without
// waiting, against the real store.

// clockWire records what a stream sent and when.
type clockWire struct {
	mu   sync.Mutex
	sent []string
	at   []time.Time
}

func (w *clockWire) Send(m *push.Message, _ bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent = append(w.sent, m.ID)
	w.at = append(w.at, time.Now())
	return nil
}

func (w *clockWire) Close(error) {}

func (w *clockWire) take() ([]string, []time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, a := w.sent, w.at
	w.sent, w.at = nil, nil
	return s, a
}

// node is one run of a service on a data directory: what a restart ends.
type node struct {
	t    *testing.T
	st   *embedded.Store
	reg  *registry.Registry
	svc  *delivery.Service
	stop context.CancelFunc
	ran  chan struct{}
}

// start opens dir and runs a service on it. It must be called inside the
// bubble, and the node stopped there.
func start(t *testing.T, dir string) *node {
	t.Helper()
	st, err := embedded.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, time.Now, 10)
	hub := session.NewHub()
	svc := delivery.New(st, reg, router.Local{Hub: hub}, delivery.Options{
		Limits: push.DefaultLimits(), SweepInterval: time.Minute, ReportRetain: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, st: st, reg: reg, svc: svc, stop: cancel, ran: make(chan struct{})}
	go func() { svc.Run(ctx); close(n.ran) }()
	return n
}

func (n *node) close() {
	n.stop()
	<-n.ran
	if err := n.st.Close(); err != nil {
		n.t.Errorf("close store: %v", err)
	}
}

func (n *node) setup() (push.App, push.Device) {
	n.t.Helper()
	ctx := context.Background()
	app, _, err := n.reg.CreateApp(ctx, "a")
	if err != nil {
		n.t.Fatal(err)
	}
	dev, _, err := n.reg.Register(ctx, registry.Registration{AppKey: app.Key, Platform: push.Android, Tags: []string{"news"}})
	if err != nil {
		n.t.Fatal(err)
	}
	return app, dev
}

// pushAt accepts a push due at at (now when zero) and returns its ID.
func (n *node) pushAt(app push.App, aud *push.Audience, at time.Time, edit ...func(*push.Request)) string {
	n.t.Helper()
	req := &push.Request{Audience: aud, Message: []byte(`1`)}
	if !at.IsZero() {
		req.Options.SendAt = &at
	}
	for _, e := range edit {
		e(req)
	}
	res, err := n.svc.Push(context.Background(), app, req)
	if err != nil {
		n.t.Fatalf("Push: %v", err)
	}
	return res.MsgID
}

func (n *node) attach(dev push.Device) (*delivery.Stream, *clockWire) {
	n.t.Helper()
	w := &clockWire{}
	st, err := n.svc.Attach(context.Background(), &dev, w, 1000)
	if err != nil {
		n.t.Fatal(err)
	}
	return st, w
}

// waitUntil sleeps in the bubble until t, then lets everything that woke
// run to a standstill.
func waitUntil(t time.Time) {
	time.Sleep(time.Until(t))
	synctest.Wait()
}

func wantSent(t *testing.T, w *clockWire, at time.Time, ids ...string) {
	t.Helper()
	sent, when := w.take()
	if !slices.Equal(sent, ids) {
		t.Fatalf("sent %v at %v, want %v", sent, when, ids)
	}
	for i, got := range when {
		if !at.IsZero() && !got.Equal(at) {
			t.Errorf("%s sent %v after it was due", sent[i], got.Sub(at))
		}
	}
}

func TestScheduledReachesAConnectedDeviceWhenDue(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		n := start(t, dir)
		defer n.close()
		app, dev := n.setup()
		st, w := n.attach(dev)
		defer st.Detach()
		t0 := time.Now()
		direct := n.pushAt(app, &push.Audience{RegistrationIDs: []string{dev.ID}}, t0.Add(10*time.Minute))
		tagged := n.pushAt(app, &push.Audience{Tags: []string{"news"}}, t0.Add(20*time.Minute))
		n.pushAt(app, &push.Audience{Tags: []string{"sport"}}, t0.Add(20*time.Minute)) // not for dev
		zero := n.pushAt(app, &push.Audience{All: true}, t0.Add(30*time.Minute), func(r *push.Request) { ttl := int64(0); r.Options.TTL = &ttl })

		waitUntil(t0.Add(10*time.Minute - time.Nanosecond))
		wantSent(t, w, time.Time{})
		waitUntil(t0.Add(10 * time.Minute))
		wantSent(t, w, t0.Add(10*time.Minute), direct)
		waitUntil(t0.Add(20 * time.Minute))
		wantSent(t, w, t0.Add(20*time.Minute), tagged)
		waitUntil(t0.Add(30 * time.Minute))
		wantSent(t, w, t0.Add(30*time.Minute), zero)
	})
}

// TestScheduledEarlierPushRearms: one timer serves every message, so a push
// due before the one it waits for must move it.
func TestScheduledEarlierPushRearms(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		n := start(t, dir)
		defer n.close()
		app, dev := n.setup()
		st, w := n.attach(dev)
		defer st.Detach()
		t0 := time.Now()
		to := &push.Audience{RegistrationIDs: []string{dev.ID}}
		late := n.pushAt(app, to, t0.Add(2*time.Hour))
		synctest.Wait() // the scheduler now waits for late
		early := n.pushAt(app, to, t0.Add(time.Minute))
		middle := n.pushAt(app, to, t0.Add(time.Hour))
		waitUntil(t0.Add(time.Minute))
		wantSent(t, w, t0.Add(time.Minute), early)
		waitUntil(t0.Add(time.Hour))
		wantSent(t, w, t0.Add(time.Hour), middle)
		waitUntil(t0.Add(2 * time.Hour))
		wantSent(t, w, t0.Add(2*time.Hour), late)
		// A send_at that has passed by the time the push is stored goes out at once.
		now := n.pushAt(app, to, time.Now().Add(time.Nanosecond))
		time.Sleep(time.Microsecond)
		synctest.Wait()
		wantSent(t, w, time.Time{}, now)
	})
}

// TestScheduledSurvivesRestart: a message scheduled before a restart is
// delivered on time to a device connected after it, and one that fell due
// while the node was down is fired at start.
func TestScheduledSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		n := start(t, dir)
		app, dev := n.setup()
		t0 := time.Now()
		to := &push.Audience{RegistrationIDs: []string{dev.ID}}
		whileDown := n.pushAt(app, to, t0.Add(time.Minute))
		afterRestart := n.pushAt(app, to, t0.Add(time.Hour))
		n.close()

		waitUntil(t0.Add(10 * time.Minute))
		n = start(t, dir)
		defer n.close()
		synctest.Wait()
		if due, _, err := n.st.Due(context.Background(), time.Now(), 10); err != nil || len(due) != 0 {
			t.Errorf("Due after start = %v, %v; want the message due while down fired", due, err)
		}
		st, w := n.attach(dev)
		defer st.Detach()
		wantSent(t, w, time.Time{}, whileDown) // from the inbox, as any due message
		waitUntil(t0.Add(time.Hour - time.Nanosecond))
		wantSent(t, w, time.Time{})
		waitUntil(t0.Add(time.Hour))
		wantSent(t, w, t0.Add(time.Hour), afterRestart)
	})
}

// TestScheduledWithdrawnNotSent: a recalled message, and one replaced by a
// newer one with its collapse ID, do not go out when due.
func TestScheduledWithdrawnNotSent(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		n := start(t, dir)
		defer n.close()
		app, dev := n.setup()
		st, w := n.attach(dev)
		defer st.Detach()
		t0 := time.Now()
		collapse := func(r *push.Request) { r.Options.CollapseID = "score" }
		recalled := n.pushAt(app, &push.Audience{All: true}, t0.Add(time.Minute))
		n.pushAt(app, &push.Audience{All: true}, t0.Add(2*time.Minute), collapse)
		n.pushAt(app, &push.Audience{RegistrationIDs: []string{dev.ID}}, t0.Add(2*time.Minute), collapse)
		newer := n.pushAt(app, &push.Audience{All: true}, t0.Add(3*time.Minute), collapse)
		newerDirect := n.pushAt(app, &push.Audience{RegistrationIDs: []string{dev.ID}}, t0.Add(3*time.Minute), collapse)
		if err := n.svc.Recall(context.Background(), app.Key, recalled); err != nil {
			t.Fatal(err)
		}
		waitUntil(t0.Add(2 * time.Minute))
		wantSent(t, w, time.Time{})
		waitUntil(t0.Add(3 * time.Minute))
		wantSent(t, w, t0.Add(3*time.Minute), newer, newerDirect)
	})
}

// TestScheduledManyDueAtOnce: more messages due at one instant than the
// scheduler takes from the store at a time all go out then, in order.
func TestScheduledManyDueAtOnce(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		n := start(t, dir)
		defer n.close()
		app, dev := n.setup()
		st, w := n.attach(dev)
		defer st.Detach()
		at := time.Now().Add(time.Minute)
		var want []string
		for i := range 200 {
			aud := &push.Audience{All: true}
			if i%2 == 0 {
				aud = &push.Audience{RegistrationIDs: []string{dev.ID}}
			}
			want = append(want, n.pushAt(app, aud, at))
		}
		waitUntil(at)
		sent, _ := w.take()
		if !slices.Equal(sent, want) {
			t.Fatalf("sent %d messages at their due time, want %d in acceptance order\ngot  %v\nwant %v", len(sent), len(want), sent, want)
		}
		if due, next, err := n.st.Due(context.Background(), time.Now(), 1); err != nil || len(due) != 0 || !next.IsZero() {
			t.Errorf("Due after firing = %v, next %v, %v; want nothing left", due, next, err)
		}
	})
}

func (w *clockWire) Transport() string { return "test" }
