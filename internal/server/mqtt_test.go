package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho5 "github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
)

// mqttNode starts a node with its MQTT listener on a free port and returns
// it with the listener's host:port.
func startMQTTNode(t *testing.T) (*node, string) {
	cfg := testConfig(t)
	cfg.MQTTAddr = "127.0.0.1:0"
	n := startNode(t, cfg)
	addr := strings.TrimPrefix(n.info.MQTTURL, "mqtt://")
	if addr == "" {
		t.Fatal("the node reports no MQTT URL")
	}
	return n, addr
}

func (n *node) pushTo(dev *client.Registration, body string) string {
	return n.push(map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "message": map[string]string{"text": body}})
}

// received collects messages a client got, in order.
type received struct {
	mu   sync.Mutex
	ids  []string
	more chan struct{}
}

func newReceived() *received { return &received{more: make(chan struct{}, 1000)} }

func (r *received) add(payload []byte) {
	var m client.Message
	json.Unmarshal(payload, &m)
	r.mu.Lock()
	r.ids = append(r.ids, m.ID)
	r.mu.Unlock()
	r.more <- struct{}{}
}

// wait returns once n messages arrived, or fails the test.
func (r *received) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.ids)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("received %v, want %d messages", got, n)
		}
	}
}

func paho311(t *testing.T, broker string, reg *client.Registration, user, password string) (paho3.Client, error) {
	opts := paho3.NewClientOptions().AddBroker(broker).SetClientID(reg.RegistrationID).
		SetUsername(user).SetPassword(password).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("paho 3.1.1 connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestMQTT311LiveOfflineAndAck(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("")
	offline := n.pushTo(dev, "waiting")

	c, err := paho311(t, "tcp://"+addr, dev, dev.RegistrationID, dev.DeviceSecret)
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	tok := c.Subscribe("devices/"+dev.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) { got.add(m.Payload()) })
	tok.WaitTimeout(5 * time.Second)
	if err := tok.Error(); err != nil {
		t.Fatal(err)
	}
	if ids := got.wait(t, 1); ids[0] != offline {
		t.Fatalf("first message %s, want the offline push %s", ids[0], offline)
	}
	live := n.pushTo(dev, "live")
	if ids := got.wait(t, 2); ids[1] != live {
		t.Fatalf("second message %s, want the live push %s", ids[1], live)
	}
	bcast := n.push(map[string]any{"audience": "all", "message": 1})
	got.wait(t, 3)
	// PUBACK is the ack: the inbox empties and the reports say delivered.
	waitFor(t, 5*time.Second, func() bool { return len(n.poll(dev, "")) == 0 })
	for _, id := range []string{offline, live, bcast} {
		var rep struct{ Delivered int }
		n.call("GET", "/v1/messages/"+id, n.provider(), nil, &rep)
		if rep.Delivered != 1 {
			t.Errorf("report of %s: delivered %d, want 1", id, rep.Delivered)
		}
	}

	// Any other topic is refused with 0x80.
	sub := c.Subscribe("devices/#", 1, nil).(*paho3.SubscribeToken)
	sub.WaitTimeout(5 * time.Second)
	if rc := sub.Result()["devices/#"]; rc != 0x80 {
		t.Errorf("SUBACK for devices/# = %#x, want 0x80", rc)
	}
}

func TestMQTT311Refusals(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("")
	if _, err := paho311(t, "tcp://"+addr, dev, dev.RegistrationID, "wrong"); err == nil || !strings.Contains(err.Error(), "bad user name or password") {
		t.Errorf("wrong password: %v, want bad user name or password (0x04)", err)
	}
	if _, err := paho311(t, "tcp://"+addr, dev, "someone-else", dev.DeviceSecret); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Errorf("foreign user name: %v, want not authorized (0x05)", err)
	}
	if _, err := paho311(t, "tcp://"+addr, dev, n.info.AppKey, dev.DeviceSecret); err != nil {
		t.Errorf("the app key as user name: %v", err)
	}
}

func paho5Connect(t *testing.T, addr string, cp *paho5.Connect, onPublish func(*paho5.Publish), onDisconnect func(*paho5.Disconnect)) (*paho5.Client, *paho5.Connack, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho5.ClientConfig{ClientID: cp.ClientID, Conn: conn, OnServerDisconnect: onDisconnect}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			onPublish(pr.Packet)
			return true, nil
		}}
	}
	c := paho5.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { c.Disconnect(&paho5.Disconnect{}) })
	}
	return c, ack, err
}

