package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// The failover policy, with time faked (testing/synctest) so that "at once"
// and "backs off" can be told apart without a timed test. The same
// behaviour against real servers is in server_test.go.

// nodes is an http.RoundTripper that stands for a few servers by host
// name: "dead" refuses connections, "busy" answers 503, "auth" answers
// 401, "live" serves one message and takes acks and registrations.
type nodes struct {
	mu       sync.Mutex
	attempts []attempt // guarded by mu
}

type attempt struct {
	call string // "GET live /v1/inbox"
	at   time.Time
}

func (f *nodes) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.attempts = append(f.attempts, attempt{r.Method + " " + r.URL.Host + " " + r.URL.Path, time.Now()})
	f.mu.Unlock()
	answer := func(status int, body string) (*http.Response, error) {
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	}
	switch r.URL.Host {
	case "dead":
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	case "busy":
		return answer(503, `{"error":{"code":"store_unavailable","message":"later"}}`)
	case "auth":
		return answer(401, `{"error":{"code":"unauthorized","message":"no"}}`)
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/inbox":
		return answer(200, `{"messages":[{"id":"m1"}]}`)
	case "POST /v1/inbox/ack":
		return answer(200, `{"acked":1}`)
	case "POST /v1/devices":
		return answer(201, `{"registration_id":"r1","device_secret":"s1"}`)
	}
	return answer(404, `{"error":{"code":"not_found","message":"?"}}`)
}

func (f *nodes) calls() []attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]attempt(nil), f.attempts...)
}

func callNames(as []attempt) string {
	var s []string
	for _, a := range as {
		s = append(s, a.call)
	}
	return strings.Join(s, ", ")
}

func fakeDevice(f *nodes, servers ...string) *Device {
	return NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1", Servers: servers}, &http.Client{Transport: f})
}

// A dead server and a busy one cost one call each, with no wait, and the
// server that answers is kept for the calls after.
func TestDeviceMovesOnAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &nodes{}
		d := fakeDevice(f, "http://dead", "http://busy/", "http://live")
		start := time.Now()
		var got []string
		err := d.Listen(t.Context(), func(m Message) error { got = append(got, m.ID); return ErrStop })
		if err != nil || fmt.Sprint(got) != "[m1]" {
			t.Fatalf("Listen = %v, handled %v; want nil, [m1]", err, got)
		}
		if _, err := d.Poll(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		calls := f.calls()
		want := "GET dead /v1/inbox, GET busy /v1/inbox, GET live /v1/inbox, POST live /v1/inbox/ack, GET live /v1/inbox"
		if got := callNames(calls); got != want {
			t.Fatalf("calls: %s\nwant:  %s", got, want)
		}
		for _, a := range calls {
			if a.at != start {
				t.Errorf("%s came %v after the start: the device waited before the next server", a.call, a.at.Sub(start))
			}
		}
	})
}

// When every server fails, each round tries them all at one instant, in
// order, and rounds are apart by the back-off.
func TestDeviceBacksOffBetweenRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &nodes{}
		d := fakeDevice(f, "http://dead", "http://busy")
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := d.Listen(ctx, func(Message) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Listen = %v, want the context's end", err)
		}
		checkRounds(t, f.calls(), "GET dead /v1/inbox", "GET busy /v1/inbox")
	})
}

// checkRounds checks that attempts come in rounds of want, in order, all
// of a round at one instant, each round later than the one before.
func checkRounds(t *testing.T, as []attempt, want ...string) {
	t.Helper()
	n := len(want)
	if len(as) < 2*n || len(as) > 50*n {
		t.Fatalf("%d attempts in 5 s over %d servers: %s", len(as), n, callNames(as))
	}
	for i, a := range as {
		if a.call != want[i%n] {
			t.Fatalf("attempt %d is %s, want %s: %s", i, a.call, want[i%n], callNames(as))
		}
		switch {
		case i%n != 0 && a.at != as[i-1].at:
			t.Errorf("attempt %d (%s) came %v after the one before, in the same round", i, a.call, a.at.Sub(as[i-1].at))
		case i%n == 0 && i > 0 && !a.at.After(as[i-1].at):
			t.Errorf("round %d began with no back-off after round %d", i/n+1, i/n)
		}
	}
}

