package firefox

import (
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// TestFirefoxThroughRelay: a real browser decrypts what Herald encrypted.
// Herald A is Firefox's push service (dom.push.serverURL) and, behind a TLS
// front as a push service is, hands out https endpoints; Herald B is the
// application's push server, with a Web Push channel whose VAPID key the
// page subscribes with. The subscription is registered on B as a device's
// webpush channel; a push to that device through B's POST /v1/push is
// relayed (RFC 8291 encryption, RFC 8292 VAPID) to A, which delivers it to
// Firefox, whose service worker shows the decrypted message.
func TestFirefoxThroughRelay(t *testing.T) {
	firefox, _ := tools(t)

	// A listens on a port chosen now, so that its TLS front can name it
	// and A can be told its public URL is the front's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aAddr := ln.Addr().String()
	ln.Close()
	target, _ := url.Parse("http://" + aAddr)
	front := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(front.Close)
	certFile := filepath.Join(t.TempDir(), "front.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	a := heraldtest.Start(t, t.TempDir(), "--http", aAddr, "--public-url", front.URL)
	b := heraldtest.StartEnv(t, []string{"SSL_CERT_FILE=" + certFile}, t.TempDir())

	call := func(method, path string, body any, want int) map[string]any {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, b.URL+path, strings.NewReader(string(raw)))
		req.SetBasicAuth(b.AppKey, b.Secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %v, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	wp := call("PUT", "/v1/apps/"+b.AppKey+"/channels/webpush", map[string]any{"subject": "mailto:ops@example.com"}, 200)
	vapidPublic, _ := wp["vapid_public_key"].(string)
	if vapidPublic == "" {
		t.Fatalf("webpush settings = %v: no vapid_public_key", wp)
	}

	site := startSite(t, vapidPublic)
	prof := newProfile(t, "ws://"+aAddr+"/mozpush")
	out := &heraldtest.SyncBuffer{}
	startFirefox(t, firefox, prof, site.url+"/", out)
	defer func() {
		if t.Failed() {
			t.Logf("push service's log:\n%s", tail(a.Log.String(), 3000))
			t.Logf("application server's log:\n%s", tail(b.Log.String(), 3000))
			t.Logf("firefox's output:\n%s", tail(out.String(), 8000))
		}
	}()
	sub := site.wait(t, "subscription", 90*time.Second).Subscription
	if !strings.HasPrefix(sub.Endpoint, front.URL+"/wpush/") {
		t.Fatalf("subscription endpoint %s, want one under %s/wpush/", sub.Endpoint, front.URL)
	}
	dev := call("POST", "/v1/devices", map[string]any{
		"app_key": b.AppKey, "platform": "web",
		"webpush": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.Keys.P256DH, "auth": sub.Keys.Auth}},
	}, 201)

	title := "relayed to Firefox, " + rand.Text()
	pushed := call("POST", "/v1/push", map[string]any{
		"audience":     map[string]any{"registration_id": []string{dev["registration_id"].(string)}},
		"notification": map[string]any{"title": title, "body": "through Herald's Web Push relay"},
	}, 202)
	msgID := pushed["msg_id"].(string)
	ev := site.wait(t, "push", 60*time.Second)
	if ev.Text == nil {
		t.Fatal("the service worker got a push without data")
	}
	var got struct {
		ID           string `json:"id"`
		Notification struct {
			Title string `json:"title"`
		} `json:"notification"`
	}
	if err := json.Unmarshal([]byte(*ev.Text), &got); err != nil || got.ID != msgID || got.Notification.Title != title {
		t.Fatalf("the service worker decrypted %q, want the message %s titled %q (%v)", *ev.Text, msgID, title, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep := call("GET", "/v1/messages/"+msgID, nil, 200)
		chans, _ := rep["channels"].(map[string]any)
		if w, _ := chans["webpush"].(map[string]any); w != nil && w["sent"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("report never counted the relay sent: %v", rep)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