func creds5(reg *client.Registration, password string) *paho5.Connect {
	return &paho5.Connect{ClientID: reg.RegistrationID, Username: reg.RegistrationID, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true, KeepAlive: 30, CleanStart: true}
}

func TestMQTT5(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("", "news")
	offline := n.pushTo(dev, "waiting")

	if _, ack, err := paho5Connect(t, addr, creds5(dev, "wrong"), nil, nil); err == nil || ack == nil || ack.ReasonCode != 0x86 {
		t.Errorf("wrong password: CONNACK %+v, %v; want 0x86", ack, err)
	}

	got := newReceived()
	c, _, err := paho5Connect(t, addr, creds5(dev, dev.DeviceSecret), func(p *paho5.Publish) { got.add(p.Payload) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
		{Topic: "devices/" + dev.RegistrationID, QoS: 1}, {Topic: "devices/other", QoS: 1},
	}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if !slices.Equal(sa.Reasons, []byte{1, 0x87}) {
		t.Errorf("SUBACK reasons %x, want 01 87", sa.Reasons)
	}
	tagged := n.push(map[string]any{"audience": map[string]any{"tag": []string{"news"}}, "message": 2})
	if ids := got.wait(t, 2); !slices.Equal(ids, []string{offline, tagged}) {
		t.Errorf("received %v, want [%s %s]", ids, offline, tagged)
	}
	// A device may not publish: PUBACK 0x87.
	pr, err := c.Publish(ctx, &paho5.Publish{Topic: "devices/" + dev.RegistrationID, QoS: 1, Payload: []byte("x")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Errorf("PUBLISH from a device: %+v, %v; want PUBACK 0x87", pr, err)
	}
}

func TestMQTT5TakeoverAndShutdown(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("")
	disconnected := make(chan byte, 2)
	if _, _, err := paho5Connect(t, addr, creds5(dev, dev.DeviceSecret), nil, func(d *paho5.Disconnect) { disconnected <- d.ReasonCode }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := paho5Connect(t, addr, creds5(dev, dev.DeviceSecret), nil, func(d *paho5.Disconnect) { disconnected <- d.ReasonCode }); err != nil {
		t.Fatal(err)
	}
	select {
	case rc := <-disconnected:
		if rc != 0x8E {
			t.Errorf("the first connection got DISCONNECT %#x, want 0x8E session taken over", rc)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was not told it was taken over")
	}
	n.stop()
	select {
	case rc := <-disconnected:
		if rc != 0x8B {
			t.Errorf("on shutdown DISCONNECT %#x, want 0x8B", rc)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT on shutdown")
	}
}

// rawClient speaks MQTT with the codec, to do what real client libraries
// will not: withhold PUBACKs, send junk.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	v  byte
}

func dialRaw(t *testing.T, addr string, v byte) *rawClient {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, v: v}
}

func (r *rawClient) send(p packet.Packet) {
	r.t.Helper()
	if err := packet.WritePacket(r.nc, p, r.v); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) read() (packet.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	return packet.ReadPacket(r.nc, r.v, 1<<20)
}

func (r *rawClient) connect(reg *client.Registration, keepAlive uint16) {
	r.t.Helper()
	r.send(&packet.Connect{ClientID: reg.RegistrationID, Username: reg.RegistrationID, Password: []byte(reg.DeviceSecret), KeepAlive: keepAlive, CleanStart: true})
	p, err := r.read()
	if ack, ok := p.(*packet.Connack); err != nil || !ok || ack.ReasonCode != 0 {
		r.t.Fatalf("CONNACK: %+v, %v", p, err)
	}
}

func TestMQTTRedeliveryWithDup(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("")
	id := n.pushTo(dev, "once")
	for _, wantDup := range []bool{false, true} {
		r := dialRaw(t, addr, packet.Version311)
		r.connect(dev, 30)
		r.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + dev.RegistrationID, QoS: 1}}})
		if p, err := r.read(); err != nil || p.Type() != packet.TypeSuback {
			t.Fatalf("SUBACK: %v %v", p, err)
		}
		p, err := r.read()
		pub, ok := p.(*packet.Publish)
		if err != nil || !ok {
			t.Fatalf("PUBLISH: %v, %v", p, err)
		}
		if !strings.Contains(string(pub.Payload), id) || pub.Dup != wantDup || pub.QoS != 1 {
			t.Errorf("connection %d: PUBLISH dup=%v qos=%d %s; want dup=%v", map[bool]int{false: 1, true: 2}[wantDup], pub.Dup, pub.QoS, pub.Payload, wantDup)
		}
		r.nc.Close() // no PUBACK
		waitFor(t, 5*time.Second, func() bool { return n.srv.mqtt.gw.Len() == 0 })
	}
	if msgs := n.poll(dev, ""); len(msgs) != 1 {
		t.Errorf("the unacknowledged message left the inbox: %v", ids(msgs))
	}
}

