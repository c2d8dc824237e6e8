// Package relay tests the relay to the vendors' channels end to end: the
// real herald binary against local servers that speak APNs, FCM (with
// Google's OAuth2 token endpoint) and Web Push, trusted through
// SSL_CERT_FILE as a user's would be.
package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// herald is a running server with its default app's credentials.
type herald struct {
	*heraldtest.Server
	t *testing.T
}

// starter starts a server on dir with the vendors' certificate trusted;
// a second call in one test restarts the same store.
type starter func(t *testing.T, v *vendors, dir string) *herald

// eachStore runs test on a node with the embedded store and on one with
// PostgreSQL (in a fresh schema; skipped when PostgreSQL is not reachable,
// failed under CI=true).
func eachStore(t *testing.T, test func(*testing.T, starter)) {
	t.Run("embedded", func(t *testing.T) {
		test(t, func(t *testing.T, v *vendors, dir string) *herald {
			t.Helper()
			return &herald{heraldtest.StartEnv(t, v.env(), dir), t}
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url, schema := heraldtest.PostgresSchema(t)
		test(t, func(t *testing.T, v *vendors, dir string) *herald {
			t.Helper()
			return &herald{heraldtest.StartEnv(t, v.env(), dir, "--postgres", url, "--postgres-schema", schema), t}
		})
	})
}

// call makes a provider call with the app's master secret and decodes the
// JSON answer into out (when not nil); it returns the status.
func (h *herald) call(method, path string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.URL+path, rd)
	req.SetBasicAuth(h.AppKey, h.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func (h *herald) mustCall(method, path string, body any, want int) map[string]any {
	h.t.Helper()
	var out map[string]any
	if got := h.call(method, path, body, &out); got != want {
		h.t.Fatalf("%s %s = %d %v, want %d", method, path, got, out, want)
	}
	return out
}

func (h *herald) setAPNs(v *vendors) {
	h.t.Helper()
	h.mustCall("PUT", "/v1/apps/"+h.AppKey+"/channels/apns", map[string]any{
		"key_p8": v.p8(), "key_id": "KEY1234567", "team_id": "TEAM123456", "topic": v.topic,
		"environment": "sandbox", "endpoint": v.srv.URL,
	}, 200)
}

// device registers a device with the given channel fields and returns its
// registration ID and secret.
func (h *herald) device(platform string, channel map[string]any) (string, string) {
	h.t.Helper()
	body := map[string]any{"app_key": h.AppKey, "platform": platform}
	for k, v := range channel {
		body[k] = v
	}
	out := h.mustCall("POST", "/v1/devices", body, 201)
	return out["registration_id"].(string), out["device_secret"].(string)
}

func (h *herald) push(body map[string]any) string {
	h.t.Helper()
	out := h.mustCall("POST", "/v1/push", body, 202)
	return out["msg_id"].(string)
}

// channelReport returns the message's report for channel.
type channelReport struct {
	Delivered int            `json:"delivered"`
	Sent      int            `json:"sent"`
	Failed    map[string]int `json:"failed"`
	Gone      int            `json:"gone"`
	Skipped   int            `json:"skipped"`
	Waiting   int            `json:"waiting"`
}

func (h *herald) report(id string) map[string]channelReport {
	h.t.Helper()
	var out struct {
		Channels map[string]channelReport `json:"channels"`
	}
	if got := h.call("GET", "/v1/messages/"+id, nil, &out); got != 200 {
		h.t.Fatalf("GET /v1/messages/%s = %d", id, got)
	}
	return out.Channels
}

// eventually polls the report of id until ok holds: the vendor answered
// before the server recorded the answer, so the record follows shortly.
func (h *herald) eventually(id string, what string, ok func(map[string]channelReport) bool) map[string]channelReport {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := h.report(id)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("report of %s never showed %s: %+v", id, what, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func empty(c channelReport) bool {
	return c.Sent == 0 && c.Gone == 0 && c.Skipped == 0 && c.Waiting == 0 && len(c.Failed) == 0
}

func token() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func direct(id string) map[string]any { return map[string]any{"registration_id": []string{id}} }

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestAPNs: a notification to an iOS device with no live connection goes
// to APNs at once, mapped as docs/protocol.md says, signed with the app's
// key, and the report counts it sent.
func TestAPNs(t *testing.T) { eachStore(t, testAPNs) }

func testAPNs(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	tok := token()
	id, _ := h.device("ios", map[string]any{"apns_token": tok})
	badge := 3
	msg := h.push(map[string]any{
		"audience":     direct(id),
		"notification": map[string]any{"title": "Hello", "body": "World", "badge": badge, "sound": "ping.caf"},
		"options":      map[string]any{"collapse_id": "score", "priority": "high", "ttl": 600},
	})
	r := v.next(t)
	if r.kind != "apns" || r.path != "/3/device/"+tok {
		t.Fatalf("vendor got %s %s, want APNs /3/device/%s", r.kind, r.path, tok)
	}
	aps, _ := r.payload["aps"].(map[string]any)
	alert, _ := aps["alert"].(map[string]any)
	if alert["title"] != "Hello" || alert["body"] != "World" || aps["badge"] != float64(3) || aps["sound"] != "ping.caf" || aps["mutable-content"] != float64(1) {
		t.Errorf("aps = %v", aps)
	}
	if r.payload["id"] != msg {
		t.Errorf("payload id = %v, want the msg_id %s", r.payload["id"], msg)
	}
	hd := r.header
	if hd.Get("apns-push-type") != "alert" || hd.Get("apns-priority") != "10" || hd.Get("apns-collapse-id") != "score" || !uuidRE.MatchString(hd.Get("apns-id")) {
		t.Errorf("headers: push-type %q priority %q collapse %q id %q", hd.Get("apns-push-type"), hd.Get("apns-priority"), hd.Get("apns-collapse-id"), hd.Get("apns-id"))
	}
	if exp := hd.Get("apns-expiration"); exp == "" || exp == "0" {
		t.Errorf("apns-expiration = %q, want the expiry time", exp)
	}
	h.eventually(msg, "apns sent 1", func(r map[string]channelReport) bool { return r["apns"].Sent == 1 })

	// A pass-through message is a background push.
	data := h.push(map[string]any{"audience": direct(id), "message": map[string]any{"k": "v"}, "options": map[string]any{"ttl": 0}})
	r = v.next(t)
	aps, _ = r.payload["aps"].(map[string]any)
	if aps["content-available"] != float64(1) || r.header.Get("apns-push-type") != "background" || r.header.Get("apns-priority") != "5" || r.header.Get("apns-expiration") != "0" {
		t.Errorf("background push: aps %v, headers %v", aps, r.header)
	}
	if m, _ := r.payload["message"].(map[string]any); m["k"] != "v" || r.payload["id"] != data {
		t.Errorf("background payload = %v", r.payload)
	}
	if errs := v.errors(); len(errs) > 0 {
		t.Errorf("vendor errors: %v", errs)
	}
}

// TestAPNsGone: a token APNs calls Unregistered is deactivated with the
// reason, shown on the device, counted gone, and not tried again.
func TestAPNsGone(t *testing.T) { eachStore(t, testAPNsGone) }

func testAPNsGone(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	goneTok, liveTok := token(), token()
	gone, _ := h.device("ios", map[string]any{"apns_token": goneTok})
	live, _ := h.device("ios", map[string]any{"apns_token": liveTok})
	v.setAnswer(func(r *http.Request, kind string) (int, string, http.Header) {
		if strings.HasSuffix(r.URL.Path, goneTok) {
			return 410, fmt.Sprintf(`{"reason":"Unregistered","timestamp":%d}`, time.Now().Add(time.Minute).UnixMilli()), nil
		}
		return 0, "", nil
	})
	msg := h.push(map[string]any{"audience": direct(gone), "notification": map[string]any{"title": "t"}})
	v.next(t)
	h.eventually(msg, "apns gone 1", func(r map[string]channelReport) bool { return r["apns"].Gone == 1 })
	dev := h.mustCall("GET", "/v1/devices/"+gone, nil, 200)
	ch, _ := dev["channel"].(map[string]any)
	if !strings.Contains(fmt.Sprint(ch["inactive"]), "Unregistered") || ch["inactive_at"] == nil {
		t.Errorf("device channel after 410 = %v, want inactive with the reason", ch)
	}
	// Later pushes do not try it: the next push APNs sees is the live
	// device's, pushed after.
	again := h.push(map[string]any{"audience": direct(gone), "notification": map[string]any{"title": "t2"}})
	h.push(map[string]any{"audience": direct(live), "notification": map[string]any{"title": "t3"}})
	if r := v.next(t); !strings.HasSuffix(r.path, liveTok) {
		t.Errorf("after deactivation APNs got %s, want the live device's push", r.path)
	}
	if r := h.report(again); !empty(r["apns"]) {
		t.Errorf("push to a deactivated channel has apns outcome %+v, want none", r["apns"])
	}
	// The device registering its token again reactivates it.
	h.mustCall("PATCH", "/v1/devices/"+gone, map[string]any{"apns_token": goneTok}, 200)
	v.setAnswer(nil)
	msg = h.push(map[string]any{"audience": direct(gone), "notification": map[string]any{"title": "t4"}})
	v.next(t)
	h.eventually(msg, "apns sent 1", func(r map[string]channelReport) bool { return r["apns"].Sent == 1 })
}

// TestAPNsRetryAfter: a 503 with Retry-After is retried after it, the
// report shows the message waiting meanwhile, then sent.
func TestAPNsRetryAfter(t *testing.T) { eachStore(t, testAPNsRetryAfter) }

func testAPNsRetryAfter(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	id, _ := h.device("ios", map[string]any{"apns_token": token()})
	first := true
	v.setAnswer(func(r *http.Request, kind string) (int, string, http.Header) {
		if first {
			first = false
			return 503, `{"reason":"ServiceUnavailable"}`, http.Header{"Retry-After": {"2"}}
		}
		return 0, "", nil
	})
	msg := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "t"}})
	v.next(t)
	at := time.Now()
	h.eventually(msg, "apns waiting 1", func(r map[string]channelReport) bool { return r["apns"].Waiting == 1 })
	v.next(t)
	if waited := time.Since(at); waited < 1500*time.Millisecond {
		t.Errorf("retried %v after a Retry-After of 2 s", waited)
	}
	h.eventually(msg, "apns sent 1, waiting 0", func(r map[string]channelReport) bool {
		return r["apns"].Sent == 1 && r["apns"].Waiting == 0
	})
}

// TestAPNsBadCredentials: APNs refusing the provider token marks the app's
// channel broken, shown on its settings, and the message failed.
func TestAPNsBadCredentials(t *testing.T) { eachStore(t, testAPNsBadCredentials) }

func testAPNsBadCredentials(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	id, _ := h.device("ios", map[string]any{"apns_token": token()})
	v.setAnswer(func(*http.Request, string) (int, string, http.Header) {
		return 403, `{"reason":"InvalidProviderToken"}`, nil
	})
	msg := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "t"}})
	v.next(t)
	h.eventually(msg, "apns failed credentials", func(r map[string]channelReport) bool { return r["apns"].Failed["credentials"] == 1 })
	got := h.mustCall("GET", "/v1/apps/"+h.AppKey+"/channels/apns", nil, 200)
	if got["status"] != "broken" || !strings.Contains(fmt.Sprint(got["broken_reason"]), "InvalidProviderToken") {
		t.Errorf("channel settings = %v, want status broken with the reason", got)
	}
	if _, ok := got["key_p8"]; ok {
		t.Errorf("GET shows the key: %v", got)
	}
	// The next message fails at once, without a request to APNs.
	msg = h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "t2"}})
	h.eventually(msg, "apns failed credentials", func(r map[string]channelReport) bool { return r["apns"].Failed["credentials"] == 1 })
	if n := v.count(); n != 1 {
		t.Errorf("APNs got %d requests, want 1: broken credentials are not retried per message", n)
	}
}