// An answer that another server would give as well (401) ends Listen
// without trying the next.
func TestDeviceStopsOnRefusal(t *testing.T) {
	f := &nodes{}
	d := fakeDevice(f, "http://auth", "http://live")
	err := d.Listen(t.Context(), func(Message) error { return nil })
	if e := (*Error)(nil); !errors.As(err, &e) || e.Status != 401 {
		t.Fatalf("Listen = %v, want the 401", err)
	}
	if got := callNames(f.calls()); got != "GET auth /v1/inbox" {
		t.Errorf("calls: %s; want only the refused one", got)
	}
}

func TestRegisterAny(t *testing.T) {
	f := &nodes{}
	hc := &http.Client{Transport: f}
	reg, err := RegisterAny(t.Context(), hc, []string{"http://dead/", "http://busy", "http://live"}, RegisterRequest{AppKey: "ak", Platform: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.RegistrationID != "r1" || reg.Server != "http://dead" || fmt.Sprint(reg.Servers) != "[http://dead http://busy http://live]" {
		t.Errorf("registration %+v: want r1, the first server, the whole list", reg)
	}
	f = &nodes{}
	hc.Transport = f
	if _, err := RegisterAny(t.Context(), hc, []string{"http://auth", "http://live"}, RegisterRequest{}); err == nil {
		t.Error("RegisterAny went past a 401")
	}
	if got := callNames(f.calls()); got != "POST auth /v1/devices" {
		t.Errorf("calls: %s; want only the refused one", got)
	}
	if _, err := RegisterAny(t.Context(), hc, nil, RegisterRequest{}); err == nil {
		t.Error("RegisterAny with no server succeeded")
	}
}

// ListenMQTTAny tries every URL of a round at one instant and backs off
// between rounds.
func TestListenMQTTBacksOffBetweenRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var as []attempt
		dial := func(name string) func(context.Context) (net.Conn, error) {
			return func(context.Context) (net.Conn, error) {
				mu.Lock()
				defer mu.Unlock()
				as = append(as, attempt{name, time.Now()})
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
		err := d.listenMQTT(ctx, []func(context.Context) (net.Conn, error){dial("a"), dial("b"), dial("c")}, func(Message) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("listenMQTT = %v, want the context's end", err)
		}
		mu.Lock()
		defer mu.Unlock()
		checkRounds(t, as, "a", "b", "c")
	})
}

// deadURL is an MQTT URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "mqtt://" + addr
}

func TestListenMQTTAnySkipsADeadServer(t *testing.T) {
	url, results := scriptedBroker(t, func(b *bconn) error {
		if err := b.handshake(); err != nil {
			return err
		}
		b.publish(1, "m1", false)
		if err := b.puback(1); err != nil {
			return err
		}
		_, _, err := b.expect(14) // DISCONNECT
		return err
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	var got []string
	err := d.ListenMQTTAny(ctx, []string{deadURL(t), url}, func(m Message) error { got = append(got, m.ID); return ErrStop })
	if err != nil || fmt.Sprint(got) != "[m1]" {
		t.Errorf("ListenMQTTAny = %v, handled %v; want nil, [m1]", err, got)
	}
	checkScripts(t, results, 1)
}

// A connection that drops moves on to the next URL (dead here), and from
// it round to the first again, where the message delivered before the drop
// comes again and is acknowledged without being handled twice.
func TestListenMQTTAnyGoesRound(t *testing.T) {
	url, results := scriptedBroker(t,
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(1, "m1", false)
			return nil // dropped before the PUBACK is read
		},
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(2, "m1", true)
			if err := b.puback(2); err != nil {
				return err
			}
			b.publish(3, "m2", false)
			if err := b.puback(3); err != nil {
				return err
			}
			_, _, err := b.expect(14) // DISCONNECT
			return err
		})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	var got []string
	err := d.ListenMQTTAny(ctx, []string{url, deadURL(t)}, func(m Message) error {
		got = append(got, m.ID)
		if m.ID == "m2" {
			return ErrStop
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[m1 m2]" {
		t.Errorf("ListenMQTTAny = %v, handled %v; want nil, [m1 m2]", err, got)
	}
	checkScripts(t, results, 2)
}

func TestListenMQTTAnyBadURL(t *testing.T) {
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	if err := d.ListenMQTTAny(t.Context(), nil, nil); err == nil {
		t.Error("ListenMQTTAny with no URL accepted")
	}
	if err := d.ListenMQTTAny(t.Context(), []string{"mqtt://127.0.0.1:1", "http://h:1"}, nil); err == nil {
		t.Error("ListenMQTTAny accepted a list with a bad URL")
	}
}
