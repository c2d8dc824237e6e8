package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// The devices of these tests speak each transport's wire protocol
// (docs/protocol.md) and put what they receive in an inbox, acknowledging
// each message.

func messageID(payload []byte) string {
	var m struct {
		ID string `json:"id"`
	}
	json.Unmarshal(payload, &m)
	return m.ID
}

// mqttDevice is an MQTT 5 connection of reg to node, subscribed.
type mqttDevice struct {
	c            *paho5.Client
	in           *inbox
	disconnected chan byte              // the server's DISCONNECT reason codes
	disconnect   chan *paho5.Disconnect // and the DISCONNECTs themselves
	closed       atomic.Bool
}

func connectMQTT(t *testing.T, node *heraldtest.Server, reg *client.Registration, in *inbox) *mqttDevice {
	t.Helper()
	addr := strings.TrimPrefix(node.MQTTURL, "mqtt://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &mqttDevice{in: in, disconnected: make(chan byte, 4), disconnect: make(chan *paho5.Disconnect, 4)}
	d.c = paho5.NewClient(paho5.ClientConfig{
		ClientID: reg.RegistrationID, Conn: conn,
		OnServerDisconnect: func(p *paho5.Disconnect) { d.disconnected <- p.ReasonCode; d.disconnect <- p },
		OnClientError:      func(error) { d.closed.Store(true) },
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			in.add(messageID(pr.Packet.Payload))
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho5.Connect{ClientID: reg.RegistrationID, Username: reg.RegistrationID, UsernameFlag: true,
		Password: []byte(reg.DeviceSecret), PasswordFlag: true, KeepAlive: 30, CleanStart: true}
	if ack, err := d.c.Connect(ctx, cp); err != nil {
		t.Fatalf("MQTT connect to %s: %v (%+v)", addr, err, ack)
	}
	t.Cleanup(func() { d.c.Disconnect(&paho5.Disconnect{}) })
	if _, err := d.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "devices/" + reg.RegistrationID, QoS: 1}}}); err != nil {
		t.Fatalf("MQTT subscribe: %v", err)
	}
	return d
}

// wsDevice is a WebSocket connection of reg to node.
type wsDevice struct {
	c      *websocket.Conn
	closed chan websocket.StatusCode // the close code, once the connection ends
}

func connectWS(t *testing.T, node *heraldtest.Server, reg *client.Registration, in *inbox) *wsDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(node.URL, "http://", "ws://", 1) + "/v1/inbox/ws?" +
		url.Values{"registration_id": {reg.RegistrationID}, "device_secret": {reg.DeviceSecret}}.Encode()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("WebSocket dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"hello"`) {
		t.Fatalf("WebSocket: first frame %q, %v; want the hello", b, err)
	}
	d := &wsDevice{c: c, closed: make(chan websocket.StatusCode, 1)}
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				d.closed <- websocket.CloseStatus(err)
				return
			}
			var f struct {
				Type    string          `json:"type"`
				Message json.RawMessage `json:"message"`
			}
			json.Unmarshal(b, &f)
			switch f.Type {
			case "message":
				id := messageID(f.Message)
				in.add(id)
				c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ack","ids":["`+id+`"]}`))
			case "ping":
				c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"pong"}`))
			}
		}
	}()
	return d
}

// connectSSE opens reg's event stream on node and acknowledges each
// message with POST /v1/inbox/ack to ackTo, which may be another node.
func connectSSE(t *testing.T, node, ackTo *heraldtest.Server, reg *client.Registration, in *inbox) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	q := url.Values{"registration_id": {reg.RegistrationID}, "device_secret": {reg.DeviceSecret}}
	req, _ := http.NewRequestWithContext(ctx, "GET", node.URL+"/v1/inbox/stream?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("SSE: %v %v", resp, err)
	}
	hello := make(chan struct{})
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
				if event == "hello" {
					close(hello)
				}
			case strings.HasPrefix(line, "data: ") && event == "":
				id := messageID([]byte(strings.TrimPrefix(line, "data: ")))
				in.add(id)
				ack, _ := http.NewRequest("POST", ackTo.URL+"/v1/inbox/ack", strings.NewReader(`{"ids":["`+id+`"]}`))
				ack.SetBasicAuth(reg.RegistrationID, reg.DeviceSecret)
				ack.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(ack); err == nil {
					resp.Body.Close()
				}
			case line == "":
				event = ""
			}
		}
	}()
	select {
	case <-hello:
	case <-time.After(10 * time.Second):
		t.Fatal("SSE: no hello")
	}
}

// listenPoll long-polls reg's inbox on node with the Go client.
func listenPoll(t *testing.T, node *heraldtest.Server, reg *client.Registration, in *inbox) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := *reg
	r.Server = node.URL
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.NewDevice(r, nil).Listen(ctx, func(m client.Message) error {
			in.add(m.ID)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
}
