package server

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/client"
)

// Issue 7: a key named twice in one object was resolved by encoding/json to
// the last one, so a unicast with a second "audience" became a broadcast to
// every device of the app. Every decoder of outside JSON refuses it now.
func TestDuplicateKeysRefused(t *testing.T) {
	n := startNode(t, testConfig(t))
	target, bystander := n.register("target"), n.register("bystander")
	for _, body := range []string{
		`{"audience":{"registration_id":["nobody"]},"audience":"all","message":{"x":1}}`,
		`{"audience":{"registration_id":["nobody"]},"Audience":"all","message":{"x":1}}`,
		`{"audience":{"registration_id":["` + target.RegistrationID + `"],"Registration_ID":["nobody"]},"message":{"x":1}}`,
		`{"audience":{"alias":["target"]},"message":{"x":1},"\u006Dessage":{"x":2}}`,
	} {
		if status, code := n.call("POST", "/v1/push", n.provider(), body, nil); status != http.StatusBadRequest || code != "duplicate_key" {
			t.Errorf("push %s: %d %s, want 400 duplicate_key", body, status, code)
		}
	}
	// In a batch, each push is refused on its own.
	var batch struct {
		Accepted int `json:"accepted"`
		Results  []struct {
			MsgID string `json:"msg_id"`
			Error *struct {
				Code string `json:"code"`
			} `json:"error"`
		} `json:"results"`
	}
	body := `{"pushes":[{"audience":{"alias":["target"]},"audience":"all","message":1},{"audience":{"alias":["target"]},"message":2}]}`
	if status, code := n.call("POST", "/v1/push/batch", n.provider(), body, &batch); status != http.StatusAccepted {
		t.Fatalf("batch: %d %s", status, code)
	}
	if batch.Accepted != 1 || batch.Results[0].Error == nil || batch.Results[0].Error.Code != "duplicate_key" || batch.Results[1].MsgID == "" {
		t.Errorf("batch results %+v: want the first refused as duplicate_key and the second accepted", batch)
	}
	if status, code := n.call("POST", "/v1/push/batch", n.provider(), `{"pushes":[],"pushes":[{"audience":"all","message":1}]}`, nil); status != http.StatusBadRequest || code != "duplicate_key" {
		t.Errorf("batch with pushes twice: %d %s", status, code)
	}
	if msgs := n.poll(bystander, ""); len(msgs) != 0 {
		t.Errorf("the bystander received %d messages: a refused push reached it", len(msgs))
	}
	if msgs := n.poll(target, ""); len(msgs) != 1 || string(msgs[0].Message) != "2" {
		raw, _ := json.Marshal(msgs)
		t.Errorf("the target has %s, want only the batch's accepted push", raw)
	}

	// The other decoders: registration, device PATCH, ack.
	for _, c := range []struct {
		method, path string
		auth         func(*http.Request)
		body         string
	}{
		{"POST", "/v1/devices", nil, `{"app_key":"` + n.info.AppKey + `","platform":"android","platform":"ios"}`},
		{"PATCH", "/v1/devices/" + target.RegistrationID, n.provider(), `{"alias":"a","Alias":"b"}`},
		{"POST", "/v1/inbox/ack", deviceAuth(target), `{"ids":["m_1"],"ids":["m_2"]}`},
	} {
		if status, code := n.call(c.method, c.path, c.auth, c.body, nil); status != http.StatusBadRequest || code != "duplicate_key" {
			t.Errorf("%s %s %s: %d %s, want 400 duplicate_key", c.method, c.path, c.body, status, code)
		}
	}
}

