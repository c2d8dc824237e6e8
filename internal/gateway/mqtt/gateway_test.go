package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// These tests drive the gateway with a client built on the codec, so that
// they can do what client libraries will not (withhold a PUBACK, trickle
// bytes, send junk) and see every byte of the answer. The gateway runs on
// the real epoll engine over a loopback listener, in front of the real core
// (registry, delivery, embedded store). The same behaviours with Paho and
// mosquitto_sub, over TCP, TLS and WebSocket, are in internal/server.

type testEnv struct {
	t    *testing.T
	gw   *Gateway
	eng  *netpoll.Engine
	addr string
	reg  *registry.Registry
	svc  *delivery.Service
	hub  *session.Hub
	app  push.App
}

func startGateway(t *testing.T, o Options) *testEnv {
	t.Helper()
	return startGatewayWith(t, o, netpoll.Options{}, nil)
}

// startGatewayWith is startGateway on an engine with eo, the gateway seeing
// the core through wrap (when not nil).
func startGatewayWith(t *testing.T, o Options, eo netpoll.Options, wrap func(Registry, Inbox) (Registry, Inbox)) *testEnv {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &testEnv{t: t, reg: registry.New(st, time.Now, 10), hub: session.NewHub()}
	e.svc = delivery.New(st, e.reg, router.Local{Hub: e.hub}, delivery.Options{Limits: push.DefaultLimits()})
	if e.app, _, err = e.reg.CreateApp(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	var reg Registry = e.reg
	var inbox Inbox = e.svc
	if wrap != nil {
		reg, inbox = wrap(reg, inbox)
	}
	e.gw = New(reg, inbox, o)
	if e.eng, err = netpoll.New(e.gw, eo); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	go e.eng.Serve(ln)
	t.Cleanup(func() {
		e.gw.Shutdown()
		e.eng.Shutdown()
	})
	return e
}

// device registers a device and returns it with its secret.
func (e *testEnv) device(tags ...string) (push.Device, string) {
	e.t.Helper()
	d, secret, err := e.reg.Register(context.Background(), registry.Registration{AppKey: e.app.Key, Platform: push.Android, Tags: tags})
	if err != nil {
		e.t.Fatal(err)
	}
	return d, secret
}

// push sends message (a JSON value) to aud and returns its id.
func (e *testEnv) push(aud *push.Audience, message string) string {
	e.t.Helper()
	res, err := e.svc.Push(context.Background(), e.app, &push.Request{Audience: aud, Message: json.RawMessage(message)})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.MsgID
}

func (e *testEnv) pushTo(d push.Device, message string) string {
	return e.push(&push.Audience{RegistrationIDs: []string{d.ID}}, message)
}

// pending is the number of messages waiting for d, as a poll would see.
func (e *testEnv) pending(d push.Device) int {
	e.t.Helper()
	msgs, err := e.svc.Pending(context.Background(), &d, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(msgs)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawClient speaks MQTT through the codec.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	v  byte
}

func (e *testEnv) dial(v byte) *rawClient {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &rawClient{t: e.t, nc: nc, v: v}
}

func (r *rawClient) send(p packet.Packet) {
	r.t.Helper()
	if err := packet.WritePacket(r.nc, p, r.v); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) readWithin(d time.Duration) (packet.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(d))
	return packet.ReadPacket(r.nc, r.v, 1<<20)
}

// read returns the next packet, failing the test if none comes.
func (r *rawClient) read() packet.Packet {
	r.t.Helper()
	p, err := r.readWithin(5 * time.Second)
	if err != nil {
		r.t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// silent reports that nothing arrives for a moment (and the connection
// stays open).
func (r *rawClient) silent() bool {
	r.t.Helper()
	p, err := r.readWithin(300 * time.Millisecond)
	if err == nil {
		r.t.Errorf("unexpected %s %+v", p.Type(), p)
		return false
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// closed reports whether the server closes the connection within d
// without sending anything more.
func (r *rawClient) closed(d time.Duration) bool {
	r.t.Helper()
	p, err := r.readWithin(d)
	if err == nil {
		r.t.Errorf("got %s %+v before the close", p.Type(), p)
		return false
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func creds(d push.Device, secret string) *packet.Connect {
	return &packet.Connect{ClientID: d.ID, Username: d.ID, Password: []byte(secret), KeepAlive: 60, CleanStart: true}
}

// connect sends cp and returns the CONNACK.
func (r *rawClient) connect(cp *packet.Connect) *packet.Connack {
	r.t.Helper()
	r.send(cp)
	ack, ok := r.read().(*packet.Connack)
	if !ok {
		r.t.Fatal("the answer to CONNECT is not a CONNACK")
	}
	return ack
}

// session connects as d and subscribes to its topic at qos.
func (r *rawClient) session(d push.Device, secret string, qos byte) {
	r.t.Helper()
	if ack := r.connect(creds(d, secret)); ack.ReasonCode != packet.ReasonSuccess {
		r.t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	r.subscribe(1, "devices/"+d.ID, qos)
}

func (r *rawClient) subscribe(pid uint16, filter string, qos byte) *packet.Suback {
	r.t.Helper()
	r.send(&packet.Subscribe{PacketID: pid, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}})
	sa, ok := r.read().(*packet.Suback)
	if !ok || sa.PacketID != pid {
		r.t.Fatalf("no SUBACK for packet %d: %+v", pid, sa)
	}
	return sa
}

// publish reads the next packet, which must be a PUBLISH, and returns it
// with the id of the message it carries.
func (r *rawClient) publish() (*packet.Publish, string) {
	r.t.Helper()
	p := r.read()
	pub, ok := p.(*packet.Publish)
	if !ok {
		r.t.Fatalf("got %s, want PUBLISH", p.Type())
	}
	var m struct{ ID string }
	if err := json.Unmarshal(pub.Payload, &m); err != nil {
		r.t.Fatalf("payload %q: %v", pub.Payload, err)
	}
	return pub, m.ID
}

func versions(t *testing.T, f func(t *testing.T, v byte)) {
	for _, v := range []byte{packet.Version311, packet.Version5} {
		name := map[byte]string{packet.Version311: "3.1.1", packet.Version5: "5.0"}[v]
		t.Run(name, func(t *testing.T) { f(t, v) })
	}
}

func TestConnectRefusals(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	other, _ := e.device()
	type tc struct {
		name string
		cp   *packet.Connect
		want packet.ReasonCode // as the codec decodes it: 3.1.1 return codes map to 5.0 codes
	}
	cases := []tc{
		{"wrong secret", creds(dev, "wrong"), packet.ReasonBadUserNameOrPassword},
		{"unknown device", &packet.Connect{ClientID: "nobody", Username: "nobody", Password: []byte(secret), CleanStart: true}, packet.ReasonBadUserNameOrPassword},
		{"another device's user name", &packet.Connect{ClientID: dev.ID, Username: other.ID, Password: []byte(secret), CleanStart: true}, packet.ReasonNotAuthorized},
		{"empty client id", &packet.Connect{Username: dev.ID, Password: []byte(secret), CleanStart: true}, packet.ReasonClientIdentifierNotValid},
		{"app key as user name", &packet.Connect{ClientID: dev.ID, Username: e.app.Key, Password: []byte(secret), CleanStart: true}, packet.ReasonSuccess},
		{"right credentials", creds(dev, secret), packet.ReasonSuccess},
	}
	versions(t, func(t *testing.T, v byte) {
		cs := cases
		if v == packet.Version5 {
			cs = append(cs,
				tc{"no password", &packet.Connect{ClientID: dev.ID, Username: dev.ID, CleanStart: true}, packet.ReasonBadUserNameOrPassword},
				tc{"enhanced authentication", &packet.Connect{ClientID: dev.ID, Username: dev.ID, Password: []byte(secret), CleanStart: true,
					Properties: packet.Properties{AuthenticationMethod: "SCRAM-SHA-1"}}, packet.ReasonBadAuthenticationMethod})
		}
		for _, c := range cs {
			r := e.dial(v)
			ack := r.connect(c.cp)
			if ack.ReasonCode != c.want || ack.SessionPresent {
				t.Errorf("%s: CONNACK %s (session present %v), want %s", c.name, ack.ReasonCode, ack.SessionPresent, c.want)
			}
			if c.want.IsError() && !r.closed(5*time.Second) {
				t.Errorf("%s: the connection stayed open after the refusal", c.name)
			}
		}
	})
}

// A protocol level Herald does not speak is answered in 3.1.1 form, return
// code 1, which a client of any version can read.
func TestUnsupportedProtocolLevel(t *testing.T) {
	e := startGateway(t, Options{})
	r := e.dial(packet.Version311)
	r.nc.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 6, 0x02, 0, 60, 0, 1, 'a'})
	got := make([]byte, 4)
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r.nc, got); err != nil || string(got) != "\x20\x02\x00\x01" {
		t.Errorf("answer % x (%v), want CONNACK 20 02 00 01", got, err)
	}
	if !r.closed(5 * time.Second) {
		t.Error("the connection stayed open")
	}
}

func TestInvalidUTF8(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	// A client identifier of one byte 0xFF.
	v5 := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 0xff}
	r := e.dial(packet.Version5)
	r.nc.Write(v5)
	if ack, ok := r.read().(*packet.Connack); !ok || ack.ReasonCode != packet.ReasonMalformedPacket {
		t.Errorf("5.0 CONNECT with invalid UTF-8: %+v, want CONNACK 0x81", ack)
	}
	r = e.dial(packet.Version311)
	r.nc.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 0xff})
	if !r.closed(5 * time.Second) {
		t.Error("3.1.1 CONNECT with invalid UTF-8 was not closed without an answer")
	}
	// After CONNECT: a topic filter of one byte 0xFF.
	r = e.dial(packet.Version5)
	r.connect(creds(dev, secret))
	r.nc.Write([]byte{0x82, 6, 0, 1, 0, 0, 1, 0xff})
	if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonMalformedPacket {
		t.Errorf("SUBSCRIBE with invalid UTF-8: %+v, want DISCONNECT 0x81", d)
	}
}

func TestFirstPacketMustBeConnect(t *testing.T) {
	e := startGateway(t, Options{})
	for name, b := range map[string][]byte{
		"PINGREQ":                    {0xc0, 0},
		"PUBLISH claiming 256 MB":    {0x30, 0xff, 0xff, 0xff, 0x7f},
		"SUBSCRIBE, header only":     {0x82, 0x10},
		"HTTP":                       []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"a reserved packet type (0)": {0x00, 0x00},
	} {
		r := e.dial(packet.Version311)
		r.nc.Write(b)
		if !r.closed(5 * time.Second) {
			t.Errorf("%s first: not closed at once", name)
		}
	}
}

func TestConnectTimeout(t *testing.T) {
	e := startGateway(t, Options{ConnectTimeout: time.Second})
	silent := e.dial(packet.Version311)
	if !silent.closed(8 * time.Second) {
		t.Error("a connection that sent nothing was not closed")
	}
	// One byte of a CONNECT now and then restarts the engine's idle clock
	// every time; the CONNECT deadline still holds.
	dev, secret := e.device()
	b, _ := creds(dev, secret).AppendTo(nil, packet.Version311)
	trickle := e.dial(packet.Version311)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := range b[:len(b)-1] {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := trickle.nc.Write(b[i : i+1]); err != nil {
				return
			}
		}
	}()
	if !trickle.closed(10 * time.Second) {
		t.Error("a CONNECT trickled one byte at a time held the connection open")
	}
}

