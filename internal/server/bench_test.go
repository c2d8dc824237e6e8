package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/heraldpush/herald/client"
)

// These benchmarks go through real HTTP on loopback to a full node on the
// store the node would use (embedded, or PostgreSQL when
// HERALD_BENCH_POSTGRES is set to a URL), so they include the durable write.

func benchNode(b *testing.B) *node {
	cfg := testConfig(b)
	if os.Getenv("HERALD_BENCH_POSTGRES") != "" {
		cfg.PostgresURL, cfg.PostgresSchema = postgresConfig(b)
	}
	cfg.RegisterRate = 1e9
	cfg.AppPushRate, cfg.AppPushBurst = 1e9, 1e9
	return startNode(b, cfg)
}

func benchPost(b *testing.B, hc *http.Client, url string, auth func(*http.Request), body []byte, want int) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	auth(req)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
}

// BenchmarkPushSingle: one durable push per HTTP call to one device, from
// parallel callers (group commit lets concurrent pushes share an fsync).
func BenchmarkPushSingle(b *testing.B) {
	n := benchNode(b)
	dev := n.register("")
	body, _ := json.Marshal(map[string]any{
		"audience":     map[string]any{"registration_id": []string{dev.RegistrationID}},
		"notification": map[string]string{"title": "Hello", "body": "a push of a typical size, with a little text in it"},
		"options":      map[string]any{"ttl": 3600},
	})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchPost(b, hc, n.url+"/v1/push", n.provider(), body, http.StatusAccepted)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

// BenchmarkPushBatch: batches of 100 pushes per call (one durable write
// each); b.N counts pushes.
func BenchmarkPushBatch(b *testing.B) {
	n := benchNode(b)
	devs := make([]string, 10)
	for i := range devs {
		devs[i] = n.register("").RegistrationID
	}
	const size = 100
	pushes := make([]any, size)
	for i := range pushes {
		pushes[i] = map[string]any{
			"audience":     map[string]any{"registration_id": []string{devs[i%len(devs)]}},
			"notification": map[string]string{"title": "Hello", "body": fmt.Sprintf("push %d of a batch", i)},
		}
	}
	body, _ := json.Marshal(map[string]any{"pushes": pushes})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	calls := (b.N + size - 1) / size
	b.SetParallelism(2)
	b.ResetTimer()
	next := make(chan struct{}, calls)
	for range calls {
		next <- struct{}{}
	}
	close(next)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := <-next; ok {
				benchPost(b, hc, n.url+"/v1/push/batch", n.provider(), body, http.StatusAccepted)
			}
		}
	})
	b.ReportMetric(float64(calls*size)/b.Elapsed().Seconds(), "pushes/s")
}

// BenchmarkPollRoundTrip: push to a device, poll it, ack it — the whole
// pull-model cycle of one message.
func BenchmarkPollRoundTrip(b *testing.B) {
	n := benchNode(b)
	reg := n.register("")
	reg.Server = n.url
	dev := client.NewDevice(*reg, nil)
	body, _ := json.Marshal(map[string]any{
		"audience": map[string]any{"registration_id": []string{reg.RegistrationID}},
		"message":  map[string]int{"n": 1},
	})
	hc := &http.Client{}
	ctx := b.Context()
	b.ResetTimer()
	for range b.N {
		benchPost(b, hc, n.url+"/v1/push", n.provider(), body, http.StatusAccepted)
		msgs, err := dev.Poll(ctx, 0)
		if err != nil || len(msgs) != 1 {
			b.Fatalf("poll: %v, %d messages", err, len(msgs))
		}
		if err := dev.Ack(ctx, msgs[0].ID); err != nil {
			b.Fatal(err)
		}
	}
}