// Issue 7: apns_token, fcm_token and webpush were stored as sent, up to the
// 4 MiB body limit each. They are checked at registration and at PATCH,
// which can now replace a device's channel.
func TestChannelsValidated(t *testing.T) {
	n := startNode(t, testConfig(t))
	key, _ := ecdh.P256().GenerateKey(rand.Reader)
	p256dh := base64.URLEncoding.EncodeToString(key.PublicKey().Bytes()) // padded, as some libraries send it
	auth := base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	endpoint := "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABh"
	webpush := func(endpoint, p256dh, auth string) map[string]any {
		return map[string]any{"endpoint": endpoint, "keys": map[string]string{"p256dh": p256dh, "auth": auth}}
	}
	register := func(fields map[string]any) (int, string, deviceChannel) {
		body := map[string]any{"app_key": n.info.AppKey, "platform": "android"}
		for k, v := range fields {
			body[k] = v
		}
		var out deviceChannel
		status, code := n.call("POST", "/v1/devices", n.provider(), body, &out)
		return status, code, out
	}

	apns := strings.Repeat("0A", 32)
	if status, code, d := register(map[string]any{"apns_token": apns}); status != http.StatusCreated || d.Channel.Kind != "apns" || d.Channel.Token != strings.ToLower(apns) {
		t.Errorf("APNs token: %d %s %+v", status, code, d.Channel)
	}
	fcm := "dX1y2Z3:APA91bG" + strings.Repeat("k", 150)
	if status, code, d := register(map[string]any{"fcm_token": fcm}); status != http.StatusCreated || d.Channel.Kind != "fcm" || d.Channel.Token != fcm {
		t.Errorf("FCM token: %d %s %+v", status, code, d.Channel)
	}
	status, code, d := register(map[string]any{"webpush": webpush(endpoint, p256dh, auth)})
	if status != http.StatusCreated || d.Channel.Kind != "webpush" || d.Channel.WebPush.Endpoint != endpoint ||
		d.Channel.WebPush.P256DH != strings.TrimRight(p256dh, "=") || d.Channel.WebPush.Auth != auth {
		t.Errorf("Web Push: %d %s %+v", status, code, d.Channel.WebPush)
	}

	huge := strings.Repeat("a", 3<<20) // under max-body: the body is read, the token refused
	for _, c := range []struct {
		name   string
		fields map[string]any
		want   string
	}{
		{"apns huge", map[string]any{"apns_token": huge}, "bad_token"},
		{"apns not hex", map[string]any{"apns_token": strings.Repeat("zz", 32)}, "bad_token"},
		{"apns odd", map[string]any{"apns_token": apns + "0"}, "bad_token"},
		{"fcm huge", map[string]any{"fcm_token": huge}, "bad_token"},
		{"fcm bad character", map[string]any{"fcm_token": "a/b"}, "bad_token"},
		{"two channels", map[string]any{"apns_token": apns, "fcm_token": fcm}, "bad_token"},
		{"webpush huge endpoint", map[string]any{"webpush": webpush("https://x.example/"+huge, p256dh, auth)}, "bad_subscription"},
		{"webpush http", map[string]any{"webpush": webpush("http://x.example/", p256dh, auth)}, "bad_subscription"},
		{"webpush user info", map[string]any{"webpush": webpush("https://u@x.example/", p256dh, auth)}, "bad_subscription"},
		{"webpush huge key", map[string]any{"webpush": webpush(endpoint, huge, auth)}, "bad_subscription"},
		{"webpush key off the curve", map[string]any{"webpush": webpush(endpoint, base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)), auth)}, "bad_subscription"},
		{"webpush short auth", map[string]any{"webpush": webpush(endpoint, p256dh, "AAAA")}, "bad_subscription"},
		{"webpush no keys", map[string]any{"webpush": map[string]any{"endpoint": endpoint}}, "bad_subscription"},
	} {
		if status, code, _ := register(c.fields); status != http.StatusBadRequest || code != c.want {
			t.Errorf("%s: %d %s, want 400 %s", c.name, status, code, c.want)
		}
	}

	// PATCH replaces the channel with the same checks; a refused one leaves
	// it alone.
	dev := n.register("patched")
	path := "/v1/devices/" + dev.RegistrationID
	var got deviceChannel
	if status, code := n.call("PATCH", path, n.provider(), map[string]any{"fcm_token": fcm}, &got); status != http.StatusOK || got.Channel.Kind != "fcm" {
		t.Fatalf("PATCH fcm_token: %d %s %+v", status, code, got.Channel)
	}
	if status, code := n.call("PATCH", path, n.provider(), map[string]any{"webpush": webpush(endpoint, p256dh, auth), "alias": "x"}, &got); status != http.StatusOK ||
		got.Channel.Kind != "webpush" || got.Channel.WebPush.Endpoint != endpoint || got.Alias != "x" {
		t.Fatalf("PATCH webpush: %d %s %+v", status, code, got)
	}
	for _, body := range []map[string]any{{"apns_token": huge}, {"webpush": webpush("ftp://x.example/", p256dh, auth)}, {"apns_token": apns, "webpush": webpush(endpoint, p256dh, auth)}} {
		if status, _ := n.call("PATCH", path, n.provider(), body, nil); status != http.StatusBadRequest {
			t.Errorf("PATCH %.60v: %d, want 400", body, status)
		}
	}
	if status, code := n.call("GET", path, n.provider(), nil, &got); status != http.StatusOK || got.Channel.Kind != "webpush" || got.Alias != "x" {
		t.Errorf("after refused PATCHes: %d %s %+v, want the web push channel kept", status, code, got)
	}
}

