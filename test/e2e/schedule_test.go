package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// arrivals records when each message came in over MQTT.
type arrivals struct {
	mu sync.Mutex
	at map[string]time.Time // guarded by mu
}

func (a *arrivals) publish(_ paho.Client, m paho.Message) {
	now := time.Now()
	var msg client.Message
	json.Unmarshal(m.Payload(), &msg)
	a.mu.Lock()
	if _, seen := a.at[msg.ID]; !seen {
		a.at[msg.ID] = now
	}
	a.mu.Unlock()
}

func (a *arrivals) get(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[id]
	return t, ok
}

// connectDevice connects reg over MQTT 3.1.1 with Paho, without automatic
// reconnection (the test must see a dropped connection, not hide it), and
// subscribes to its topic. lost receives the error if the connection drops.
func connectDevice(t *testing.T, mqttURL string, reg *client.Registration, a *arrivals) (c paho.Client, lost <-chan error) {
	t.Helper()
	lostc := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker("tcp://" + mqttURL[len("mqtt://"):]).SetClientID(reg.RegistrationID).
		SetUsername(reg.RegistrationID).SetPassword(reg.DeviceSecret).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			lostc <- err
		})
	c = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect to %s: %v", mqttURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if tok := c.Subscribe("devices/"+reg.RegistrationID, 1, a.publish); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c, lostc
}

// TestScheduledPushSurvivesRestart: a push scheduled a few seconds ahead,
// then a restart of the server on the same data before it is due. The
// device reconnects to the new server, finds its inbox without the
// message (not due yet), and then receives it over the same connection,
// without another reconnect, at its due time.
func TestScheduledPushSurvivesRestart(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testScheduledRestart(t) })
	t.Run("postgres", func(t *testing.T) {
		url, schema := heraldtest.PostgresSchema(t)
		testScheduledRestart(t, "--postgres", url, "--postgres-schema", schema)
	})
}

func testScheduledRestart(t *testing.T, storeArgs ...string) {
	const (
		lead = 5 * time.Second // from the push to its send_at: room for a restart
		late = 2 * time.Second // how late after send_at it may arrive
	)
	data := filepath.Join(t.TempDir(), "data")
	args := append([]string{"--mqtt", "127.0.0.1:0"}, storeArgs...)
	srv := startServer(t, data, args...)
	appKey, secret := srv.AppKey, srv.Secret
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: appKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}
	a := &arrivals{at: map[string]time.Time{}}
	first, _ := connectDevice(t, reg.MQTTURL, reg, a)

	sendAt := time.Now().Add(lead)
	id, status := srv.push(t, fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"text":"later"},"options":{"send_at":%q}}`,
		reg.RegistrationID, sendAt.Format(time.RFC3339Nano)))
	if status != http.StatusAccepted {
		t.Fatalf("push: status %d", status)
	}

	srv.Stop()
	first.Disconnect(0)
	srv = startServer(t, data, args...)
	srv.AppKey, srv.Secret = appKey, secret
	regNow := *reg
	regNow.Server, regNow.MQTTURL = srv.URL, mqttURLOf(t, srv)
	_, lost := connectDevice(t, regNow.MQTTURL, &regNow, a)
	msgs, err := client.NewDevice(regNow, nil).Poll(ctx, 0)
	readAt := time.Now()
	if err != nil {
		t.Fatalf("inbox after restart: %v", err)
	}
	if !readAt.Before(sendAt) {
		t.Fatalf("the restart took until %v after send_at: the inbox was read too late to prove anything", readAt.Sub(sendAt))
	}
	if len(msgs) != 0 {
		t.Fatalf("inbox %v before send_at (%v ahead), want empty", msgs, sendAt.Sub(readAt))
	}
	if _, ok := a.get(id); ok {
		t.Fatalf("message arrived over MQTT before it was due")
	}

	deadline := time.Now().Add(lead + late + 5*time.Second)
	for {
		if got, ok := a.get(id); ok {
			if got.Before(sendAt) {
				t.Fatalf("arrived %v before send_at", sendAt.Sub(got))
			}
			if got.After(sendAt.Add(late)) {
				t.Fatalf("arrived %v after send_at, want within %v", got.Sub(sendAt), late)
			}
			t.Logf("arrived %v after send_at, without a reconnect", got.Sub(sendAt))
			break
		}
		select {
		case err := <-lost:
			t.Fatalf("the device's connection dropped before the message came: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message %v after send_at", time.Since(sendAt))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mqttURLOf is the MQTT URL of srv, which a device learns by registering
// again or from its app; the banner has it.
func mqttURLOf(t *testing.T, srv *server) string {
	t.Helper()
	if srv.MQTTURL == "" {
		t.Fatal("the server reports no MQTT listener")
	}
	return srv.MQTTURL
}
