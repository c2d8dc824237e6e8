package mozpush

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
	"github.com/heraldpush/herald/internal/webpush"
)

// The protocol against the gateway over a real embedded store, with pushes
// through the Web Push service directly (the HTTP endpoint and Firefox
// itself are exercised in test/firefox).

type env struct {
	t     *testing.T
	base  string // http://127.0.0.1:port
	app   push.App
	reg   *registry.Registry
	deliv *delivery.Service
	wp    *webpush.Service
	hub   *session.Hub
	gw    *Gateway
	now   time.Time // the delivery clock, moved by tests of expiry
}

func start(t *testing.T, o Options) *env {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, hub: session.NewHub(), now: time.Now()}
	clock := func() time.Time { return e.now }
	e.reg = registry.New(st, time.Now, 10)
	e.deliv = delivery.New(st, e.reg, router.Local{Hub: e.hub}, delivery.Options{Limits: push.DefaultLimits(), Now: clock})
	if e.app, _, err = e.reg.CreateApp(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.base = srv.URL
	e.wp = webpush.New(e.reg, e.deliv, webpush.Options{BaseURL: srv.URL})
	o.DefaultApp = e.app.Key
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	e.gw = New(e.reg, e.deliv, e.wp, o)
	e.gw.Register(mux)
	return e
}

// ua is a user agent: one connection speaking the protocol.
type ua struct {
	t *testing.T
	c *websocket.Conn
}

func (e *env) dial(query string) *ua {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, strings.Replace(e.base, "http", "ws", 1)+"/mozpush"+query,
		&websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != Subprotocol {
		e.t.Fatalf("subprotocol %q, want %q", got, Subprotocol)
	}
	e.t.Cleanup(func() { c.CloseNow() })
	return &ua{t: e.t, c: c}
}

func (u *ua) send(s string) {
	u.t.Helper()
	if err := u.c.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		u.t.Fatalf("write: %v", err)
	}
}

// read returns the next server message as a generic map, and its raw form.
func (u *ua) read() (map[string]any, []byte) {
	u.t.Helper()
	b, err := u.readErr(5 * time.Second)
	if err != nil {
		u.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		u.t.Fatalf("server message %q: %v", b, err)
	}
	return m, b
}

func (u *ua) readErr(within time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	typ, b, err := u.c.Read(ctx)
	if err == nil && typ != websocket.MessageText {
		u.t.Fatalf("a %v message; the server sends only text", typ)
	}
	return b, err
}

// closed waits for the server to close the connection and returns the code.
func (u *ua) closed() websocket.StatusCode {
	u.t.Helper()
	for {
		b, err := u.readErr(5 * time.Second)
		if err != nil {
			return websocket.CloseStatus(err)
		}
		u.t.Logf("before the close: %s", b)
	}
}

func (u *ua) hello(uaid string) string {
	u.t.Helper()
	u.send(string(Encode(Message{Type: TypeHello, UAID: uaid, UseWebPush: true})))
	m, raw := u.read()
	got, _ := m["uaid"].(string)
	if m["messageType"] != TypeHello || m["status"] != 200.0 || m["use_webpush"] != true || got == "" || len(got) > MaxUAIDLen {
		u.t.Fatalf("hello reply %s", raw)
	}
	if _, ok := m["broadcasts"].(map[string]any); !ok {
		u.t.Fatalf("hello reply %s has no broadcasts object", raw)
	}
	return got
}

func (u *ua) register(channelID, key string) (status int, endpoint string) {
	u.t.Helper()
	u.send(string(Encode(Message{Type: TypeRegister, ChannelID: channelID, Key: key})))
	m, raw := u.read()
	if m["messageType"] != TypeRegister || m["channelID"] != channelID {
		u.t.Fatalf("register reply %s", raw)
	}
	endpoint, _ = m["pushEndpoint"].(string)
	return int(m["status"].(float64)), endpoint
}