type deviceChannel struct {
	Alias   string `json:"alias"`
	Channel struct {
		Kind    string `json:"kind"`
		Token   string `json:"token"`
		WebPush *struct {
			Endpoint string `json:"endpoint"`
			P256DH   string `json:"p256dh"`
			Auth     string `json:"auth"`
		} `json:"webpush"`
	} `json:"channel"`
}

// subscribe creates a Web Push subscription for dev through the API.
func (n *node) subscribe(dev *client.Registration) (id, endpoint string) {
	n.t.Helper()
	var out struct {
		ID       string `json:"id"`
		Endpoint string `json:"endpoint"`
	}
	if status, code := n.call("POST", "/v1/webpush/subscriptions", deviceAuth(dev), nil, &out); status != http.StatusCreated || out.Endpoint == "" {
		n.t.Fatalf("subscribe: %d %s", status, code)
	}
	return out.ID, out.Endpoint
}

// wpush sends an unsigned push to a Web Push endpoint, as an application
// server would, and returns the status, the error code and the TTL header.
func wpush(t *testing.T, endpoint, ttl string, body []byte) (status int, code, ttlHeader string) {
	t.Helper()
	req, _ := http.NewRequest("POST", endpoint, bytes.NewReader(body))
	req.Header["TTL"] = []string{ttl}
	req.Header.Set("Content-Encoding", "aes128gcm")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	var env struct{ Error struct{ Code string } }
	json.NewDecoder(resp.Body).Decode(&env)
	return resp.StatusCode, env.Error.Code, resp.Header.Get("TTL")
}

// Issue 7: the Web Push service was built with its defaults (4096 bytes,
// 30 days) in two places. --max-payload and --max-ttl now apply to /wpush/
// as to /v1/push, for the API's subscriptions and Firefox's channels alike.
func TestWebPushLimitsFromConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxPayload, cfg.MaxTTL, cfg.DefaultTTL = 100, time.Hour, time.Minute
	n := startNode(t, cfg)
	dev := n.register("wp")
	_, apiEndpoint := n.subscribe(dev)
	mozEndpoint := n.mozpushChannel(t)
	for name, endpoint := range map[string]string{"API subscription": apiEndpoint, "Firefox channel": mozEndpoint} {
		if status, code, _ := wpush(t, endpoint, "60", bytes.Repeat([]byte{1}, 101)); status != http.StatusRequestEntityTooLarge || code != "payload_too_large" {
			t.Errorf("%s: a push of max-payload+1 bytes: %d %s, want 413 payload_too_large", name, status, code)
		}
		if status, code, ttl := wpush(t, endpoint, "60", bytes.Repeat([]byte{1}, 100)); status != http.StatusCreated || ttl != "60" {
			t.Errorf("%s: a push of max-payload bytes: %d %s TTL %q, want 201 with TTL 60", name, status, code, ttl)
		}
		if status, code, ttl := wpush(t, endpoint, "86400", []byte("x")); status != http.StatusCreated || ttl != "3600" {
			t.Errorf("%s: a TTL of a day with max-ttl 1h: %d %s TTL %q, want 201 with TTL 3600", name, status, code, ttl)
		}
	}
}

