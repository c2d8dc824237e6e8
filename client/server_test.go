package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// Failover against real `herald serve` processes. Two single-node servers
// share no devices, so a device cannot move from one live node to another
// here (that waits for the cluster mode); what is shown is what holds
// without it: a list whose first server refuses connections delivers
// through the next, and a device whose server is killed (kill -9) goes on
// when it comes back on the same address, without handling a message twice.

// TestMain builds the herald binary the tests run (test/heraldtest).
func TestMain(m *testing.M) { heraldtest.Main(m) }

// node is a running server with the credentials of its first start, which
// a restart does not print again.
type node struct {
	*heraldtest.Server
	data, appKey, secret string
}

func startNode(t *testing.T) *node {
	t.Helper()
	data := t.TempDir()
	s := heraldtest.Start(t, data, "--mqtt", "127.0.0.1:0")
	return &node{Server: s, data: data, appKey: s.AppKey, secret: s.Secret}
}

// restart starts the server again on its data and its addresses, after it
// was killed.
func (n *node) restart(t *testing.T) {
	t.Helper()
	hu, _ := url.Parse(n.URL)
	mu, _ := url.Parse(n.MQTTURL)
	n.Server = heraldtest.Start(t, n.data, "--http", hu.Host, "--mqtt", mu.Host)
}

func (n *node) push(t *testing.T, regID, body string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"audience":     map[string]any{"registration_id": []string{regID}},
		"notification": map[string]string{"body": body},
		"options":      map[string]any{"ttl": 3600},
	})
	req, _ := http.NewRequest("POST", n.URL+"/v1/push", strings.NewReader(string(b)))
	req.SetBasicAuth(n.appKey, n.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		MsgID string `json:"msg_id"`
	}
	if json.NewDecoder(resp.Body).Decode(&out); resp.StatusCode != 202 || out.MsgID == "" {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	return out.MsgID
}

// waitDelivered waits until the server says msgID was acknowledged.
func (n *node) waitDelivered(t *testing.T, msgID string) {
	t.Helper()
	state := ""
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", n.URL+"/v1/messages/"+msgID, nil)
		req.SetBasicAuth(n.appKey, n.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("report: %v", err)
		}
		var r struct {
			State string `json:"state"`
		}
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if state = r.State; state == "delivered" {
			return
		}
	}
	t.Fatalf("message %s is %q, not delivered: the device did not acknowledge it", msgID, state)
}

// deadAddr is an address where nothing listens: a port just closed.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func register(t *testing.T, ctx context.Context, n *node) *client.Registration {
	t.Helper()
	dead := "http://" + deadAddr(t)
	reg, err := client.RegisterAny(ctx, nil, []string{dead, n.URL}, client.RegisterRequest{AppKey: n.appKey, Platform: "android"})
	if err != nil {
		t.Fatalf("RegisterAny past a dead server: %v", err)
	}
	if reg.Server != dead || len(reg.Servers) != 2 {
		t.Fatalf("registration lists %q %q, want the dead server first of two", reg.Server, reg.Servers)
	}
	return reg
}

func TestFailoverPastADeadServer(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reg := register(t, ctx, n)
	dev := client.NewDevice(*reg, nil)

	first := n.push(t, reg.RegistrationID, "polled")
	msgs, err := dev.Poll(ctx, 0)
	if err != nil || len(msgs) != 1 || msgs[0].ID != first {
		t.Fatalf("Poll = %v, %v; want %s", msgs, err, first)
	}
	second := n.push(t, reg.RegistrationID, "listened")
	var got []string
	err = dev.Listen(ctx, func(m client.Message) error {
		if got = append(got, m.ID); m.ID == second {
			return client.ErrStop
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]string{first, second}) {
		t.Fatalf("Listen = %v, handled %v; want nil, [%s %s]", err, got, first, second)
	}
	n.waitDelivered(t, second)
}

func TestMQTTFailoverPastADeadServer(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reg := register(t, ctx, n)
	id := n.push(t, reg.RegistrationID, "over MQTT")
	var got []string
	err := client.NewDevice(*reg, nil).ListenMQTTAny(ctx, []string{"mqtt://" + deadAddr(t), n.MQTTURL}, func(m client.Message) error {
		got = append(got, m.ID)
		return client.ErrStop
	})
	if err != nil || fmt.Sprint(got) != "["+id+"]" {
		t.Fatalf("ListenMQTTAny = %v, handled %v; want nil, [%s]", err, got, id)
	}
	n.waitDelivered(t, id)
}

// testRestart runs listen (Listen or ListenMQTTAny) while the server is
// killed in the middle of handling a message, before its acknowledgement,
// and started again on the same address: the message comes again and is
// acknowledged without being handled twice, and the next one is handled.
func testRestart(t *testing.T, listen func(ctx context.Context, dev *client.Device, mqttURLs []string, handle func(client.Message) error) error) {
	n := startNode(t)
	mqttURLs := []string{"mqtt://" + deadAddr(t), n.MQTTURL}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	reg := register(t, ctx, n)
	dev := client.NewDevice(*reg, nil)

	first := n.push(t, reg.RegistrationID, "before the kill")
	handled := make(chan string, 10)
	killed := make(chan struct{})
	var kill sync.Once
	ended := make(chan error, 1)
	go func() {
		ended <- listen(ctx, dev, mqttURLs, func(m client.Message) error {
			handled <- m.ID
			if m.ID == first {
				// The handler returns once the server is gone: no ack
				// reaches it.
				kill.Do(func() { n.Kill(); close(killed) })
			}
			return nil
		})
	}()
	select {
	case <-killed:
	case err := <-ended:
		t.Fatalf("listening ended before the first message: %v", err)
	case <-ctx.Done():
		t.Fatal("the first message did not arrive")
	}
	n.restart(t)
	n.waitDelivered(t, first) // it came again, and was acknowledged
	second := n.push(t, reg.RegistrationID, "after the restart")
	var got []string
	for len(got) < 2 {
		select {
		case id := <-handled:
			got = append(got, id)
		case err := <-ended:
			t.Fatalf("listening ended: %v (handled %v)", err, got)
		case <-ctx.Done():
			t.Fatalf("handled %v; the message pushed after the restart did not arrive", got)
		}
	}
	n.waitDelivered(t, second)
	cancel()
	<-ended
	close(handled)
	for id := range handled {
		got = append(got, id)
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{first, second}) {
		t.Errorf("handled %v, want [%s %s]: once each", got, first, second)
	}
}

func TestListenAcrossAKill(t *testing.T) {
	testRestart(t, func(ctx context.Context, dev *client.Device, _ []string, handle func(client.Message) error) error {
		return dev.Listen(ctx, handle)
	})
}

func TestListenMQTTAcrossAKill(t *testing.T) {
	testRestart(t, func(ctx context.Context, dev *client.Device, mqttURLs []string, handle func(client.Message) error) error {
		return dev.ListenMQTTAny(ctx, mqttURLs, handle)
	})
}