func (u *ua) notification() Notification {
	u.t.Helper()
	_, raw := u.read()
	var n Notification
	if err := json.Unmarshal(raw, &n); err != nil || n.MessageType != TypeNotification {
		u.t.Fatalf("want a notification, got %s", raw)
	}
	return n
}

func (u *ua) ack(n Notification, code int) {
	u.t.Helper()
	u.send(string(Encode(Message{Type: TypeAck, Updates: []Update{{ChannelID: n.ChannelID, Version: n.Version, Code: code}}})))
}

// quiet checks that nothing but the pong answers a ping: messages go out
// in order, so anything queued before the pong would show.
func (u *ua) quiet() {
	u.t.Helper()
	u.send("{}")
	if _, raw := u.read(); string(raw) != "{}" {
		u.t.Fatalf("got %s, want only the pong", raw)
	}
}

// push sends a Web Push message to an endpoint through the service.
func (e *env) push(endpoint string, ttl string, body []byte, h http.Header) (webpush.Result, error) {
	e.t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h.Set("TTL", ttl)
	if len(body) > 0 && h.Get("Content-Encoding") == "" {
		h.Set("Content-Encoding", "aes128gcm")
	}
	token := endpoint[strings.LastIndex(endpoint, "/")+1:]
	return e.wp.Push(context.Background(), token, h, body)
}

const chid2 = "9a5ff87f-47c9-4215-b2b8-0bdd38b4b305"