// TestFCMAndWebPush: a data message reaches an Android device through FCM
// (after the OAuth2 grant) and a browser through its Web Push service,
// encrypted for its subscription and signed with the app's VAPID key.
func TestFCMAndWebPush(t *testing.T) { eachStore(t, testFCMAndWebPush) }

func testFCMAndWebPush(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.mustCall("PUT", "/v1/apps/"+h.AppKey+"/channels/fcm", map[string]any{"service_account": v.serviceAccount(), "endpoint": v.srv.URL}, 200)
	wp := h.mustCall("PUT", "/v1/apps/"+h.AppKey+"/channels/webpush", map[string]any{"subject": "mailto:ops@example.com"}, 200)
	pub, err := b64decode(fmt.Sprint(wp["vapid_public_key"]))
	if err != nil || len(pub) != 65 {
		t.Fatalf("webpush settings = %v: no VAPID public key", wp)
	}
	v.mu.Lock()
	v.vapidPub = pub
	v.mu.Unlock()
	fcmTok := "fcm-token-" + token()[:20]
	android, _ := h.device("android", map[string]any{"fcm_token": fcmTok})
	web, _ := h.device("web", map[string]any{"webpush": v.subscription()})

	msg := h.push(map[string]any{
		"audience": map[string]any{"registration_id": []string{android, web}},
		"message":  map[string]any{"score": 3}, "options": map[string]any{"priority": "high", "collapse_id": "match"},
	})
	got := map[string]request{}
	for range 2 {
		r := v.next(t)
		got[r.kind] = r
	}
	f := got["fcm"].payload
	data, _ := f["data"].(map[string]any)
	andr, _ := f["android"].(map[string]any)
	if f["token"] != fcmTok || data["id"] != msg || data["message"] != `{"score":3}` || andr["priority"] != "HIGH" || andr["collapse_key"] != "match" {
		t.Errorf("FCM message = %v", f)
	}
	w := got["webpush"]
	if w.payload["id"] != msg || w.header.Get("Urgency") != "high" || w.header.Get("Topic") == "" || w.header.Get("TTL") == "" {
		t.Errorf("Web Push: payload %v, headers %v", w.payload, w.header)
	}
	h.eventually(msg, "fcm and webpush sent", func(r map[string]channelReport) bool {
		return r["fcm"].Sent == 1 && r["webpush"].Sent == 1
	})
	if errs := v.errors(); len(errs) > 0 {
		t.Errorf("vendor errors: %v", errs)
	}
}