func TestKeepAlive(t *testing.T) {
	e := startGateway(t, Options{MaxKeepAlive: 2 * time.Second})
	dev, secret := e.device()
	for _, c := range []struct {
		ask  uint16
		want uint16 // Server Keep Alive, 0 for none
	}{{60, 2}, {0, 2}, {1, 0}, {2, 0}} {
		r := e.dial(packet.Version5)
		cp := creds(dev, secret)
		cp.KeepAlive = c.ask
		ack := r.connect(cp)
		got := uint16(0)
		if ack.Properties.ServerKeepAlive != nil {
			got = *ack.Properties.ServerKeepAlive
		}
		if got != c.want {
			t.Errorf("keepalive %d: Server Keep Alive %d, want %d", c.ask, got, c.want)
		}
	}
	// 3.1.1 cannot be told: a client asking for 60 s is held to 2 s.
	r := e.dial(packet.Version311)
	r.connect(creds(dev, secret))
	if !r.closed(10 * time.Second) {
		t.Error("a silent 3.1.1 client was not disconnected after 1.5 × the maximum keepalive")
	}
	// A client that pings in time stays.
	r = e.dial(packet.Version311)
	cp := creds(dev, secret)
	cp.KeepAlive = 2
	r.connect(cp)
	for range 4 {
		time.Sleep(time.Second)
		r.send(&packet.Pingreq{})
		if p := r.read(); p.Type() != packet.TypePingresp {
			t.Fatalf("PINGREQ answered with %s", p.Type())
		}
	}
}

