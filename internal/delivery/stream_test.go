package delivery_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
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
	svc *delivery.Service
	app push.App
	dev push.Device
}

func newFixture(t *testing.T) *fixture {
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(st, time.Now, 10)
	hub := session.NewHub()
	svc := delivery.New(st, reg, router.Local{Hub: hub}, hub, delivery.Options{Limits: push.DefaultLimits()})
	ctx := context.Background()
	app, _, err := reg.CreateApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	dev, _, err := reg.Register(ctx, registry.Registration{AppKey: app.Key, Platform: push.Android})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, app: app, dev: dev}
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
