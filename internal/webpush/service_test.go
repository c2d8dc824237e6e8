package webpush_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
	"github.com/heraldpush/herald/internal/webpush"
)

var ctx = context.Background()

type fixture struct {
	reg   *registry.Registry
	deliv *delivery.Service
	svc   *webpush.Service
	app   push.App
}

func newFixture(t testing.TB, o webpush.Options) *fixture {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(st, time.Now, 10)
	app, _, err := reg.CreateApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	hub := session.NewHub()
	deliv := delivery.New(st, reg, router.Local{Hub: hub}, delivery.Options{Limits: push.DefaultLimits()})
	if o.BaseURL == "" {
		o.BaseURL = "https://push.example.net"
	}
	return &fixture{reg: reg, deliv: deliv, svc: webpush.New(reg, deliv, o), app: app}
}

func (f *fixture) device(t testing.TB) push.Device {
	t.Helper()
	d, _, err := f.reg.Register(ctx, registry.Registration{AppKey: f.app.Key, Platform: push.Web})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fixture) pending(t *testing.T, d *push.Device) []push.Message {
	t.Helper()
	msgs, err := f.deliv.Pending(ctx, d, 100)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestSubscribeLimitsAndRevoke(t *testing.T) {
	f := newFixture(t, webpush.Options{MaxSubscriptions: 2, BaseURL: "https://push.example.net/herald/"})
	d := f.device(t)
	a, err := f.svc.Subscribe(ctx, &d, "", "one")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Endpoint, "https://push.example.net/herald/wpush/") || len(a.Token) < 22 {
		t.Errorf("endpoint %q: want it under the base URL with a token of at least 128 bits", a.Endpoint)
	}
	if _, err := f.svc.Subscribe(ctx, &d, "", "two"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Subscribe(ctx, &d, "", "three"); !errors.Is(err, webpush.ErrTooManySubscriptions) {
		t.Errorf("third subscription: %v, want ErrTooManySubscriptions", err)
	}
	for _, c := range []struct{ key, label string }{{"nope", ""}, {"", strings.Repeat("l", 129)}, {"", "tab\x01"}} {
		if _, err := f.svc.Subscribe(ctx, &d, c.key, c.label); !errors.Is(err, webpush.ErrBadKey) && !errors.Is(err, webpush.ErrBadLabel) {
			t.Errorf("Subscribe(%q, %q) = %v, want ErrBadKey or ErrBadLabel", c.key, c.label, err)
		}
	}
	// Revoking frees a place; revoking twice is not an error.
	if err := f.svc.Unsubscribe(ctx, &d, a.Token); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Unsubscribe(ctx, &d, a.ID); err != nil {
		t.Errorf("revoking again: %v", err)
	}
	if _, err := f.svc.Subscribe(ctx, &d, "", "three"); err != nil {
		t.Errorf("subscribing after a revocation: %v", err)
	}
	// Another device cannot revoke it by token or ID.
	other := f.device(t)
	b, _ := f.svc.Subscribe(ctx, &other, "", "")
	for _, ref := range []string{b.Token, b.ID} {
		if err := f.svc.Unsubscribe(ctx, &d, ref); !errors.Is(err, webpush.ErrNotFound) {
			t.Errorf("revoking another device's subscription by %q: %v, want ErrNotFound", ref, err)
		}
	}
}

func TestPushToADeletedDeviceIsGone(t *testing.T) {
	f := newFixture(t, webpush.Options{})
	d := f.device(t)
	s, _ := f.svc.Subscribe(ctx, &d, "", "")
	if err := f.reg.Delete(ctx, f.app.Key, d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Push(ctx, s.Token, header("TTL", "60"), nil); !errors.Is(err, webpush.ErrGone) {
		t.Errorf("push to a deleted device: %v, want ErrGone", err)
	}
	if _, err := f.svc.Push(ctx, "unknown", header("TTL", "60"), nil); !errors.Is(err, webpush.ErrNotFound) {
		t.Errorf("push to an unknown token: %v, want ErrNotFound", err)
	}
}

func TestPushMessage(t *testing.T) {
	f := newFixture(t, webpush.Options{MaxTTL: time.Hour})
	d := f.device(t)
	s, _ := f.svc.Subscribe(ctx, &d, "", "scope")
	res, err := f.svc.Push(ctx, s.Token, header("TTL", "7200", "Topic", "t1", "Urgency", "low",
		"Content-Encoding", "aesgcm", "Encryption", "salt=abc", "Crypto-Key", "dh=def"), []byte{0, 1, 2, 255})
	if err != nil {
		t.Fatal(err)
	}
	if res.TTL != time.Hour || res.Location != s.Endpoint+"/messages/"+res.MsgID {
		t.Errorf("Push = %+v: want the TTL lowered to an hour and the Location under the endpoint", res)
	}
	msgs := f.pending(t, &d)
	if len(msgs) != 1 {
		t.Fatalf("pending %d messages", len(msgs))
	}
	m := msgs[0]
	p, ok := webpush.Decode(&m)
	if !ok {
		t.Fatalf("Decode(%s) failed", m.Data)
	}
	body, _ := p.Body()
	if p.Subscription != s.ID || p.Label != "scope" || p.Urgency != webpush.Low || p.Topic != "t1" || string(body) != "\x00\x01\x02\xff" ||
		p.Headers["content-encoding"] != "aesgcm" || p.Headers["encryption"] != "salt=abc" || p.Headers["crypto-key"] != "dh=def" {
		t.Errorf("payload %+v (body %x)", p, body)
	}
	if m.CollapseID != webpush.CollapsePrefix+s.ID+"/t1" || m.Priority != push.PriorityNormal || m.TTL != time.Hour {
		t.Errorf("message collapse %q priority %q TTL %s", m.CollapseID, m.Priority, m.TTL)
	}
	// Provider data shaped like a web push is not one without a subscription.
	if _, ok := webpush.Decode(&push.Message{Data: []byte(`{"webpush":{"data":"x"}}`)}); ok {
		t.Error("Decode took a payload without a subscription")
	}

	// Recall is only through the subscription that sent the message.
	other, _ := f.svc.Subscribe(ctx, &d, "", "")
	if err := f.svc.Recall(ctx, other.Token, res.MsgID); !errors.Is(err, webpush.ErrNoMessage) {
		t.Errorf("recall through another subscription: %v, want ErrNoMessage", err)
	}
	provider, err := f.deliv.Push(ctx, f.app, &push.Request{Audience: &push.Audience{RegistrationIDs: []string{d.ID}}, Message: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Recall(ctx, s.Token, provider.MsgID); !errors.Is(err, webpush.ErrNoMessage) {
		t.Errorf("recall of a provider's message: %v, want ErrNoMessage", err)
	}
	if err := f.svc.Recall(ctx, s.Token, res.MsgID); err != nil {
		t.Fatalf("Recall: %v", err)
	}
	if msgs := f.pending(t, &d); len(msgs) != 1 || msgs[0].ID != provider.MsgID {
		t.Errorf("after recall pending %v, want only the provider's message", msgs)
	}
}