func TestDeliver(t *testing.T) {
	versions(t, func(t *testing.T, v byte) {
		e := startGateway(t, Options{})
		dev, secret := e.device("news")
		waiting := e.pushTo(dev, `{"n":1}`)
		r := e.dial(v)
		r.connect(creds(dev, secret))
		// Nothing arrives before the subscription.
		if !r.silent() {
			t.Fatal("a message arrived before SUBSCRIBE")
		}
		if sa := r.subscribe(1, "devices/"+dev.ID, 2); len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != packet.ReasonGrantedQoS1 {
			t.Errorf("SUBACK %v for QoS 2, want granted QoS 1", sa.ReasonCodes)
		}
		pub, id := r.publish()
		if id != waiting || pub.QoS != 1 || pub.Dup || pub.Retain || pub.Topic != "devices/"+dev.ID || pub.PacketID == 0 {
			t.Errorf("PUBLISH %+v of %s, want QoS 1 on devices/%s of %s", pub, id, dev.ID, waiting)
		}
		var body map[string]any
		json.Unmarshal(pub.Payload, &body)
		if m, _ := body["message"].(map[string]any); m["n"] != 1.0 || body["sent_at"] == nil || body["expires_at"] == nil {
			t.Errorf("payload %s is not the message JSON", pub.Payload)
		}
		if v == packet.Version5 {
			pp := pub.Properties
			if pp.PayloadFormat != 1 || pp.ContentType != "application/json" || pp.MessageExpiry == nil || *pp.MessageExpiry == 0 {
				t.Errorf("5.0 PUBLISH properties %+v", pp)
			}
		}
		r.send(&packet.Puback{PacketID: pub.PacketID})
		waitFor(t, "the PUBACK to empty the inbox", func() bool { return e.pending(dev) == 0 })

		// Live pushes of every audience kind arrive at once, in order.
		want := []string{
			e.pushTo(dev, `"direct"`),
			e.push(&push.Audience{Tags: []string{"news"}}, `"tag"`),
			e.push(&push.Audience{All: true}, `"broadcast"`),
		}
		for i, w := range want {
			pub, id := r.publish()
			if id != w {
				t.Errorf("live message %d: %s, want %s", i, id, w)
			}
			r.send(&packet.Puback{PacketID: pub.PacketID})
		}
		waitFor(t, "the PUBACKs to empty the inbox", func() bool { return e.pending(dev) == 0 })
	})
}