// wsDevice is a device connected over /v1/inbox/ws, live once hello came.
type wsDevice struct {
	c    *websocket.Conn
	msgs chan map[string]any
}

func connectWS(t *testing.T, h *herald, id, secret string) *wsDevice {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u := strings.Replace(h.URL, "http", "ws", 1) + "/v1/inbox/ws?registration_id=" + id + "&device_secret=" + secret
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	d := &wsDevice{c: c, msgs: make(chan map[string]any, 100)}
	hello := make(chan struct{})
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var f map[string]any
			json.Unmarshal(b, &f)
			switch f["type"] {
			case "hello":
				close(hello)
			case "message":
				d.msgs <- f["message"].(map[string]any)
			}
		}
	}()
	select {
	case <-hello:
	case <-time.After(10 * time.Second):
		t.Fatal("no hello")
	}
	return d
}

func (d *wsDevice) ack(t *testing.T, id string) {
	b, _ := json.Marshal(map[string]any{"type": "ack", "ids": []string{id}})
	if err := d.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func (d *wsDevice) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-d.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message on the device's own connection")
		return nil
	}
}

// TestOwnFirst: a device with a live connection gets the push there; if
// it acknowledges within relay_after the vendor is never asked, and if it
// does not, the push goes through APNs after relay_after, with the same id.
func TestOwnFirst(t *testing.T) { eachStore(t, testOwnFirst) }

