package sse

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// The gateway's timing and framing with short intervals; the protocol as a
// whole is tested against a real node in internal/server.

// Over HTTP/1.1 the stream hijacks the connection; over HTTP/2 it cannot,
// and writes through the ResponseWriter. Both must say the same.
func TestHeartbeatAndEventFraming(t *testing.T) {
	t.Run("HTTP/1.1", func(t *testing.T) { testFraming(t, false) })
	t.Run("HTTP/2", func(t *testing.T) { testFraming(t, true) })
}

func testFraming(t *testing.T, h2 bool) {
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := registry.New(st, time.Now, 10)
	hub := session.NewHub()
	svc := delivery.New(st, reg, router.Local{Hub: hub}, delivery.Options{Limits: push.DefaultLimits()})
	ctx := context.Background()
	app, _, _ := reg.CreateApp(ctx, "a")
	dev, secret, err := reg.Register(ctx, registry.Registration{AppKey: app.Key, Platform: push.Web})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	New(reg, svc, Options{Heartbeat: 100 * time.Millisecond, Retry: 1500 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Register(mux)
	srv := httptest.NewUnstartedServer(mux)
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/v1/inbox/stream", nil)
	req.SetBasicAuth(dev.ID, secret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
		t.Fatalf("served over %s, want HTTP/%d", resp.Proto, want)
	}
	if resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("headers %v", resp.Header)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no line within 5 s")
		}
		return ""
	}
	for _, want := range []string{"retry: 1500", "event: hello", `data: {"heartbeat":0,"window":64}`, ""} {
		if got := next(); got != want {
			t.Fatalf("line %q, want %q", got, want)
		}
	}
	// Silence brings comment lines, which EventSource ignores.
	for range 2 {
		if got, blank := next(), next(); got != ": heartbeat" || blank != "" {
			t.Fatalf("after silence: %q %q, want a heartbeat comment", got, blank)
		}
	}
	// A message with a newline in its data stays one event.
	res, err := svc.Push(ctx, app, &push.Request{
		Audience: &push.Audience{RegistrationIDs: []string{dev.ID}},
		Message:  []byte("{\n\"a\": \"b\"\n}"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for {
		l := next()
		if strings.HasPrefix(l, ":") || l == "" {
			continue
		}
		if l != "id: "+res.MsgID {
			t.Fatalf("line %q, want the id field", l)
		}
		break
	}
	data := next()
	if !strings.HasPrefix(data, `data: {"id":"`+res.MsgID+`","message":{"a":"b"}`) || next() != "" {
		t.Fatalf("data line %q", data)
	}
}