func TestForeignTopicsRefused(t *testing.T) {
	versions(t, func(t *testing.T, v byte) {
		e := startGateway(t, Options{})
		dev, secret := e.device()
		other, _ := e.device()
		r := e.dial(v)
		r.connect(creds(dev, secret))
		want := packet.ReasonUnspecifiedError // 3.1.1's only failure
		if v == packet.Version5 {
			want = packet.ReasonNotAuthorized
		}
		filters := []string{"devices/" + other.ID, "devices/+", "#", "devices/" + dev.ID + "/x", "+/" + dev.ID}
		subs := []packet.Subscription{{Filter: "devices/" + dev.ID, QoS: 1}}
		for _, f := range filters {
			subs = append(subs, packet.Subscription{Filter: f, QoS: 1})
		}
		r.send(&packet.Subscribe{PacketID: 7, Subscriptions: subs})
		sa, ok := r.read().(*packet.Suback)
		if !ok || len(sa.ReasonCodes) != len(subs) {
			t.Fatalf("SUBACK %+v", sa)
		}
		if sa.ReasonCodes[0] != packet.ReasonGrantedQoS1 {
			t.Errorf("own topic: %s", sa.ReasonCodes[0])
		}
		for i, f := range filters {
			if got := sa.ReasonCodes[i+1]; got != want {
				t.Errorf("filter %q: %s, want %s", f, got, want)
			}
		}
		// The other device's pushes never come here.
		e.pushTo(other, `"not yours"`)
		if !r.silent() {
			t.Error("a foreign message arrived")
		}
	})
}

