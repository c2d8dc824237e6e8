package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// scrape reads url's Prometheus text into series (name{labels} -> value).
func scrape(t *testing.T, u string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q, want the text format", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// The metrics move as real traffic goes through: pushes by audience,
// connections, messages sent and acked by transport, requests by route and
// status, store commits, the runtime's and the process's own; none carries
// a device ID.
func TestMetrics(t *testing.T) {
	srv := heraldtest.Start(t, t.TempDir(), "--metrics", "127.0.0.1:0")
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the HTTP listener with --metrics: %d, want 404", resp.StatusCode)
	}
	// The banner's metrics line names the listener of its own.
	metricsURL := srv.MetricsURL
	if metricsURL == "" {
		t.Fatal("the banner shows no metrics URL")
	}

	ctx := context.Background()
	reg, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android", Tags: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	u := strings.Replace(srv.URL, "http://", "ws://", 1) + "/v1/inbox/ws?" +
		url.Values{"registration_id": {reg.RegistrationID}, "device_secret": {reg.DeviceSecret}}.Encode()
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws.Read(rctx) // hello
	push := func(audience any) {
		body, _ := json.Marshal(map[string]any{"audience": audience, "message": 1})
		req, _ := http.NewRequest("POST", srv.URL+"/v1/push", bytes.NewReader(body))
		req.SetBasicAuth(srv.AppKey, srv.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	for range 3 {
		push(map[string]any{"registration_id": []string{reg.RegistrationID}})
	}
	push(map[string]any{"tag": []string{"news"}})
	push("all")
	for range 5 {
		_, b, err := ws.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Message struct {
				ID string `json:"id"`
			} `json:"message"`
		}
		json.Unmarshal(b, &f)
		ws.Write(rctx, websocket.MessageText, []byte(`{"type":"ack","ids":["`+f.Message.ID+`"]}`))
	}

	var m map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = scrape(t, metricsURL)
		if m[`herald_messages_acked_total{transport="ws"}`] >= 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`herald_pushes_accepted_total{audience="direct"}`:                 3,
		`herald_pushes_accepted_total{audience="tag"}`:                    1,
		`herald_pushes_accepted_total{audience="broadcast"}`:              1,
		`herald_connections{transport="ws"}`:                              1,
		`herald_connects_total{transport="ws"}`:                           1,
		`herald_messages_sent_total{transport="ws"}`:                      5,
		`herald_messages_acked_total{transport="ws"}`:                     5,
		`herald_http_requests_total{code="202",route="POST /v1/push"}`:    5,
		`herald_http_requests_total{code="201",route="POST /v1/devices"}`: 1,
		`herald_http_requests_total{code="101",route="GET /v1/inbox/ws"}`: 1,
	} {
		if got := m[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, series := range []string{"herald_store_commit_duration_seconds_count", "herald_store_commit_batch_size_count",
		"go_goroutines", "process_resident_memory_bytes", "herald_dispatch_queue_depth",
		"herald_inbox_pending_messages", "herald_inbox_oldest_pending_age_seconds"} {
		if _, ok := m[series]; !ok {
			t.Errorf("no %s", series)
		}
	}
	if m["herald_store_commit_duration_seconds_count"] < 5 {
		t.Errorf("%v store commits counted for 5 pushes, a registration and 5 acks", m["herald_store_commit_duration_seconds_count"])
	}
	for series := range m {
		if strings.Contains(series, reg.RegistrationID) || strings.Contains(series, srv.AppKey) {
			t.Errorf("a series names the device or the app: %s", series)
		}
	}

	ws.Close(websocket.StatusNormalClosure, "")
	deadline = time.Now().Add(10 * time.Second)
	for {
		m = scrape(t, metricsURL)
		if m[`herald_connections{transport="ws"}`] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m[`herald_connections{transport="ws"}`] != 0 || m[`herald_disconnects_total{reason="closed",transport="ws"}`] != 1 {
		t.Errorf("after the close: connections %v, disconnects %v; want 0 and 1",
			m[`herald_connections{transport="ws"}`], m[`herald_disconnects_total{reason="closed",transport="ws"}`])
	}
}
