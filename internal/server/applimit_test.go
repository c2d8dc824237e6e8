package server

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pushCall is one push request through the real listener, answered with
// its status, error code and Retry-After.
type pushCall struct {
	status     int
	code       string
	retryAfter string
}

func (n *node) raw(method, url string, auth func(*http.Request), header http.Header, body string) pushCall {
	n.t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct{ Error struct{ Code string } }
	json.Unmarshal(raw, &env)
	return pushCall{resp.StatusCode, env.Error.Code, resp.Header.Get("Retry-After")}
}

// TestAppPushRateLimit: an app's pushes over /v1/push, /v1/push/batch and
// /wpush share one budget; past it every route answers 429 with a
// Retry-After that, waited for, lets the push through; a batch that does
// not fit is refused whole; another app is not affected.
func TestAppPushRateLimit(t *testing.T) {
	const rate, burst = 5, 10
	cfg := testConfig(t)
	cfg.AppPushRate, cfg.AppPushBurst, cfg.MaxBatch = rate, burst, burst
	n := startNode(t, cfg)
	dev := n.register("")
	to := fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"n":%%d}}`, dev.RegistrationID)
	var sub struct{ Endpoint string }
	if status, code := n.call("POST", "/v1/webpush/subscriptions", deviceAuth(dev), nil, &sub); status != http.StatusCreated {
		t.Fatalf("subscribe: %d %s", status, code)
	}
	jsonType := http.Header{"Content-Type": {"application/json"}}
	single := func(i int) pushCall {
		return n.raw("POST", n.url+"/v1/push", n.provider(), jsonType, fmt.Sprintf(to, i))
	}
	webPush := func() pushCall {
		return n.raw("POST", sub.Endpoint, nil, http.Header{"Ttl": {"60"}}, "hello")
	}
	batch := func(size int) pushCall {
		pushes := make([]string, size)
		for i := range pushes {
			pushes[i] = fmt.Sprintf(to, 100+i)
		}
		return n.raw("POST", n.url+"/v1/push/batch", n.provider(), jsonType, `{"pushes":[`+strings.Join(pushes, ",")+`]}`)
	}

	// The burst is spent half through /v1/push, half through /wpush.
	for i := range burst / 2 {
		if c := single(i); c.status != http.StatusAccepted {
			t.Fatalf("push %d within the burst: %+v", i, c)
		}
		if c := webPush(); c.status != http.StatusCreated {
			t.Fatalf("web push %d within the burst: %+v", i, c)
		}
	}
	limited := func(what string, c pushCall, maxWait float64) time.Duration {
		t.Helper()
		if c.status != http.StatusTooManyRequests || c.code != "rate_limited" {
			t.Fatalf("%s past the burst: %+v, want 429 rate_limited", what, c)
		}
		secs, err := strconv.Atoi(c.retryAfter)
		if err != nil || secs < 1 || float64(secs) > math.Ceil(maxWait) {
			t.Fatalf("%s: Retry-After %q, want whole seconds from 1 to %g", what, c.retryAfter, math.Ceil(maxWait))
		}
		return time.Duration(secs) * time.Second
	}
	limited("push", single(99), 1.0/rate)
	limited("web push", webPush(), 1.0/rate)
	// A full batch needs the whole burst back: two seconds at 5 a second.
	wait := limited("batch", batch(burst), burst/rate)
	if wait != burst/rate*time.Second {
		t.Errorf("a batch of %d at %d a second was told to retry in %s, want %ds", burst, rate, wait, burst/rate)
	}

	// Another app has its own budget.
	var other struct {
		AppKey       string `json:"app_key"`
		MasterSecret string `json:"master_secret"`
	}
	admin := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+n.info.AdminToken) }
	if status, code := n.call("POST", "/v1/apps", admin, map[string]string{"name": "other"}, &other); status != http.StatusCreated {
		t.Fatalf("create app: %d %s", status, code)
	}
	if c := n.raw("POST", n.url+"/v1/push", func(r *http.Request) { r.SetBasicAuth(other.AppKey, other.MasterSecret) },
		jsonType, `{"audience":"all","message":{"app":"other"}}`); c.status != http.StatusAccepted {
		t.Errorf("another app's push while the first is limited: %+v", c)
	}

	// Waiting as told lets the refused batch through, whole.
	time.Sleep(wait)
	if c := batch(burst); c.status != http.StatusAccepted {
		t.Fatalf("the batch after waiting Retry-After: %+v", c)
	}
	// Nothing refused was stored: the device has the burst's pushes and the
	// batch, and none of the 429s.
	stored := 0
	for {
		msgs := n.poll(dev, "")
		if len(msgs) == 0 {
			break
		}
		stored += len(msgs)
		for _, m := range msgs {
			n.ack(dev, m.ID)
		}
	}
	if stored != 2*burst {
		t.Errorf("the device had %d messages, want %d (the burst and the batch)", stored, 2*burst)
	}
}

// TestRegistrationRetryAfter: the per-address registration limit says
// when to retry, and the retry then succeeds.
func TestRegistrationRetryAfter(t *testing.T) {
	cfg := testConfig(t)
	cfg.RegisterRate, cfg.RegisterBurst = 0.5, 1
	n := startNode(t, cfg)
	body := `{"app_key":"` + n.info.AppKey + `","platform":"web"}`
	jsonType := http.Header{"Content-Type": {"application/json"}}
	if c := n.raw("POST", n.url+"/v1/devices", nil, jsonType, body); c.status != http.StatusCreated {
		t.Fatalf("first registration: %+v", c)
	}
	c := n.raw("POST", n.url+"/v1/devices", nil, jsonType, body)
	// One registration at 0.5 a second is 2 s away, less what refilled.
	if c.status != http.StatusTooManyRequests || (c.retryAfter != "2" && c.retryAfter != "1") {
		t.Fatalf("second registration: %+v, want 429 with Retry-After 2 (or 1 on a slow machine)", c)
	}
	secs, _ := strconv.Atoi(c.retryAfter)
	time.Sleep(time.Duration(secs) * time.Second)
	if c := n.raw("POST", n.url+"/v1/devices", nil, jsonType, body); c.status != http.StatusCreated {
		t.Errorf("registration after waiting Retry-After: %+v", c)
	}
}