// A client that subscribes at QoS 0 asked for at most once: messages come
// at QoS 0 and leave the inbox once written, those that waited too.
func TestQoS0Subscription(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	waiting := e.pushTo(dev, `1`)
	r := e.dial(packet.Version311)
	r.connect(creds(dev, secret))
	if sa := r.subscribe(1, "devices/"+dev.ID, 0); sa.ReasonCodes[0] != packet.ReasonGrantedQoS0 {
		t.Fatalf("SUBACK %v, want granted QoS 0", sa.ReasonCodes)
	}
	if pub, id := r.publish(); id != waiting || pub.QoS != 0 {
		t.Errorf("PUBLISH %+v of %s, want QoS 0 of %s", pub, id, waiting)
	}
	live := e.pushTo(dev, `2`)
	if pub, id := r.publish(); id != live || pub.QoS != 0 {
		t.Errorf("PUBLISH %+v of %s, want QoS 0 of %s", pub, id, live)
	}
	waitFor(t, "QoS 0 messages to leave the inbox", func() bool { return e.pending(dev) == 0 })
}

func TestReceiveMaximum(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	var ids []string
	for i := range 4 {
		ids = append(ids, e.pushTo(dev, string(rune('0'+i))))
	}
	r := e.dial(packet.Version5)
	cp := creds(dev, secret)
	cp.Properties.ReceiveMaximum = 2
	r.connect(cp)
	r.subscribe(1, "devices/"+dev.ID, 1)
	first, id0 := r.publish()
	_, id1 := r.publish()
	if id0 != ids[0] || id1 != ids[1] {
		t.Errorf("got %s %s, want %s %s", id0, id1, ids[0], ids[1])
	}
	if !r.silent() {
		t.Error("more than Receive Maximum messages in flight")
	}
	r.send(&packet.Puback{PacketID: first.PacketID})
	if _, id := r.publish(); id != ids[2] {
		t.Errorf("after a PUBACK got %s, want %s", id, ids[2])
	}
	if !r.silent() {
		t.Error("more than Receive Maximum messages in flight after one PUBACK")
	}
}

// A message larger than the client's Maximum Packet Size is not sent
// (MQTT 5.0 §3.1.2.11.4): it is discarded as if delivered, and the next
// one comes.
func TestClientMaximumPacketSize(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	big := e.pushTo(dev, `"`+strings.Repeat("x", 1000)+`"`)
	small := e.pushTo(dev, `"small"`)
	r := e.dial(packet.Version5)
	cp := creds(dev, secret)
	cp.Properties.MaximumPacketSize = 512
	r.connect(cp)
	r.subscribe(1, "devices/"+dev.ID, 1)
	pub, id := r.publish()
	if id != small {
		t.Errorf("got %s, want only the small message %s (the big one is %s)", id, small, big)
	}
	r.send(&packet.Puback{PacketID: pub.PacketID})
	waitFor(t, "both messages to leave the inbox", func() bool { return e.pending(dev) == 0 })
}

