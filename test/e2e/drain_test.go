package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// SIGTERM during a stream of pushes: the node finishes what it took,
// refuses the rest, and exits 0 within its drain timeout; every push it
// answered 202 is delivered after a restart. Pushers behave as a provider
// should: a push whose connection broke is sent again with the same
// idempotency key. No request on a fresh connection is cut: the only
// transport errors are refused connections, and on a kept-alive one the
// race of an idle connection being closed (which HTTP/1.1 leaves to the
// client's retry).
func TestDrainOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	srv := heraldtest.Start(t, dir, "--drain-timeout", "20s")
	ctx := context.Background()
	reg, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}

	type outcome struct {
		id  string // msg_id of a 202
		err string // what went wrong that should not have
	}
	var (
		mu       sync.Mutex
		accepted []string
		bad      []string
		refused  int
	)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	pushOnce := func(key string) (status int, id string, reused bool, err error) {
		body, _ := json.Marshal(map[string]any{
			"audience": map[string]any{"registration_id": []string{reg.RegistrationID}},
			"message":  key, "options": map[string]any{"idempotency_key": key},
		})
		req, _ := http.NewRequest("POST", srv.URL+"/v1/push", bytes.NewReader(body))
		req.SetBasicAuth(srv.AppKey, srv.Secret)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", reused, err
		}
		defer resp.Body.Close()
		var out struct {
			MsgID string `json:"msg_id"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.MsgID, reused, nil
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				for try := 0; ; try++ {
					status, id, reused, err := pushOnce(key)
					switch {
					case err == nil && status == http.StatusAccepted:
						mu.Lock()
						accepted = append(accepted, id)
						mu.Unlock()
					case err == nil && status == http.StatusServiceUnavailable:
						// Draining: the node says so; a provider goes elsewhere.
					case err == nil:
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s: status %d", key, status))
						mu.Unlock()
					case errors.Is(err, syscall.ECONNREFUSED):
						mu.Lock()
						refused++
						mu.Unlock()
						return // the listener is closed: this node is gone
					case reused && try < 20:
						// An idle connection closed under the request: send it
						// again (the pool may hand out another idle one that is
						// closing too, so more than once).
						continue
					default:
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s (reused %v, try %d): %v", key, reused, try, err))
						mu.Unlock()
					}
					break
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted)
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() < 200 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-srv.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("herald did not exit within 30 s of SIGTERM")
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if code := srv.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0\n%s", code, srv.Log)
	}
	for _, b := range bad {
		t.Errorf("a push went wrong during the drain: %s", b)
	}

	again := heraldtest.Start(t, dir)
	r := *reg
	r.Server = again.URL
	got := drainInbox(t, &r)
	for _, id := range accepted {
		if !got[id] {
			t.Errorf("push %s was answered 202 before SIGTERM and is not in the inbox after the restart", id)
		}
	}
	t.Logf("%d pushes accepted, %d pushers refused at the end; drain took %v", len(accepted), refused, took.Round(time.Millisecond))
}
