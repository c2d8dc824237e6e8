package webpush

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
)

// webPushLib returns the directory holding send.js with the npm web-push
// library installed beside it (testdata/node_modules, which .ci/run fills
// with npm ci). When it is missing the test installs it; when node or the
// package cannot be had, it skips, except under CI=true, where it fails.
func webPushLib(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + ": the web-push interop test cannot run (needs node and npm; .ci/run installs the package with npm ci in test/webpush/testdata)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		unavailable("node is not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "web-push", "package.json")); err == nil {
		return dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable("npm is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable("npm ci web-push failed: %v: %s", err, out)
	}
	return dir
}

// node runs send.js with in as its request and decodes its answer into out.
func node(t *testing.T, dir string, in, out any) {
	t.Helper()
	raw, _ := json.Marshal(in)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "send.js")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("node send.js: %v: %s", err, stderr.String())
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("node send.js answered %q: %v", res, err)
	}
}

// libRequest is the request web-push would send.
type libRequest struct {
	Method   string            `json:"method"`
	Endpoint string            `json:"endpoint"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"` // standard base64
}

// request asks web-push for the request that pushes payload to sub.
func request(t *testing.T, dir string, sub client.PushSubscriptionJSON, payload string, options map[string]any) *libRequest {
	t.Helper()
	var r libRequest
	node(t, dir, map[string]any{"subscription": sub, "payload": payload, "options": options}, &r)
	return &r
}