func testOwnFirst(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	id, secret := h.device("ios", map[string]any{"apns_token": token()})
	d := connectWS(t, h, id, secret)

	acked := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "a"}, "options": map[string]any{"relay_after": 1}})
	m := d.next(t)
	if m["id"] != acked {
		t.Fatalf("own connection got %v, want %s", m["id"], acked)
	}
	d.ack(t, acked)
	h.eventually(acked, "skipped on apns", func(r map[string]channelReport) bool { return r["apns"].Skipped == 1 && r["own"].Delivered == 1 })

	unacked := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "b"}, "options": map[string]any{"relay_after": 1}})
	at := time.Now()
	if m := d.next(t); m["id"] != unacked {
		t.Fatalf("own connection got %v, want %s", m["id"], unacked)
	}
	r := v.next(t)
	if time.Since(at) < 900*time.Millisecond {
		t.Errorf("relayed %v after the push, before relay_after (1 s)", time.Since(at))
	}
	if r.payload["id"] != unacked {
		t.Errorf("APNs payload id = %v, want %s (the same id, for the client to drop a second copy)", r.payload["id"], unacked)
	}
	if n := v.count(); n != 1 {
		t.Errorf("APNs got %d requests, want 1 (the acknowledged push was not relayed)", n)
	}
	// own_only never relays.
	own := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "c"}, "options": map[string]any{"channel": "own_only", "relay_after": 0}})
	d.next(t)
	if rep := h.report(own); !empty(rep["apns"]) {
		t.Errorf("own_only push has apns outcome %+v", rep["apns"])
	}
}