func TestMQTTBadInput(t *testing.T) {
	n, addr := startMQTTNode(t)
	dev := n.register("")
	closed := func(r *rawClient) bool {
		_, err := r.read()
		return err != nil
	}
	// The first packet must be CONNECT; a huge claimed length allocates nothing.
	r := dialRaw(t, addr, packet.Version311)
	r.nc.Write([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	if !closed(r) {
		t.Error("a PUBLISH before CONNECT did not close the connection")
	}
	r = dialRaw(t, addr, packet.Version311)
	r.nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if !closed(r) {
		t.Error("HTTP on the MQTT port did not close the connection")
	}
	// Silent after connecting with keepalive 1: closed after 1.5 s.
	r = dialRaw(t, addr, packet.Version311)
	r.connect(dev, 1)
	r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := packet.ReadPacket(r.nc, r.v, 1<<20); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a silent client was not disconnected: %v", err)
	} else if time.Since(start) < time.Second {
		t.Errorf("disconnected after %s, before 1.5 × keepalive", time.Since(start))
	}
	// An oversized packet is refused from its header (5.0: DISCONNECT 0x95).
	r = dialRaw(t, addr, packet.Version5)
	r.connect(dev, 30)
	r.nc.Write([]byte{0x82, 0xff, 0xff, 0x03})
	p, _ := r.read()
	if d, ok := p.(*packet.Disconnect); !ok || d.ReasonCode != packet.ReasonPacketTooLarge {
		t.Errorf("oversized packet: got %v, want DISCONNECT 0x95", p)
	}
}

func TestMQTTOverWebSocket(t *testing.T) {
	n, _ := startMQTTNode(t)
	dev := n.register("")
	id := n.pushTo(dev, "over ws")
	c, err := paho311(t, n.info.MQTTWSURL, dev, dev.RegistrationID, dev.DeviceSecret)
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	c.Subscribe("devices/"+dev.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) { got.add(m.Payload()) }).WaitTimeout(5 * time.Second)
	if ids := got.wait(t, 1); ids[0] != id {
		t.Errorf("over WebSocket got %v, want %s", ids, id)
	}
}

// TestMosquittoSub: the Debian mosquitto_sub client, both versions.
func TestMosquittoSub(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto_sub is required under CI=true (.ci/run installs mosquitto-clients)")
		}
		t.Skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
	}
	n, addr := startMQTTNode(t)
	host, port, _ := net.SplitHostPort(addr)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			dev := n.register("")
			id := n.pushTo(dev, v)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", v, "-i", dev.RegistrationID,
				"-u", dev.RegistrationID, "-P", dev.DeviceSecret, "-t", "devices/"+dev.RegistrationID, "-q", "1", "-C", "1").CombinedOutput()
			if err != nil || !strings.Contains(string(out), id) {
				t.Fatalf("mosquitto_sub: %v: %s", err, out)
			}
			waitFor(t, 5*time.Second, func() bool { return len(n.poll(dev, "")) == 0 })
			out, err = exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", v, "-i", dev.RegistrationID,
				"-u", dev.RegistrationID, "-P", "wrong", "-t", "devices/"+dev.RegistrationID, "-q", "1", "-C", "1").CombinedOutput()
			if err == nil {
				t.Errorf("mosquitto_sub with a wrong password succeeded: %s", out)
			}
		})
	}
}

