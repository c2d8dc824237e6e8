package ws

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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
)

// The gateway's timing (pings, the ping timeout) with short intervals; the
// protocol as a whole is tested against a real node in internal/server.

func startGateway(t *testing.T, o Options) (base string, dev push.Device, secret string) {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(st, time.Now, 10)
	hub := session.NewHub()
	svc := delivery.New(st, reg, router.Local{Hub: hub}, delivery.Options{Limits: push.DefaultLimits()})
	ctx := context.Background()
	app, _, err := reg.CreateApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	dev, secret, err = reg.Register(ctx, registry.Registration{AppKey: app.Key, Platform: push.Web})
	if err != nil {
		t.Fatal(err)
	}
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := http.NewServeMux()
	New(reg, svc, o).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, dev, secret
}

func dial(t *testing.T, base string, dev push.Device, secret string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := url.Values{"registration_id": {dev.ID}, "device_secret": {secret}}
	c, _, err := websocket.Dial(ctx, strings.Replace(base, "http", "ws", 1)+"/v1/inbox/ws?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func readType(t *testing.T, c *websocket.Conn, within time.Duration) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		return "", err
	}
	var f struct{ Type string }
	json.Unmarshal(b, &f)
	return f.Type, nil
}

func TestPingAfterSilenceAndTimeout(t *testing.T) {
	base, dev, secret := startGateway(t, Options{PingInterval: 200 * time.Millisecond})
	c := dial(t, base, dev, secret)
	if typ, err := readType(t, c, 5*time.Second); typ != TypeHello {
		t.Fatalf("first frame %q, %v", typ, err)
	}
	// A client that answers keeps the connection.
	for range 3 {
		if typ, err := readType(t, c, 5*time.Second); typ != TypePing {
			t.Fatalf("after silence: %q, %v; want a ping", typ, err)
		}
		c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"pong"}`))
	}
	// One that does not is closed with 1008 after twice the interval.
	if typ, err := readType(t, c, 5*time.Second); typ != TypePing {
		t.Fatalf("want a ping, got %q, %v", typ, err)
	}
	start := time.Now()
	_, err := readType(t, c, 5*time.Second)
	if code := websocket.CloseStatus(err); code != ClosePolicy {
		t.Fatalf("an unanswered ping: %v, want close 1008", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("closed %v after the ping; the client has a whole interval to answer", waited)
	}
}

func TestClientPingIsAnswered(t *testing.T) {
	base, dev, secret := startGateway(t, Options{})
	c := dial(t, base, dev, secret)
	readType(t, c, 5*time.Second) // hello
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`))
	if typ, err := readType(t, c, 5*time.Second); typ != TypePong {
		t.Fatalf("answer to a ping: %q, %v", typ, err)
	}
}