func TestRedeliveryWithDup(t *testing.T) {
	versions(t, func(t *testing.T, v byte) {
		e := startGateway(t, Options{})
		dev, secret := e.device()
		id := e.pushTo(dev, `"once"`)
		for _, wantDup := range []bool{false, true} {
			r := e.dial(v)
			r.session(dev, secret, 1)
			pub, got := r.publish()
			if got != id || pub.Dup != wantDup {
				t.Errorf("PUBLISH of %s dup=%v, want %s dup=%v", got, pub.Dup, id, wantDup)
			}
			if !wantDup {
				r.nc.Close() // without a PUBACK
				waitFor(t, "the connection to close", func() bool { return e.gw.Len() == 0 })
				continue
			}
			r.send(&packet.Puback{PacketID: pub.PacketID})
		}
		waitFor(t, "the PUBACK of the redelivery to empty the inbox", func() bool { return e.pending(dev) == 0 })
	})
}

func TestPublishRefused(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	topic := "devices/" + dev.ID

	// 3.1.1 has no refusal for a PUBLISH: the connection is closed.
	r := e.dial(packet.Version311)
	r.connect(creds(dev, secret))
	r.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("x")})
	if !r.closed(5 * time.Second) {
		t.Error("3.1.1: a PUBLISH from a device did not close the connection")
	}

	// 5.0 says Not authorized in the acknowledgement, and goes on.
	r = e.dial(packet.Version5)
	r.connect(creds(dev, secret))
	r.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("x")})
	if pa, ok := r.read().(*packet.Puback); !ok || pa.PacketID != 1 || pa.ReasonCode != packet.ReasonNotAuthorized {
		t.Errorf("5.0 QoS 1 PUBLISH: %+v, want PUBACK 0x87", pa)
	}
	r.send(&packet.Publish{Topic: topic, QoS: 2, PacketID: 2, Payload: []byte("x")})
	if pr, ok := r.read().(*packet.Pubrec); !ok || pr.PacketID != 2 || pr.ReasonCode != packet.ReasonNotAuthorized {
		t.Errorf("5.0 QoS 2 PUBLISH: %+v, want PUBREC 0x87", pr)
	}
	r.send(&packet.Pingreq{})
	if p := r.read(); p.Type() != packet.TypePingresp {
		t.Errorf("after refused PUBLISHes: %s, want PINGRESP", p.Type())
	}
	// QoS 0 has no acknowledgement to carry the refusal.
	r.send(&packet.Publish{Topic: topic, Payload: []byte("x")})
	if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonNotAuthorized {
		t.Errorf("5.0 QoS 0 PUBLISH: %+v, want DISCONNECT 0x87", d)
	}
}

func TestUnsubscribe(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	r := e.dial(packet.Version5)
	r.session(dev, secret, 1)
	id := e.pushTo(dev, `1`)
	pub, got := r.publish()
	if got != id {
		t.Fatalf("got %s, want %s", got, id)
	}
	r.send(&packet.Unsubscribe{PacketID: 9, Filters: []string{"devices/" + dev.ID, "devices/x"}})
	ua, ok := r.read().(*packet.Unsuback)
	if !ok || ua.PacketID != 9 || len(ua.ReasonCodes) != 2 ||
		ua.ReasonCodes[0] != packet.ReasonSuccess || ua.ReasonCodes[1] != packet.ReasonNoSubscriptionExisted {
		t.Errorf("UNSUBACK %+v, want 0x00 0x11", ua)
	}
	// A PUBACK for a message received before the UNSUBSCRIBE still counts.
	r.send(&packet.Puback{PacketID: pub.PacketID})
	waitFor(t, "the late PUBACK to empty the inbox", func() bool { return e.pending(dev) == 0 })
	// Unsubscribed: pushes wait in the inbox until the next SUBSCRIBE.
	later := e.pushTo(dev, `2`)
	if !r.silent() {
		t.Error("a message arrived after UNSUBSCRIBE")
	}
	r.subscribe(2, "devices/"+dev.ID, 1)
	if _, got := r.publish(); got != later {
		t.Errorf("after subscribing again got %s, want %s", got, later)
	}
}