// TestClientListenMQTT: the public Go client over MQTT receives what waited
// and what arrives live, acknowledges each, and drops nothing.
func TestClientListenMQTT(t *testing.T) {
	n, _ := startMQTTNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := client.Register(ctx, nil, n.url, client.RegisterRequest{AppKey: n.info.AppKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.MQTTURL != n.info.MQTTURL {
		t.Fatalf("registration announced MQTT at %q, want %q", reg.MQTTURL, n.info.MQTTURL)
	}
	waiting := n.pushTo(reg, "waiting")
	var got []string
	live := ""
	dev := client.NewDevice(*reg, nil)
	err = dev.ListenMQTT(ctx, reg.MQTTURL, func(m client.Message) error {
		got = append(got, m.ID)
		if len(got) == 1 {
			live = n.pushTo(reg, "live")
			return nil
		}
		return client.ErrStop
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{waiting, live}) {
		t.Errorf("ListenMQTT got %v, want [%s %s]", got, waiting, live)
	}
	waitFor(t, 5*time.Second, func() bool { return len(n.poll(reg, "")) == 0 })
}

// TestMQTTOverTLS: --mqtts with certificate files, through the same gateway.
// The same files make the HTTP listener HTTPS, so the node's calls trust
// the certificate too.
func TestMQTTOverTLS(t *testing.T) {
	certFile, keyFile, der := selfSignedCert(t)
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)

	cfg := testConfig(t)
	cfg.MQTTAddr, cfg.MQTTSAddr, cfg.TLSCert, cfg.TLSKey = "", "127.0.0.1:0", certFile, keyFile
	n := startNode(t, cfg)
	n.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	dev, err := client.Register(context.Background(), n.hc, n.url, client.RegisterRequest{AppKey: n.info.AppKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}
	if dev.MQTTURL != n.info.MQTTSURL {
		t.Errorf("the registration answer gave MQTT URL %q, want the TLS listener's %q", dev.MQTTURL, n.info.MQTTSURL)
	}
	id := n.pushTo(dev, "over TLS")

	opts := paho3.NewClientOptions().AddBroker("ssl://" + strings.TrimPrefix(n.info.MQTTSURL, "mqtts://")).
		SetClientID(dev.RegistrationID).SetUsername(dev.RegistrationID).SetPassword(dev.DeviceSecret).
		SetProtocolVersion(4).SetAutoReconnect(false).SetTLSConfig(&tls.Config{RootCAs: pool})
	c := paho3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over TLS: %v", tok.Error())
	}
	defer c.Disconnect(100)
	got := newReceived()
	c.Subscribe("devices/"+dev.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) { got.add(m.Payload()) }).WaitTimeout(5 * time.Second)
	if ids := got.wait(t, 1); ids[0] != id {
		t.Errorf("over TLS got %v, want %s", ids, id)
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key as PEM
// files and returns their paths and the certificate's DER.
func selfSignedCert(t testing.TB) (certFile, keyFile string, der []byte) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = dir+"/cert.pem", dir+"/key.pem"
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile, der
}

// holdMQTT opens one idle MQTT device connection over TLS (mqtt-tls, target
// is host:port) or WebSocket (mqtt-ws, target is the HTTP base URL), waits
// for the SUBACK and holds it until ctx ends.
func holdMQTT(ctx context.Context, wg *sync.WaitGroup, target, transport string, dev [2]string, dialer *net.Dialer) error {
	var nc net.Conn
	switch transport {
	case "mqtt-tls":
		c, err := (&tls.Dialer{NetDialer: dialer, Config: &tls.Config{InsecureSkipVerify: true}}).DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		nc = c
	case "mqtt-ws":
		hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(target, "http")+"/mqtt", &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"mqtt"}})
		if err != nil {
			return err
		}
		nc = websocket.NetConn(ctx, c, websocket.MessageBinary)
	default:
		return fmt.Errorf("unknown transport %q", transport)
	}
	v := packet.Version311
	if err := packet.WritePacket(nc, &packet.Connect{ClientID: dev[0], Username: dev[0], Password: []byte(dev[1]), KeepAlive: 600, CleanStart: true}, v); err != nil {
		nc.Close()
		return err
	}
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if p, err := packet.ReadPacket(nc, v, 1<<20); err != nil || p.Type() != packet.TypeConnack {
		nc.Close()
		return fmt.Errorf("CONNACK: %v %v", p, err)
	}
	packet.WritePacket(nc, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + dev[0], QoS: 1}}}, v)
	if p, err := packet.ReadPacket(nc, v, 1<<20); err != nil || p.Type() != packet.TypeSuback {
		nc.Close()
		return fmt.Errorf("SUBACK: %v %v", p, err)
	}
	nc.SetReadDeadline(time.Time{})
	wg.Go(func() {
		go func() { <-ctx.Done(); nc.Close() }()
		io.Copy(io.Discard, nc)
	})
	return nil
}