// TestRelaySurvivesKill9: a message whose send APNs has not answered when
// the server is killed is sent again after the restart: at least once,
// never zero times.
func TestRelaySurvivesKill9(t *testing.T) { eachStore(t, testRelaySurvivesKill9) }

func testRelaySurvivesKill9(t *testing.T, start starter) {
	v := newVendors(t)
	dir := t.TempDir()
	h := start(t, v, dir)
	h.setAPNs(v)
	id, _ := h.device("ios", map[string]any{"apns_token": token()})
	hold := make(chan struct{})
	v.mu.Lock()
	v.hold = hold
	v.mu.Unlock()
	msg := h.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "t"}})
	v.next(t) // the send is in flight, unanswered
	h.Kill()
	v.mu.Lock()
	v.hold = nil
	v.mu.Unlock()
	close(hold)
	h2 := start(t, v, dir)
	h2.AppKey, h2.Secret = h.AppKey, h.Secret
	r := v.next(t)
	if r.payload["id"] != msg {
		t.Fatalf("after the restart APNs got %v, want %s again", r.payload["id"], msg)
	}
	h2.eventually(msg, "apns sent 1", func(r map[string]channelReport) bool { return r["apns"].Sent == 1 })
}

// TestFanoutAndVendorOnly: a tag push reaches the matching devices on
// APNs (the fan-out job is expanded per device), and a vendor_only push is
// relayed without waiting in the device's own inbox.
func TestFanoutAndVendorOnly(t *testing.T) { eachStore(t, testFanoutAndVendorOnly) }

func testFanoutAndVendorOnly(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	toks := map[string]bool{}
	var ids, secrets []string
	for i := range 3 {
		tok := token()
		fields := map[string]any{"apns_token": tok}
		if i < 2 {
			fields["tags"] = []string{"news"}
			toks[tok] = true
		}
		id, secret := h.device("ios", fields)
		ids, secrets = append(ids, id), append(secrets, secret)
	}
	msg := h.push(map[string]any{"audience": map[string]any{"tag": []string{"news"}}, "notification": map[string]any{"title": "n"}})
	for range 2 {
		r := v.next(t)
		tok := strings.TrimPrefix(r.path, "/3/device/")
		if !toks[tok] {
			t.Errorf("APNs got a push for %s, not a device tagged news", tok)
		}
		delete(toks, tok)
		if r.payload["id"] != msg {
			t.Errorf("payload id %v, want %s", r.payload["id"], msg)
		}
	}
	h.eventually(msg, "apns sent 2", func(r map[string]channelReport) bool { return r["apns"].Sent == 2 })

	only := h.push(map[string]any{"audience": direct(ids[2]), "notification": map[string]any{"title": "v"}, "options": map[string]any{"channel": "vendor_only"}})
	if r := v.next(t); r.payload["id"] != only {
		t.Fatalf("APNs got %v, want the vendor_only push %s", r.payload["id"], only)
	}
	req, _ := http.NewRequest("GET", h.URL+"/v1/inbox", nil)
	req.SetBasicAuth(ids[2], secrets[2])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var inbox struct {
		Messages []map[string]any `json:"messages"`
	}
	json.NewDecoder(resp.Body).Decode(&inbox)
	for _, m := range inbox.Messages {
		if m["id"] == only {
			t.Errorf("the vendor_only push waits in the device's own inbox too")
		}
	}
	if len(inbox.Messages) != 0 {
		t.Errorf("inbox = %v, want empty (the tag push was not for this device, the vendor_only one is relayed only)", inbox.Messages)
	}
}