func TestTakeover(t *testing.T) {
	versions(t, func(t *testing.T, v byte) {
		e := startGateway(t, Options{})
		dev, secret := e.device()
		first := e.dial(v)
		first.session(dev, secret, 1)
		second := e.dial(v)
		second.session(dev, secret, 1)
		if v == packet.Version5 {
			if d, ok := first.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonSessionTakenOver {
				t.Errorf("the first connection got %+v, want DISCONNECT 0x8E", d)
			}
		}
		if !first.closed(5 * time.Second) {
			t.Error("the first connection was not closed")
		}
		id := e.pushTo(dev, `1`)
		if _, got := second.publish(); got != id {
			t.Errorf("the second connection got %s, want %s", got, id)
		}
	})
}

func TestSecondConnectIsAProtocolError(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	r := e.dial(packet.Version5)
	r.connect(creds(dev, secret))
	r.send(creds(dev, secret))
	if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonProtocolError {
		t.Errorf("second CONNECT: %+v, want DISCONNECT 0x82", d)
	}
}

func TestOversizedPacket(t *testing.T) {
	versions(t, func(t *testing.T, v byte) {
		e := startGateway(t, Options{MaxPacketSize: 1024})
		dev, secret := e.device()
		r := e.dial(v)
		r.connect(creds(dev, secret))
		// A SUBSCRIBE header announcing 2000 bytes; the body never comes.
		r.nc.Write([]byte{0x82, 0xd0, 0x0f})
		if v == packet.Version5 {
			if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonPacketTooLarge {
				t.Errorf("5.0: %+v, want DISCONNECT 0x95", d)
			}
		}
		if !r.closed(5 * time.Second) {
			t.Error("an oversized packet did not close the connection")
		}
	})
}

// The core closes a session when its device is deleted.
func TestDeviceDeleted(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	r := e.dial(packet.Version5)
	r.session(dev, secret, 1)
	if err := e.reg.Delete(context.Background(), e.app.Key, dev.ID); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.hub.Sessions(dev.ID) {
		s.Close(registry.ErrNotFound)
	}
	if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonNotAuthorized {
		t.Errorf("device deleted: %+v, want DISCONNECT 0x87", d)
	}
	if !r.closed(5 * time.Second) {
		t.Error("the connection of a deleted device stayed open")
	}
}

func TestShutdown(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	v5 := e.dial(packet.Version5)
	v5.session(dev, secret, 1)
	other, otherSecret := e.device()
	v3 := e.dial(packet.Version311)
	v3.session(other, otherSecret, 1)
	e.gw.Shutdown()
	if d, ok := v5.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonServerShuttingDown {
		t.Errorf("5.0 on shutdown: %+v, want DISCONNECT 0x8B", d)
	}
	if !v3.closed(5 * time.Second) {
		t.Error("3.1.1 connection not closed on shutdown")
	}
	// New connections are turned away.
	r := e.dial(packet.Version311)
	if !r.closed(5 * time.Second) {
		t.Error("a connection opened after Shutdown stayed open")
	}
}