// do sends r as web-push's sendNotification would, and returns the answer.
func (r *libRequest) do(t *testing.T) answer {
	t.Helper()
	body, err := base64.StdEncoding.DecodeString(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	var h []string
	for k, v := range r.Headers {
		if !strings.EqualFold(k, "Content-Length") { // net/http sets it from the body
			h = append(h, k, v)
		}
	}
	return send(t, r.Method, r.Endpoint, body, h...)
}

// TestWebPushLibrary is the interop test of issue 4: the npm web-push
// library is the application server. It generates a VAPID key pair; the
// device subscribes with its public key and hands endpoint, p256dh and auth
// to the library, which encrypts (RFC 8291) and signs (RFC 8292) a payload;
// Herald accepts the request, and the Go client polls the push and decrypts
// it.
func TestWebPushLibrary(t *testing.T) {
	dir := webPushLib(t)
	srv := startServer(t, t.TempDir(), "127.0.0.1:0")
	d := srv.device(t)
	ctx := context.Background()

	var vapid struct{ PublicKey, PrivateKey string }
	node(t, dir, map[string]bool{"generateVAPIDKeys": true}, &vapid)
	sub := subscribe(t, d, client.WebPushOptions{ApplicationServerKey: vapid.PublicKey, Label: "sw"})
	keys, err := client.NewWebPushKeys()
	if err != nil {
		t.Fatal(err)
	}
	browserSub := keys.Subscription(sub.Endpoint)
	vapidDetails := map[string]string{"subject": "mailto:ops@example.com", "publicKey": vapid.PublicKey, "privateKey": vapid.PrivateKey}

	cases := []struct {
		name    string
		payload string
		options map[string]any
	}{
		{"aes128gcm with topic and urgency", `{"title":"Hello from web-push","n":1}`,
			map[string]any{"TTL": 120, "topic": "greeting", "urgency": "high", "vapidDetails": vapidDetails}},
		{"a long payload", strings.Repeat("watermelon ", 300),
			map[string]any{"TTL": 60, "vapidDetails": vapidDetails}},
		{"TTL above 30 days", "far", map[string]any{"TTL": 90 * 24 * 3600, "urgency": "very-low", "vapidDetails": vapidDetails}},
	}
	for _, c := range cases {
		req := request(t, dir, browserSub, c.payload, c.options)
		if !strings.HasPrefix(req.Headers["Authorization"], "vapid t=") {
			t.Fatalf("%s: web-push sent Authorization %q, want the vapid scheme", c.name, req.Headers["Authorization"])
		}
		got := req.do(t)
		want(t, c.name, got, http.StatusCreated, "")
		if ttl, _ := c.options["TTL"].(int); ttl > 30*24*3600 && got.header.Get("TTL") != "2592000" {
			t.Errorf("%s: TTL %q, want 2592000", c.name, got.header.Get("TTL"))
		}
		msgs := poll(t, d)
		if len(msgs) != 1 {
			t.Fatalf("%s: inbox holds %d messages, want 1", c.name, len(msgs))
		}
		w := webPushes(t, msgs)[0]
		plain, err := keys.DecryptMessage(w)
		if err != nil {
			t.Fatalf("%s: DecryptMessage: %v", c.name, err)
		}
		if string(plain) != c.payload {
			t.Errorf("%s: decrypted %q, want %q", c.name, plain, c.payload)
		}
		if w.Subscription != sub.ID || w.Label != "sw" || w.Headers["content-encoding"] != "aes128gcm" {
			t.Errorf("%s: received %+v", c.name, w)
		}
		if u, _ := c.options["urgency"].(string); u != "" && w.Urgency != u {
			t.Errorf("%s: urgency %q, want %q", c.name, w.Urgency, u)
		}
		if topic, _ := c.options["topic"].(string); w.Topic != topic {
			t.Errorf("%s: topic %q, want %q", c.name, w.Topic, topic)
		}
		if err := d.Ack(ctx, msgs[0].ID); err != nil {
			t.Fatal(err)
		}
	}

	// The older aesgcm coding signs with "WebPush <JWT>" and the key in
	// Crypto-Key, the drafts' form: Herald takes it and passes the
	// encryption headers on; this client decrypts only aes128gcm.
	req := request(t, dir, browserSub, "legacy", map[string]any{"TTL": 60, "contentEncoding": "aesgcm", "vapidDetails": vapidDetails})
	want(t, "aesgcm with draft VAPID", req.do(t), http.StatusCreated, "")
	legacy := poll(t, d)
	w := webPushes(t, legacy)[0]
	if w.Headers["content-encoding"] != "aesgcm" || !strings.HasPrefix(w.Headers["encryption"], "salt=") || !strings.Contains(w.Headers["crypto-key"], "dh=") {
		t.Errorf("aesgcm push arrived with headers %v", w.Headers)
	}
	if _, err := keys.DecryptMessage(w); !errors.Is(err, client.ErrUnsupportedEncoding) {
		t.Errorf("DecryptMessage(aesgcm) = %v, want ErrUnsupportedEncoding", err)
	}
	if err := d.Ack(ctx, legacy[0].ID); err != nil {
		t.Fatal(err)
	}

	// Signed by another application server: refused, and nothing arrives.
	var other struct{ PublicKey, PrivateKey string }
	node(t, dir, map[string]bool{"generateVAPIDKeys": true}, &other)
	req = request(t, dir, browserSub, "intruder", map[string]any{
		"TTL": 60, "vapidDetails": map[string]string{"subject": "mailto:x@example.com", "publicKey": other.PublicKey, "privateKey": other.PrivateKey},
	})
	want(t, "another application server", req.do(t), http.StatusForbidden, "vapid_invalid")
	// Without VAPID at all: the subscription demands it.
	req = request(t, dir, browserSub, "anonymous", map[string]any{"TTL": 60})
	want(t, "no VAPID", req.do(t), http.StatusUnauthorized, "vapid_required")

	// A subscription without an application server key takes unsigned
	// pushes from the library too.
	open := subscribe(t, d, client.WebPushOptions{})
	req = request(t, dir, keys.Subscription(open.Endpoint), "open", map[string]any{"TTL": 60})
	want(t, "unsigned push", req.do(t), http.StatusCreated, "")
	var plains []string
	for _, w := range webPushes(t, poll(t, d)) {
		p, err := keys.DecryptMessage(w)
		if err != nil {
			t.Fatalf("DecryptMessage: %v", err)
		}
		plains = append(plains, string(p))
	}
	// The refused pushes left nothing behind.
	if strings.Join(plains, ",") != "open" {
		t.Errorf("the inbox decrypts to %q, want only the open push", plains)
	}
}
