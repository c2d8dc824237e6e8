package exhaust

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/client"
)

// TestAuthenticatedConnectionsAreNotClosed: with a small cap on
// unauthenticated connections, a flood of silent ones is closed oldest
// first, but a device connection that has authenticated never is, on any
// transport: MQTT over TCP and over WebSocket (the CONNECT marks it), SSE,
// the WebSocket inbox and a long-poll (the device secret on the request
// marks it), and Mozilla's push protocol (its hello marks it). Each then
// receives a push, and the oldest silent connection was closed.
func TestAuthenticatedConnectionsAreNotClosed(t *testing.T) {
	n := start(t, nil, "--max-unauth-conns", "20", "--mqtt-connect-timeout", "2m")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The oldest connection of all: silent, so the first to be closed.
	oldest, err := dialFrom("127.0.2.1", hostPort(n.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer oldest.Close()

	every := openEvery(ctx, t, n)

	// The flood: 200 silent connections, ten times the cap, from other
	// addresses, on both listeners.
	var flood []net.Conn
	defer func() { closeAll(flood) }()
	for i := range 200 {
		addr := hostPort(n.URL)
		if i%2 == 1 {
			addr = n.mqttAddr
		}
		c, err := dialFrom(fmt.Sprintf("127.0.2.%d", 2+i%50), addr)
		if err != nil {
			continue // refused while the closes catch up
		}
		flood = append(flood, c)
	}
	oldest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := oldest.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the oldest silent connection is still open after the flood (%v)", err)
	}

	// Every authenticated connection is still there and receives.
	every.receiveEach(ctx, t, n)
}

// every is a device connection on each long-lived transport, each
// authenticated: MQTT over TCP and over WebSocket, SSE, the WebSocket
// inbox, a long-poll on a keep-alive connection, and Mozilla's push
// protocol.
type every struct {
	mqttTCP, mqttWS *device
	sseReg          *client.Registration
	sseGot          chan string
	inboxReg        *client.Registration
	inbox           *websocket.Conn
	moz             *websocket.Conn
	pollReg         *client.Registration
	pollDials       *atomic.Int32
	pollGot         chan string
	pollErr         chan error
}

// openEvery connects a device on every long-lived transport of n; the
// connections end with ctx or the test.
func openEvery(ctx context.Context, t *testing.T, n *node) *every {
	t.Helper()
	base, _ := url.Parse(n.URL)
	wsBase := "ws://" + base.Host
	e := &every{}
	// MQTT over TCP, with Paho.
	e.mqttTCP = connect(t, "tcp://"+n.mqttAddr, n.register())

	// MQTT over WebSocket, with Paho too (it does not reconnect by
	// itself, so a closed connection shows).
	e.mqttWS = connect(t, wsBase+"/mqtt", n.register())

	// SSE.
	sseReg := n.register()
	e.sseReg = sseReg
	req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+"/v1/inbox/stream", nil)
	req.SetBasicAuth(sseReg.RegistrationID, sseReg.DeviceSecret)
	sseResp, err := http.DefaultClient.Do(req)
	if err != nil || sseResp.StatusCode != http.StatusOK {
		t.Fatalf("SSE: %v %v", sseResp, err)
	}
	t.Cleanup(func() { sseResp.Body.Close() })
	sseGot := make(chan string, 10)
	e.sseGot = sseGot
	go func() {
		sc := bufio.NewScanner(sseResp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				sseGot <- data
			}
		}
		close(sseGot)
	}()

	// The WebSocket inbox.
	inboxReg := n.register()
	e.inboxReg = inboxReg
	inbox, _, err := websocket.Dial(ctx, wsBase+"/v1/inbox/ws?"+url.Values{
		"registration_id": {inboxReg.RegistrationID}, "device_secret": {inboxReg.DeviceSecret}}.Encode(), nil)
	if err != nil {
		t.Fatalf("WebSocket inbox: %v", err)
	}
	t.Cleanup(func() { inbox.CloseNow() })
	e.inbox = inbox
	if _, b, err := inbox.Read(ctx); err != nil || !strings.Contains(string(b), `"hello"`) {
		t.Fatalf("the WebSocket inbox's hello: %s, %v", b, err)
	}

	// Mozilla's push protocol: a hello gets a UAID.
	moz, _, err := websocket.Dial(ctx, wsBase+"/mozpush", &websocket.DialOptions{Subprotocols: []string{"push-notification"}})
	if err != nil {
		t.Fatalf("mozpush: %v", err)
	}
	t.Cleanup(func() { moz.CloseNow() })
	e.moz = moz
	if err := moz.Write(ctx, websocket.MessageText, []byte(`{"messageType":"hello","use_webpush":true}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := moz.Read(ctx); err != nil || !strings.Contains(string(b), `"hello"`) {
		t.Fatalf("mozpush hello: %s, %v", b, err)
	}

	// A long-poll, on a keep-alive connection that an earlier poll (with
	// the device secret) authenticated. The client counts its dials: had
	// the server closed that connection, net/http would retry the GET on
	// a new one and hide it.
	pollReg := n.register()
	e.pollReg = pollReg
	pollDials := &atomic.Int32{}
	e.pollDials = pollDials
	pollHC := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		pollDials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	pollDev := client.NewDevice(*pollReg, pollHC)
	first := n.push(pollReg.RegistrationID, "first")
	if msgs, err := pollDev.Poll(ctx, 0); err != nil || len(msgs) != 1 || msgs[0].ID != first {
		t.Fatalf("the first poll: %v, %v", msgs, err)
	}
	if err := pollDev.Ack(ctx, first); err != nil {
		t.Fatal(err)
	}
	pollGot := make(chan string, 1)
	pollErr := make(chan error, 1)
	e.pollGot, e.pollErr = pollGot, pollErr
	go func() {
		msgs, err := pollDev.Poll(ctx, 50*time.Second)
		if err != nil {
			pollErr <- err
			return
		}
		for _, m := range msgs {
			pollGot <- m.ID
		}
	}()

	return e
}

// receiveEach pushes to every connection of e and checks it arrives there,
// on the connection it was sent to.
func (e *every) receiveEach(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	mqttTCP, mqttWS, inbox, moz := e.mqttTCP, e.mqttWS, e.inbox, e.moz
	sseReg, sseGot, inboxReg, pollReg := e.sseReg, e.sseGot, e.inboxReg, e.pollReg
	pollGot, pollErr, pollDials := e.pollGot, e.pollErr, e.pollDials
	mqttTCP.receive(t, n.push(mqttTCP.reg.RegistrationID, "tcp"))
	mqttTCP.stillConnected(t)
	mqttWS.receive(t, n.push(mqttWS.reg.RegistrationID, "ws"))
	mqttWS.stillConnected(t)
	id := n.push(sseReg.RegistrationID, "sse")
	receiveFrom(t, "SSE", sseGot, id)
	id = n.push(inboxReg.RegistrationID, "inbox")
	if _, b, err := inbox.Read(ctx); err != nil || !strings.Contains(string(b), id) {
		t.Fatalf("the WebSocket inbox read %s, %v; want message %s", b, err, id)
	}
	id = n.push(pollReg.RegistrationID, "poll")
	select {
	case got := <-pollGot:
		if got != id {
			t.Fatalf("the long-poll answered %s, want %s", got, id)
		}
	case err := <-pollErr:
		t.Fatalf("the long-poll failed: %v", err)
	case <-ctx.Done():
		t.Fatal("the long-poll never answered")
	}
	if n := pollDials.Load(); n != 1 {
		t.Errorf("the polling device dialled %d connections, want 1: its connection was closed", n)
	}
	if err := moz.Write(ctx, websocket.MessageText, []byte(`{}`)); err != nil {
		t.Fatalf("mozpush ping after the flood: %v", err)
	}
	if _, b, err := moz.Read(ctx); err != nil || string(b) != "{}" {
		t.Fatalf("mozpush pong after the flood: %q, %v", b, err)
	}
}

// receiveFrom waits for id on got, which a transport's reader fills.
func receiveFrom(t *testing.T, what string, got <-chan string, id string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s, ok := <-got:
			if !ok {
				t.Fatalf("%s: the connection ended before message %s", what, id)
			}
			if strings.Contains(s, id) {
				return id
			}
		case <-timeout:
			t.Fatalf("%s: no message %s in 30 s", what, id)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