// The codec's caps on properties are the gateway's: a 5.0 packet with more
// user properties than allowed is refused with Quota exceeded, before or
// after CONNECT.
func TestPropertyCaps(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	many := make([]packet.UserProperty, packet.DefaultMaxUserProperties+1)
	for i := range many {
		many[i] = packet.UserProperty{Key: "k", Value: "v"}
	}
	r := e.dial(packet.Version5)
	cp := creds(dev, secret)
	cp.Properties.User = many
	if ack := r.connect(cp); ack.ReasonCode != packet.ReasonQuotaExceeded {
		t.Errorf("CONNECT with %d user properties: CONNACK %s, want 0x97", len(many), ack.ReasonCode)
	}
	r = e.dial(packet.Version5)
	r.connect(creds(dev, secret))
	r.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + dev.ID, QoS: 1}},
		Properties: packet.Properties{User: many}})
	if d, ok := r.read().(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonQuotaExceeded {
		t.Errorf("SUBSCRIBE with %d user properties: %+v, want DISCONNECT 0x97", len(many), d)
	}
}

// MQTT 3.1 allows client identifiers of at most 23 characters and a
// registration ID has 24: a 3.1 device is refused with return code 2
// (docs/protocol.md tells it to use 3.1.1).
func TestMQTT31ClientIDTooLong(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	if len(dev.ID) <= 23 {
		t.Skipf("registration IDs have %d characters now; 3.1 devices can connect", len(dev.ID))
	}
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	v := str(nil, "MQIsdp")
	v = append(v, 3, 0xc2, 0, 60)
	v = str(str(str(v, dev.ID), dev.ID), secret)
	r := e.dial(packet.Version311)
	r.nc.Write(append([]byte{0x10, byte(len(v))}, v...))
	if ack, ok := r.read().(*packet.Connack); !ok || ack.ReasonCode != packet.ReasonClientIdentifierNotValid {
		t.Errorf("3.1 CONNECT: %+v, want CONNACK 2 (identifier rejected)", ack)
	}
}

// onDataCounter counts the OnData calls the engine has finished, so that
// a test knows when the gateway has seen what its clients sent.
type onDataCounter struct {
	*Gateway
	n atomic.Int64
}

func (h *onDataCounter) OnData(c netpoll.Conn, b []byte) {
	h.Gateway.OnData(c, b)
	h.n.Add(1)
}

// TestHalfSentConnectsHeap opens many connections through the real
// listener, each sending only the first bytes of a CONNECT whose fixed
// header claims the largest packet allowed, and measures what they cost
// the heap: about what an empty connection costs, not the 16 KiB each
// claims (which they each allocated before the gateway sized its buffer
// by the bytes that arrived).
func TestHalfSentConnectsHeap(t *testing.T) {
	const n = 300
	e := startGateway(t, Options{ConnectTimeout: time.Minute})
	counter := &onDataCounter{Gateway: e.gw}
	eng, err := netpoll.New(counter, netpoll.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Shutdown()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go eng.Serve(ln)

	// CONNECT, Remaining Length = the gateway's maximum minus the header,
	// then the protocol name's length and two of its bytes.
	claim := e.gw.opts.MaxPacketSize - 4
	half := append([]byte{0x10}, varint(claim)...)
	half = append(half, 0x00, 0x04, 'M', 'Q')

	heap := func() uint64 {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Connected and accepted first, so that the figure below is the
	// half-sent packets alone, not the sockets.
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "every connection opened", func() bool { return eng.Conns() == n })
	before := heap()
	for _, c := range conns {
		if _, err := c.Write(half); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every half CONNECT read", func() bool { return counter.n.Load() >= n })
	after := heap()
	per := (float64(after) - float64(before)) / n
	t.Logf("%d half-sent CONNECTs claiming %d bytes each: %.0f bytes of heap per connection", n, claim, per)
	if per > 1024 {
		t.Errorf("a half-sent CONNECT costs %.0f bytes of heap; its %d bytes should cost tens", per, len(half))
	}
	if eng.Conns() != n {
		t.Fatalf("%d connections open, want all %d (none may be closed for claiming a large packet)", eng.Conns(), n)
	}
}

// varint encodes v as an MQTT variable byte integer.
func varint(v int) []byte {
	var b []byte
	for {
		d := byte(v % 128)
		v /= 128
		if v > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if v == 0 {
			return b
		}
	}
}
