package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser half of issue 4's Web Push interop test: the npm web-push
// library is the application server, the browser client (/client.js, on the
// demo page with ?webpush=1) is the user agent. It reuses test/webpush's
// application server script and its installed library.

// webPushLib returns test/webpush/testdata, where send.js runs web-push
// (installed there with npm ci by .ci/run, or by test/webpush itself). When
// node or the library is missing the test skips, except under CI=true.
func webPushLib(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "webpush", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	msg := ""
	if _, err := exec.LookPath("node"); err != nil {
		msg = "node is not installed"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "web-push", "package.json")); err != nil {
		msg = "the npm web-push library is not installed in test/webpush/testdata (cd test/webpush/testdata && npm ci, as .ci/run does)"
	}
	if msg != "" {
		msg += ": the browser Web Push test cannot run"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// webPushNode runs send.js with in as its request and decodes its answer.
func webPushNode(t *testing.T, dir string, in, out any) {
	t.Helper()
	raw, _ := json.Marshal(in)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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

// pushSubscription is PushSubscription.toJSON(), as the page gives it.
type pushSubscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// pageSubscription waits for the demo to show its Web Push subscription
// and returns it.
func pageSubscription(t *testing.T, ctx context.Context) pushSubscription {
	t.Helper()
	const shown = `(() => { try { return !!JSON.parse(document.getElementById('webpush').textContent).endpoint } catch (_) { return false } })()`
	do(t, ctx, "see the Web Push subscription on the page", until(shown))
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.getElementById('webpush').textContent`))
	if err != nil {
		t.Fatalf("reading the subscription: %v", err)
	}
	var sub pushSubscription
	if err := json.Unmarshal([]byte(raw), &sub); err != nil {
		t.Fatalf("the page shows subscription %q: %v", raw, err)
	}
	return sub
}

// sendWebPush has web-push encrypt and sign payload for sub, sends the
// request as its sendNotification would, and returns the status and the
// message ID from Location.
func sendWebPush(t *testing.T, dir string, sub pushSubscription, payload string, options map[string]any) (int, string) {
	t.Helper()
	var r struct {
		Method, Endpoint, Body string
		Headers                map[string]string
	}
	webPushNode(t, dir, map[string]any{"subscription": sub, "payload": payload, "options": options}, &r)
	body, err := base64.StdEncoding.DecodeString(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(r.Method, r.Endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.Headers {
		if !strings.EqualFold(k, "Content-Length") { // net/http sets it from the body
			req.Header.Set(k, v)
		}
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", r.Endpoint, err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	_, msgID, _ := strings.Cut(loc, "/messages/")
	return resp.StatusCode, msgID
}

// TestDemoDecryptsWebPush: the page subscribes with web-push's VAPID public
// key (webPushSubscribe: WebCrypto keys, POST /v1/webpush/subscriptions),
// web-push encrypts (RFC 8291, aes128gcm) and signs (VAPID) a push for the
// subscription the page shows, Herald takes it, and the page decrypts it
// (decryptWebPush through connect's onWebPush) and acks it. After a reload
// the keys kept in localStorage open the next push; a push in a coding the
// client does not read reaches onMessage as is.
func TestDemoDecryptsWebPush(t *testing.T) {
	ctx := browser(t)
	lib := webPushLib(t)
	s := startServer(t)

	var vapid struct{ PublicKey, PrivateKey string }
	webPushNode(t, lib, map[string]bool{"generateVAPIDKeys": true}, &vapid)
	vapidDetails := map[string]string{"subject": "mailto:ops@example.com", "publicKey": vapid.PublicKey, "privateKey": vapid.PrivateKey}
	query := "?webpush=1&application_server_key=" + url.QueryEscape(vapid.PublicKey)

	regID := openDemo(t, ctx, s, query, "ws")
	sub := pageSubscription(t, ctx)
	if !strings.HasPrefix(sub.Endpoint, s.url+"/wpush/") {
		t.Errorf("endpoint %q, want one under %s/wpush/", sub.Endpoint, s.url)
	}
	if p, err := base64.RawURLEncoding.DecodeString(sub.Keys.P256DH); err != nil || len(p) != 65 || p[0] != 4 {
		t.Errorf("p256dh %q is not an uncompressed P-256 point in base64url (%v)", sub.Keys.P256DH, err)
	}
	if a, err := base64.RawURLEncoding.DecodeString(sub.Keys.Auth); err != nil || len(a) != 16 {
		t.Errorf("auth %q is not 16 bytes in base64url (%v)", sub.Keys.Auth, err)
	}

	payload := `Hello from web-push, ünïcödé ✓ {"n":1}`
	status, msgID := sendWebPush(t, lib, sub, payload, map[string]any{"TTL": 120, "urgency": "high", "vapidDetails": vapidDetails})
	if status != http.StatusCreated || msgID == "" {
		t.Fatalf("web-push's request got %d (message %q), want 201 with a Location", status, msgID)
	}
	seeWebPush(t, ctx, payload)
	waitDelivered(t, s, msgID)

	// Away from the page, a push waits; back on it, the same registration
	// and subscription come from localStorage, and so do the keys that
	// decrypt it (the private key as a JWK).
	do(t, ctx, "leave the page", chromedp.Navigate("about:blank"))
	long := strings.Repeat("watermelon ", 300)
	status, waiting := sendWebPush(t, lib, sub, long, map[string]any{"TTL": 120, "vapidDetails": vapidDetails})
	if status != http.StatusCreated {
		t.Fatalf("second push: %d, want 201", status)
	}
	if again := openDemo(t, ctx, s, query, "ws"); again != regID {
		t.Fatalf("the page registered again (%s, was %s)", again, regID)
	}
	if again := pageSubscription(t, ctx); again != sub {
		t.Fatalf("the page subscribed again (%+v, was %+v): the subscription was not kept", again, sub)
	}
	seeWebPush(t, ctx, long)
	waitDelivered(t, s, waiting)

	// The older aesgcm coding is not decrypted: the message goes to
	// onMessage as it came, and is acked all the same.
	status, legacy := sendWebPush(t, lib, sub, "legacy", map[string]any{"TTL": 60, "contentEncoding": "aesgcm", "vapidDetails": vapidDetails})
	if status != http.StatusCreated {
		t.Fatalf("aesgcm push: %d, want 201", status)
	}
	do(t, ctx, "see the aesgcm push listed as it came",
		until(`[...document.querySelectorAll('#messages li:not(.webpush)')].some(li => li.textContent.includes('"content-encoding":"aesgcm"'))`))
	waitDelivered(t, s, legacy)
}

// seeWebPush waits until the page lists a decrypted Web Push with text.
func seeWebPush(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	do(t, ctx, fmt.Sprintf("see the decrypted push %.40q on the page", text),
		until(fmt.Sprintf(`[...document.querySelectorAll('#messages li.webpush .body')].some(b => b.textContent === %q)`, text)))
}
