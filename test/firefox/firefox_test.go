package firefox

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// TestFirefox: a real Firefox ESR, headless, with Herald as its push
// service. A page's service worker subscribes (pushManager.subscribe with a
// VAPID key), the npm web-push library encrypts and signs a push to the
// endpoint Herald gave, Firefox decrypts it in the service worker, which
// reports the text back. A push sent while Firefox is closed arrives when it
// starts again. Then the worker unsubscribes, and the endpoint answers 410.
func TestFirefox(t *testing.T) {
	firefox, node := tools(t)
	installWebPush(t)

	herald := startServer(t, t.TempDir(), "127.0.0.1:0")
	vapid := newVAPID(t)
	site := startSite(t, vapid.public)
	prof := newProfile(t, strings.Replace(herald.URL, "http://", "ws://", 1)+"/mozpush")
	out := &heraldtest.SyncBuffer{}
	ff := startFirefox(t, firefox, prof, site.url+"/", out)
	defer func() {
		switch {
		case os.Getenv("FIREFOX_LOG") != "":
			t.Logf("herald's log:\n%s", herald.Log.String())
			t.Logf("firefox's output:\n%s", out.String())
		case t.Failed():
			t.Logf("herald's log:\n%s", tail(herald.Log.String(), 4000))
			t.Logf("firefox's output:\n%s", tail(out.String(), 12000))
		}
	}()

	ev := site.wait(t, "subscription", 90*time.Second)
	sub := ev.Subscription
	if !strings.HasPrefix(sub.Endpoint, herald.URL+"/wpush/") || sub.Keys.P256DH == "" || sub.Keys.Auth == "" {
		t.Fatalf("subscription %+v: want an endpoint under %s/wpush/ and keys", sub, herald.URL)
	}
	t.Logf("subscribed on attempt %d: %s", ev.Attempt, sub.Endpoint)

	text := "hello from web-push, " + rand.Text()
	if status := webPush(t, node, sub, text, vapid); status != http.StatusCreated {
		t.Fatalf("push: %d, want 201", status)
	}
	if got := site.wait(t, "push", 30*time.Second); got.Text == nil || *got.Text != text {
		t.Fatalf("the service worker got %v, want %q", got.Text, text)
	}

	// A push sent while Firefox is closed waits in Herald, and reaches the
	// service worker when Firefox starts again and says hello with its UAID.
	ff.stop()
	offline := "sent while Firefox was closed, " + rand.Text()
	if status := webPush(t, node, sub, offline, vapid); status != http.StatusCreated {
		t.Fatalf("push: %d, want 201", status)
	}
	startFirefox(t, firefox, prof, site.url+"/", out)
	for {
		ev := site.wait(t, "push", 60*time.Second)
		if ev.Text != nil && *ev.Text == offline {
			break
		}
		t.Logf("after the restart, also: %v", ev.Text)
	}

	// Unsubscribing in the page reaches Herald as an unregister: the
	// endpoint is gone.
	if status := webPush(t, node, sub, "unsubscribe", vapid); status != http.StatusCreated {
		t.Fatalf("push: %d, want 201", status)
	}
	site.wait(t, "push", 30*time.Second)
	if ev := site.wait(t, "unsubscribed", 30*time.Second); !ev.OK {
		t.Fatal("the service worker could not unsubscribe")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		status := webPush(t, node, sub, "after unsubscribe", vapid)
		if status == http.StatusGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("push after unsubscribe: %d, want 410", status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tools returns the paths of firefox-esr and node, or skips (fails under
// CI=true) when either is missing.
func tools(t *testing.T) (firefox, node string) {
	t.Helper()
	missing := func(what string) {
		msg := what + ": the Firefox end-to-end test cannot run"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	firefox = heraldtest.Firefox(t, "the Firefox end-to-end test")
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed (apt-get install -y nodejs npm)")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		if _, err := os.Stat("testdata/node_modules/web-push"); err != nil {
			missing("npm is not installed and testdata/node_modules has no web-push")
		}
	}
	return firefox, node
}

// installWebPush installs the npm web-push library into testdata (npm ci,
// from the lock file) unless .ci/run already did.
func installWebPush(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("testdata/node_modules/web-push/package.json"); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = "testdata"
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("npm ci in test/firefox/testdata: %v\n%s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// vapidKey is an application server's VAPID key pair, base64url.
type vapidKey struct{ public, private string }

func newVAPID(t *testing.T) vapidKey {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return vapidKey{public: enc(k.PublicKey().Bytes()), private: enc(k.Bytes())}
}

// pushSubscription is a browser's PushSubscription.toJSON().
type pushSubscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// webPush has web-push build the request (encrypted, VAPID-signed) and
// sends it; it returns the status.
func webPush(t *testing.T, node string, sub *pushSubscription, payload string, key vapidKey) int {
	t.Helper()
	in, _ := json.Marshal(map[string]any{
		"subscription": sub, "payload": payload, "ttl": 300,
		"vapid": map[string]string{"subject": "mailto:test@example.com", "publicKey": key.public, "privateKey": key.private},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "push.js")
	cmd.Dir = "testdata"
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("web-push: %v\n%s", err, stderr.String())
	}
	var r struct {
		Endpoint, Method, Body string
		Headers                map[string]any
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("web-push printed %q: %v", out, err)
	}
	body, _ := base64.StdEncoding.DecodeString(r.Body)
	req, err := http.NewRequest(r.Method, r.Endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.Headers {
		req.Header.Set(k, fmt.Sprint(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// site is the test's web server: the page and the service worker, and
// /report, where they tell the test what happened.
type site struct {
	url    string
	events chan event
}

// event is one report from the page or the service worker.
type event struct {
	Kind         string            `json:"kind"` // subscription, push, unsubscribed, log, error
	Subscription *pushSubscription `json:"subscription"`
	Attempt      int               `json:"attempt"`
	Text         *string           `json:"text"`
	OK           bool              `json:"ok"`
	Message      string            `json:"message"`
}

func startSite(t *testing.T, applicationServerKey string) *site {
	t.Helper()
	s := &site{events: make(chan event, 100)}
	mux := http.NewServeMux()
	file := func(name, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "no-store")
			w.Write(b)
		}
	}
	mux.HandleFunc("GET /{$}", file("index.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /sw.js", file("sw.js", "text/javascript"))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"applicationServerKey": applicationServerKey})
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var ev event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		select {
		case s.events <- ev:
		default: // a runaway page cannot block the server
		}
	})
	// 127.0.0.1 is a secure context, where service workers and push work.
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// wait returns the next event of kind, logging the others, and fails the
// test on an error event or after timeout.
func (s *site) wait(t *testing.T, kind string, timeout time.Duration) event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.events:
			switch ev.Kind {
			case kind:
				return ev
			case "error":
				t.Fatalf("the page failed: %s", ev.Message)
			default:
				t.Logf("page: %s %s", ev.Kind, ev.Message)
			}
		case <-deadline:
			t.Fatalf("no %s event within %v", kind, timeout)
		}
	}
}

// newProfile makes a fresh Firefox profile whose push service is pushURL.
// Everything that would reach out to Mozilla is off: updates, telemetry,
// safe browsing, captive portal checks, remote settings.
func newProfile(t *testing.T, pushURL string) string {
	t.Helper()
	dir := t.TempDir()
	prefs := map[string]any{
		"dom.push.serverURL":                      pushURL,
		"dom.push.testing.allowInsecureServerURL": true, // ws:// rather than wss://
		"dom.push.testing.ignorePermission":       true,
		"dom.push.enabled":                        true,
		"dom.push.connection.enabled":             true,
		"dom.push.loglevel":                       "debug",
		"dom.serviceWorkers.enabled":              true,
		"dom.serviceWorkers.testing.enabled":      true,
		"devtools.console.stdout.content":         true,
		"devtools.console.stdout.chrome":          true,
		"browser.dom.window.dump.enabled":         true,

		"app.update.enabled":                              false,
		"app.update.auto":                                 false,
		"app.update.checkInstallTime":                     false,
		"app.normandy.enabled":                            false,
		"toolkit.telemetry.enabled":                       false,
		"toolkit.telemetry.unified":                       false,
		"toolkit.telemetry.archive.enabled":               false,
		"toolkit.telemetry.server":                        "",
		"datareporting.healthreport.uploadEnabled":        false,
		"datareporting.policy.dataSubmissionEnabled":      false,
		"network.captive-portal-service.enabled":          false,
		"network.connectivity-service.enabled":            false,
		"network.proxy.type":                              0,
		"network.dns.disablePrefetch":                     true,
		"network.prefetch-next":                           false,
		"browser.safebrowsing.malware.enabled":            false,
		"browser.safebrowsing.phishing.enabled":           false,
		"browser.safebrowsing.downloads.enabled":          false,
		"browser.safebrowsing.blockedURIs.enabled":        false,
		"browser.safebrowsing.downloads.remote.enabled":   false,
		"browser.safebrowsing.provider.google4.updateURL": "",
		"browser.safebrowsing.provider.mozilla.updateURL": "",
		"services.settings.server":                        "http://127.0.0.1:9/",
		"extensions.update.enabled":                       false,
		"extensions.blocklist.enabled":                    false,
		"extensions.getAddons.cache.enabled":              false,
		"browser.search.update":                           false,
		"media.gmp-manager.url":                           "",
		"media.gmp-gmpopenh264.enabled":                   false,
		"browser.shell.checkDefaultBrowser":               false,
		"browser.startup.homepage_override.mstone":        "ignore",
		"browser.aboutwelcome.enabled":                    false,
		"datareporting.policy.firstRunURL":                "",
		"browser.newtabpage.enabled":                      false,
		"browser.startup.page":                            0,
	}
	var b strings.Builder
	for k, v := range prefs {
		val, _ := json.Marshal(v)
		fmt.Fprintf(&b, "user_pref(%q, %s);\n", k, val)
	}
	if err := os.WriteFile(filepath.Join(dir, "user.js"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browserProc is a running Firefox.
type browserProc struct {
	out  *heraldtest.SyncBuffer
	stop func() // SIGTERM to its process group, SIGKILL after 10 s; idempotent
}

// startFirefox runs headless Firefox on profile at url, and stops it (and
// its content processes) at the test's end at the latest.
func startFirefox(t *testing.T, bin, profile, url string, out *heraldtest.SyncBuffer) *browserProc {
	t.Helper()
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile, url)
	cmd.Env = append(os.Environ(), "MOZ_HEADLESS=1", "MOZ_CRASHREPORTER_DISABLE=1", "HOME="+t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting firefox: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b := &browserProc{out: out, stop: sync.OnceFunc(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})}
	t.Cleanup(b.stop)
	return b
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