// mozpushChannel registers a Firefox channel over /mozpush, as Firefox
// does, and returns its endpoint.
func (n *node) mozpushChannel(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(n.url, "http", "ws", 1)+"/mozpush", &websocket.DialOptions{Subprotocols: []string{"push-notification"}})
	if err != nil {
		t.Fatalf("dial /mozpush: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	roundTrip := func(msg string, out any) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("mozpush write: %v", err)
		}
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("mozpush read: %v", err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("mozpush answer %s: %v", b, err)
		}
	}
	var hello struct{ Status int }
	roundTrip(`{"messageType":"hello","use_webpush":true}`, &hello)
	var reg struct {
		Status       int
		PushEndpoint string
	}
	roundTrip(`{"messageType":"register","channelID":"5477bfda-22db-45d4-9614-fee369630260"}`, &reg)
	if hello.Status != 200 || reg.Status != 200 || reg.PushEndpoint == "" {
		t.Fatalf("mozpush hello %d, register %d %q", hello.Status, reg.Status, reg.PushEndpoint)
	}
	return reg.PushEndpoint
}

// Issue 7: revoked subscriptions were kept for ever. After --webpush-retain
// the sweep purges them: a push to one is then 404, not 410.
func TestRevokedSubscriptionsPurged(t *testing.T) {
	cfg := testConfig(t)
	cfg.WebPushRetain, cfg.SweepInterval = 200*time.Millisecond, 20*time.Millisecond
	n := startNode(t, cfg)
	dev := n.register("wp")
	revoked, revokedEndpoint := n.subscribe(dev)
	_, liveEndpoint := n.subscribe(dev)
	// A deleted device's subscriptions are revoked with it, and purged too.
	gone := n.register("gone")
	_, goneEndpoint := n.subscribe(gone)
	if status, code := n.call("DELETE", "/v1/devices/"+gone.RegistrationID, n.provider(), nil, nil); status != http.StatusNoContent {
		t.Fatalf("delete device: %d %s", status, code)
	}
	if status, code := n.call("DELETE", "/v1/webpush/subscriptions/"+revoked, deviceAuth(dev), nil, nil); status != http.StatusNoContent {
		t.Fatalf("unsubscribe: %d %s", status, code)
	}
	if status, code, _ := wpush(t, revokedEndpoint, "60", nil); status != http.StatusGone || code != "subscription_gone" {
		t.Fatalf("a push to a revoked subscription: %d %s, want 410 subscription_gone", status, code)
	}
	if status, code, _ := wpush(t, goneEndpoint, "60", nil); status != http.StatusGone {
		t.Fatalf("a push to a deleted device's subscription: %d %s, want 410", status, code)
	}
	waitFor(t, 10*time.Second, func() bool {
		s1, _, _ := wpush(t, revokedEndpoint, "60", nil)
		s2, _, _ := wpush(t, goneEndpoint, "60", nil)
		return s1 == http.StatusNotFound && s2 == http.StatusNotFound
	})
	if status, code, _ := wpush(t, revokedEndpoint, "60", nil); status != http.StatusNotFound || code != "subscription_not_found" {
		t.Errorf("after the retention: %d %s, want 404 subscription_not_found", status, code)
	}
	if status, code, _ := wpush(t, liveEndpoint, "60", nil); status != http.StatusCreated {
		t.Errorf("the live subscription after the purge: %d %s", status, code)
	}
}

// TestMaxScheduleFromConfig: --max-schedule bounds how far ahead send_at
// may be, through the real listener.
func TestMaxScheduleFromConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSchedule = time.Hour
	n := startNode(t, cfg)
	for _, c := range []struct {
		ahead  time.Duration
		status int
	}{{50 * time.Minute, 202}, {2 * time.Hour, 400}} {
		body := map[string]any{"audience": "all", "message": map[string]any{"n": 1},
			"options": map[string]any{"send_at": time.Now().Add(c.ahead).UTC().Format(time.RFC3339)}}
		if status, raw := n.call("POST", "/v1/push", n.provider(), body, nil); status != c.status {
			t.Errorf("send_at %s ahead with --max-schedule 1h: %d %s, want %d", c.ahead, status, raw, c.status)
		}
	}
}