func TestHelloRegisterNotifyAck(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	uaid := u.hello("")
	u.quiet()

	status, endpoint := u.register(chid, "")
	if status != 200 || !strings.HasPrefix(endpoint, e.base+"/wpush/") {
		t.Fatalf("register: %d %q", status, endpoint)
	}
	body := []byte("\x00\x01opaque aes128gcm record\xff")
	res, err := e.push(endpoint, "60", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := u.notification()
	data, _ := base64.RawURLEncoding.DecodeString(n.Data)
	if n.ChannelID != chid || n.Version != res.MsgID || string(data) != string(body) ||
		n.Headers["encoding"] != "aes128gcm" || len(n.Headers) != 1 || n.TTL != 60 {
		t.Fatalf("notification %+v, want channel %s, version %s, the body, aes128gcm, ttl 60", n, chid, res.MsgID)
	}
	u.ack(n, AckDelivered)
	u.quiet()

	// The device exists now, under the UAID: it is a web device of the app.
	id, _, _ := parseUAID(uaid)
	d, err := e.reg.Device(context.Background(), e.app.Key, id)
	if err != nil || d.Platform != push.Web {
		t.Fatalf("the UAID's device: %+v, %v", d, err)
	}
	waitFor(t, func() bool { msgs, _ := e.deliv.Pending(context.Background(), &d, 10); return len(msgs) == 0 })
}

func TestReconnectRedeliversUnacked(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	uaid := u.hello("")
	_, ep1 := u.register(chid, "")
	_, ep2 := u.register(chid2, "")
	r1, _ := e.push(ep1, "60", []byte("one"), nil)
	r2, _ := e.push(ep2, "60", []byte("two"), nil)
	n1, n2 := u.notification(), u.notification()
	if n1.Version != r1.MsgID || n2.Version != r2.MsgID || n2.ChannelID != chid2 {
		t.Fatalf("notifications %+v %+v out of order or on the wrong channel", n1, n2)
	}
	u.ack(n1, AckDelivered)
	u.quiet()
	u.c.Close(websocket.StatusNormalClosure, "")

	// Offline: a push waits for the next connection.
	r3, _ := e.push(ep1, "60", []byte("three"), nil)

	again := e.dial("")
	if got := again.hello(uaid); got != uaid {
		t.Fatalf("hello with the UAID %q gave %q: the UAID must be stable", uaid, got)
	}
	if n := again.notification(); n.Version != r2.MsgID {
		t.Fatalf("first after reconnect: %+v, want the unacked %s", n, r2.MsgID)
	}
	n3 := again.notification()
	if n3.Version != r3.MsgID || n3.ChannelID != chid {
		t.Fatalf("then %+v, want %s", n3, r3.MsgID)
	}
	// Every ack code takes the message out.
	again.ack(n2, AckDecryptionError)
	again.ack(n3, AckNotDelivered)
	again.quiet()
	again.c.Close(websocket.StatusNormalClosure, "")

	last := e.dial("")
	last.hello(uaid)
	last.quiet()
}

func TestExpiredNotRedelivered(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	uaid := u.hello("")
	_, ep := u.register(chid, "")
	u.c.Close(websocket.StatusNormalClosure, "")
	short, _ := e.push(ep, "10", []byte("short"), nil)
	long, _ := e.push(ep, "3600", []byte("long"), nil)
	_ = short
	e.now = e.now.Add(time.Minute)
	again := e.dial("")
	again.hello(uaid)
	if n := again.notification(); n.Version != long.MsgID {
		t.Fatalf("got %+v, want only the unexpired %s", n, long.MsgID)
	}
	again.quiet()
}

func TestUnregisterRevokes(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	u.hello("")
	_, ep := u.register(chid, "")
	u.send(string(Encode(Message{Type: TypeUnregister, ChannelID: chid, Code: 200})))
	if m, raw := u.read(); m["messageType"] != TypeUnregister || m["channelID"] != chid || m["status"] != 200.0 {
		t.Fatalf("unregister reply %s", raw)
	}
	if _, err := e.push(ep, "60", []byte("x"), nil); !errors.Is(err, webpush.ErrGone) {
		t.Fatalf("push after unregister: %v, want ErrGone (410)", err)
	}
	// An unknown channel is no error.
	u.send(string(Encode(Message{Type: TypeUnregister, ChannelID: chid2})))
	if m, raw := u.read(); m["status"] != 200.0 {
		t.Fatalf("unregister of an unknown channel: %s", raw)
	}
	// Registering a channel again gives it a new endpoint and retires the old.
	_, a := u.register(chid2, "")
	_, b := u.register(chid2, "")
	if a == b {
		t.Fatal("registering a channel again kept its endpoint")
	}
	if _, err := e.push(a, "60", nil, nil); !errors.Is(err, webpush.ErrGone) {
		t.Fatalf("push to the replaced endpoint: %v, want ErrGone", err)
	}
	if _, err := e.push(b, "60", nil, nil); err != nil {
		t.Fatal(err)
	}
	// A push without a body is a notification without data.
	if n := u.notification(); n.Data != "" || n.Headers != nil || n.ChannelID != chid2 {
		t.Fatalf("bodiless notification %+v", n)
	}
}

func TestRegisterWithKey(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	u.hello("")
	// Firefox sends the key padded.
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := base64.URLEncoding.EncodeToString(priv.PublicKey().Bytes())
	if status, ep := u.register(chid, key); status != 200 || ep == "" {
		t.Fatalf("register with a key: %d %q", status, ep)
	} else if _, err := e.push(ep, "60", nil, nil); !errors.Is(err, webpush.ErrNoVAPID) {
		t.Fatalf("an unsigned push to a keyed subscription: %v, want ErrNoVAPID", err)
	}
	if status, ep := u.register(chid2, "bm90IGEga2V5"); status != 400 || ep != "" {
		t.Fatalf("register with a bad key: %d %q, want 400 and no endpoint", status, ep)
	}
	u.quiet()
}

func TestHelloUnknownUAID(t *testing.T) {
	e := start(t, Options{})
	for _, bad := range []string{"nonsense", "a.b", strings.Repeat("x", 200)} {
		u := e.dial("")
		if got := u.hello(bad); got == bad {
			t.Fatalf("an unknown UAID %q was kept", bad)
		}
		u.c.Close(websocket.StatusNormalClosure, "")
	}
	// A UAID whose device was never stored (no register) is new again, and
	// no device was stored for a hello alone.
	u := e.dial("")
	first := u.hello("")
	u.c.Close(websocket.StatusNormalClosure, "")
	if got := e.dial("").hello(first); got == first {
		t.Fatal("a UAID that never registered was kept")
	}
	id, _, _ := parseUAID(first)
	if _, err := e.reg.Device(context.Background(), e.app.Key, id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a device was stored for a hello alone: %v", err)
	}
}

// A UAID names a device of one app: under another app_key it is unknown.
func TestAppKey(t *testing.T) {
	e := start(t, Options{})
	other, _, _ := e.reg.CreateApp(context.Background(), "b")
	u := e.dial("?app_key=" + other.Key)
	uaid := u.hello("")
	u.register(chid, "")
	id, _, _ := parseUAID(uaid)
	if _, err := e.reg.Device(context.Background(), other.Key, id); err != nil {
		t.Fatalf("the device is not in the named app: %v", err)
	}
	if got := e.dial("").hello(uaid); got == uaid {
		t.Fatal("a UAID of app b was accepted for the default app")
	}
	// An unknown app: the handshake completes and the close says back off.
	if code := e.dial("?app_key=ak_nope").closed(); code != CloseBackoff {
		t.Fatalf("unknown app_key: close %v, want %v", code, CloseBackoff)
	}
	// Without an upgrade, a JSON error.
	resp, err := http.Get(e.base + "/mozpush?app_key=ak_nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("plain GET with an unknown app: %d", resp.StatusCode)
	}
}

func TestMalformedCloses(t *testing.T) {
	e := start(t, Options{})
	for _, c := range []struct {
		before, msg string
		code        websocket.StatusCode
	}{
		{"", `not json`, CloseProtocol},
		{"", `{"messageType":"register","channelID":"` + chid + `"}`, CloseProtocol}, // before hello
		{"hello", `{"messageType":"hello"}`, CloseProtocol},                          // twice
		{"hello", `{"messageType":"register","channelID":"nope"}`, CloseProtocol},
		{"hello", `{"messageType":"whatever"}`, CloseProtocol},
		{"hello", `{"foo":"bar"}`, CloseProtocol},
		{"hello", `{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":""}]}`, CloseProtocol},
	} {
		u := e.dial("")
		if c.before == "hello" {
			u.hello("")
		}
		u.send(c.msg)
		if code := u.closed(); code != c.code {
			t.Errorf("after %s: close %v, want %v", c.msg, code, c.code)
		}
	}
	u := e.dial("")
	u.hello("")
	u.c.Write(context.Background(), websocket.MessageBinary, []byte("{}"))
	if code := u.closed(); code != CloseUnsupported {
		t.Errorf("a binary message: close %v, want %v", code, CloseUnsupported)
	}
	u = e.dial("")
	u.send(`{"messageType":"hello","uaid":"` + strings.Repeat("x", 70<<10) + `"}`)
	if code := u.closed(); code != CloseTooBig {
		t.Errorf("a message over the limit: close %v, want %v", code, CloseTooBig)
	}
	// Others are not affected.
	ok := e.dial("")
	ok.hello("")
	ok.quiet()
}

func TestHelloTimeout(t *testing.T) {
	e := start(t, Options{HelloTimeout: 100 * time.Millisecond})
	if code := e.dial("").closed(); code != ClosePolicy {
		t.Fatalf("no hello: close %v, want %v", code, ClosePolicy)
	}
}

func TestPingAfterSilence(t *testing.T) {
	e := start(t, Options{PingInterval: 100 * time.Millisecond, PongTimeout: 200 * time.Millisecond})
	u := e.dial("")
	u.hello("")
	// A client that reads answers the WebSocket pings by itself (below the
	// protocol) and keeps the connection well past several intervals.
	got := make(chan []byte, 1)
	go func() {
		_, b, _ := u.c.Read(context.Background())
		got <- b
	}()
	select {
	case b := <-got:
		t.Fatalf("a silent, reading client got %q; want nothing", b)
	case <-time.After(600 * time.Millisecond):
	}
	u.send("{}")
	if b := <-got; string(b) != "{}" {
		t.Fatalf("got %q, want the pong", b)
	}
	// One that does not read answers no ping, and is closed.
	time.Sleep(500 * time.Millisecond)
	if code := u.closed(); code != ClosePolicy {
		t.Fatalf("no pong: close %v, want %v", code, ClosePolicy)
	}
}

func TestNewerConnectionReplaces(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	uaid := u.hello("")
	_, ep := u.register(chid, "")
	v := e.dial("")
	v.hello(uaid)
	if code := u.closed(); code != CloseBackoff {
		t.Fatalf("the older connection: close %v, want %v", code, CloseBackoff)
	}
	r, _ := e.push(ep, "60", []byte("x"), nil)
	if n := v.notification(); n.Version != r.MsgID {
		t.Fatalf("the newer connection got %+v", n)
	}
}

// A push that did not come through a channel's endpoint (a provider's
// notification) has no channel: it is dropped, not left to fill the window.
// A provider's push that dresses as one (a Web Push envelope naming the
// channel, to a broadcast or to the device itself) is refused when it is
// accepted, so that it cannot reach the channel without the VAPID key the
// channel's subscription asks for.
func TestOtherPushesDropped(t *testing.T) {
	e := start(t, Options{Window: 2})
	u := e.dial("")
	uaid := u.hello("")
	_, ep := u.register(chid, "")
	id, _, _ := parseUAID(uaid)
	d, _ := e.reg.Device(context.Background(), e.app.Key, id)
	subs, err := e.reg.Subscriptions(context.Background(), id)
	if err != nil || len(subs) != 1 {
		t.Fatalf("the channel's subscription: %v, %v", subs, err)
	}
	forged := json.RawMessage(`{"webpush":{"subscription":"` + subs[0].ID + `","label":"` + chid + `","data":"eA"}}`)
	for _, aud := range []*push.Audience{{All: true}, {RegistrationIDs: []string{id}}} {
		if _, err := e.deliv.Push(context.Background(), e.app, &push.Request{Audience: aud, Message: forged}); !errors.Is(err, push.ErrReservedKey) {
			t.Fatalf("a provider's push in a Web Push envelope to %+v: %v, want ErrReservedKey", aud, err)
		}
	}
	for range 3 {
		if _, err := e.deliv.Push(context.Background(), e.app, &push.Request{
			Audience: &push.Audience{RegistrationIDs: []string{id}}, Notification: &push.Notification{Title: "hi"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := e.push(ep, "60", []byte("x"), nil)
	if n := u.notification(); n.Version != r.MsgID {
		t.Fatalf("got %+v, want only the Web Push message %s", n, r.MsgID)
	}
	waitFor(t, func() bool { msgs, _ := e.deliv.Pending(context.Background(), &d, 10); return len(msgs) == 1 })
}

func TestShutdownClosesGoingAway(t *testing.T) {
	e := start(t, Options{})
	u := e.dial("")
	uaid := u.hello("")
	u.register(chid, "")
	id, _, _ := parseUAID(uaid)
	waitFor(t, func() bool { return len(e.hub.Sessions(id)) == 1 })
	for _, s := range e.hub.All() {
		s.Close(errors.New("server shutting down"))
	}
	if code := u.closed(); code != CloseGoingAway {
		t.Fatalf("shutdown: close %v, want %v", code, CloseGoingAway)
	}
	waitFor(t, func() bool { return len(e.hub.Sessions(id)) == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// New devices are rate-limited per address; channels of a stored device
// are not.
func TestNewDevicesRateLimited(t *testing.T) {
	e := start(t, Options{RegisterRate: 0.001, RegisterBurst: 2})
	var first *ua
	for i := range 2 {
		u := e.dial("")
		u.hello("")
		if status, _ := u.register(chid, ""); status != 200 {
			t.Fatalf("new device %d: register %d", i, status)
		}
		first = u
	}
	u := e.dial("")
	u.hello("")
	if status, ep := u.register(chid, ""); status != 429 || ep != "" {
		t.Fatalf("a third new device at once: register %d %q, want 429", status, ep)
	}
	u.quiet()
	if status, _ := first.register(chid2, ""); status != 200 {
		t.Fatalf("another channel of a stored device: %d", status)
	}
}