// TestSlowVendorHoldsOnlyItself: while APNs holds every request
// unanswered, a push to an FCM device is still relayed at once, and both
// pushes are answered 202 as soon as they are stored.
func TestSlowVendorHoldsOnlyItself(t *testing.T) { eachStore(t, testSlowVendorHoldsOnlyItself) }

func testSlowVendorHoldsOnlyItself(t *testing.T, start starter) {
	v := newVendors(t)
	h := start(t, v, t.TempDir())
	h.setAPNs(v)
	h.mustCall("PUT", "/v1/apps/"+h.AppKey+"/channels/fcm", map[string]any{"service_account": v.serviceAccount(), "endpoint": v.srv.URL}, 200)
	ios, _ := h.device("ios", map[string]any{"apns_token": token()})
	android, _ := h.device("android", map[string]any{"fcm_token": "fcm-" + token()[:30]})
	hold := make(chan struct{})
	v.mu.Lock()
	v.hold, v.holdKind = hold, "apns"
	v.mu.Unlock()
	defer close(hold)
	slow := h.push(map[string]any{"audience": direct(ios), "notification": map[string]any{"title": "slow"}})
	if r := v.next(t); r.kind != "apns" {
		t.Fatalf("first relayed to %s, want APNs", r.kind)
	}
	fast := h.push(map[string]any{"audience": direct(android), "notification": map[string]any{"title": "fast"}})
	if r := v.next(t); r.kind != "fcm" || r.payload["data"].(map[string]any)["id"] != fast {
		t.Fatalf("while APNs is stuck, got %s %v, want the FCM push %s", r.kind, r.payload, fast)
	}
	h.eventually(fast, "fcm sent", func(r map[string]channelReport) bool { return r["fcm"].Sent == 1 })
	if r := h.report(slow); r["apns"].Sent != 0 {
		t.Errorf("the held APNs push counts sent: %+v", r["apns"])
	}
}

// TestOneNodeRelays: two nodes share one PostgreSQL; pushes accepted on
// either are relayed once each (one node holds the relay lease), and when
// the holder is killed the other takes over.
func TestOneNodeRelays(t *testing.T) {
	url, schema := heraldtest.PostgresSchema(t)
	v := newVendors(t)
	pg := []string{"--postgres", url, "--postgres-schema", schema}
	// Every node of a cluster needs the key the channel settings are
	// sealed with.
	env := append(v.env(), "HERALD_SECRET_KEY="+token())
	a := &herald{heraldtest.StartEnv(t, env, t.TempDir(), pg...), t}
	b := &herald{heraldtest.StartEnv(t, env, t.TempDir(), pg...), t}
	b.AppKey, b.Secret = a.AppKey, a.Secret // one app: the store is shared
	a.setAPNs(v)
	id, _ := b.device("ios", map[string]any{"apns_token": token()})
	var msgs []string
	for i := range 10 {
		node := a
		if i%2 == 1 {
			node = b
		}
		msgs = append(msgs, node.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": fmt.Sprint(i)}}))
	}
	for range msgs {
		v.next(t)
	}
	for _, m := range msgs {
		b.eventually(m, "apns sent 1", func(r map[string]channelReport) bool { return r["apns"].Sent == 1 })
	}
	if n := v.count(); n != len(msgs) {
		t.Errorf("APNs got %d requests for %d messages: nodes sharing a store both relayed", n, len(msgs))
	}
	// Whichever node held the lease, the other goes on alone.
	a.Kill()
	after := b.push(map[string]any{"audience": direct(id), "notification": map[string]any{"title": "after"}})
	if r := v.next(t); r.payload["id"] != after {
		t.Fatalf("after node A died, APNs got %v, want %s", r.payload["id"], after)
	}
	b.eventually(after, "apns sent 1", func(r map[string]channelReport) bool { return r["apns"].Sent == 1 })
}
