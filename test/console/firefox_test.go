package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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

// TestConsoleInFirefox is a smoke test of the console in a real headless
// Firefox ESR, which chromedp cannot drive: a page of the test's own, on the
// console's origin (through a proxy), holds the console in a frame and
// works it from JavaScript: a wrong token refused, sign in, create an app,
// the live stream (fetch's streaming body), a broadcast from the composer,
// its report, a recall. The proxy drops only the console's frame-ancestors
// policy, which would refuse the frame.
//
// It needs firefox-esr (or FIREFOX=path); without it the test skips,
// except under CI=true, where it fails.
func TestConsoleInFirefox(t *testing.T) {
	firefox := heraldtest.Firefox(t, "the console's Firefox test")
	srv := heraldtest.Start(t, t.TempDir(), "--admin-token", adminToken)
	target, _ := url.Parse(srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if csp := r.Header.Get("Content-Security-Policy"); csp != "" {
			r.Header.Set("Content-Security-Policy", strings.Replace(csp, "frame-ancestors 'none'", "frame-ancestors 'self'", 1))
		}
		return nil
	}
	reports := make(chan map[string]string, 100)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/harness.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, harness, adminToken)
		case "/report":
			var m map[string]string
			json.NewDecoder(r.Body).Decode(&m)
			reports <- m
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	defer func() {
		front.CloseClientConnections() // the console's live stream never ends by itself
		front.Close()
	}()

	out := &heraldtest.SyncBuffer{}
	stop := startFirefox(t, firefox, front.URL+"/harness.html", out)
	defer stop()
	deadline := time.After(120 * time.Second)
	for {
		select {
		case m := <-reports:
			switch m["kind"] {
			case "step":
				t.Logf("firefox: %s", m["name"])
			case "error":
				t.Errorf("the console reported an error in Firefox: %s", m["text"])
			case "fail":
				t.Fatalf("in Firefox: %s", m["text"])
			case "done":
				return
			}
		case <-deadline:
			t.Fatalf("Firefox did not finish in 120 s; its output:\n%s", out.String())
		}
	}
}

// startFirefox runs headless Firefox on a fresh profile that reaches out to
// nobody, at url, and returns a stop function (also run at the test's end).
func startFirefox(t *testing.T, bin, url string, out *heraldtest.SyncBuffer) func() {
	t.Helper()
	profile := t.TempDir()
	prefs := map[string]any{
		"app.update.enabled": false, "app.normandy.enabled": false,
		"toolkit.telemetry.enabled": false, "toolkit.telemetry.unified": false, "toolkit.telemetry.server": "",
		"datareporting.healthreport.uploadEnabled": false, "datareporting.policy.dataSubmissionEnabled": false,
		"datareporting.policy.firstRunURL": "", "network.captive-portal-service.enabled": false,
		"network.connectivity-service.enabled": false, "network.proxy.type": 0,
		"browser.safebrowsing.malware.enabled": false, "browser.safebrowsing.phishing.enabled": false,
		"browser.safebrowsing.downloads.enabled": false, "services.settings.server": "http://127.0.0.1:9/",
		"extensions.update.enabled": false, "browser.shell.checkDefaultBrowser": false,
		"browser.startup.homepage_override.mstone": "ignore", "browser.aboutwelcome.enabled": false,
		"browser.startup.page": 0, "dom.push.enabled": false,
	}
	var b strings.Builder
	for k, v := range prefs {
		val, _ := json.Marshal(v)
		fmt.Fprintf(&b, "user_pref(%q, %s);\n", k, val)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile, url)
	cmd.Env = append(os.Environ(), "MOZ_HEADLESS=1", "MOZ_CRASHREPORTER_DISABLE=1", "HOME="+t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting firefox: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := sync.OnceFunc(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	t.Cleanup(stop)
	return stop
}

// harness is the page that works the console in a frame; %s is the admin
// token. Each step is reported to /report, and so is anything the console
// throws.
const harness = `<!doctype html>
<meta charset="utf-8">
<title>console harness</title>
<body>
<script type="module">
const TOKEN = %q;
const frame = document.createElement('iframe');
frame.style.width = '1280px';
frame.style.height = '900px';
const loaded = new Promise((r) => frame.addEventListener('load', r, { once: true }));
frame.src = '/console/';
document.body.append(frame);
const report = (kind, data = {}) => fetch('/report', { method: 'POST', body: JSON.stringify({ kind, ...data }) });
const doc = () => frame.contentDocument;
const text = (sel) => doc().querySelector(sel)?.textContent || '';
async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    try { const v = fn(); if (v) return v; } catch (_) { /* not yet */ }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + '; the page shows: ' + (doc()?.body?.innerText || ''));
    await new Promise((r) => setTimeout(r, 100));
  }
}
function type(sel, v) {
  const el = doc().querySelector(sel);
  el.value = v;
  el.dispatchEvent(new Event('input', { bubbles: true }));
}
const submit = (sel) => doc().querySelector(sel).form.requestSubmit();

async function run() {
  await loaded;
  const w = frame.contentWindow;
  w.addEventListener('error', (e) => report('error', { text: String(e.message) }));
  w.addEventListener('unhandledrejection', (e) => report('error', { text: String(e.reason && (e.reason.stack || e.reason)) }));
  await until('the sign-in page', () => doc().querySelector('#admin-token'));
  type('#admin-token', 'not-the-token');
  submit('#admin-token');
  await until('the refusal', () => text('.signin .note.bad').includes('refused the credentials'));
  await report('step', { name: 'a wrong token brings the sign-in page back, with the message' });
  type('#admin-token', TOKEN);
  submit('#admin-token');
  await until('the apps', () => text('#apps').includes('default'));
  type('#new-app-name', 'firefox');
  submit('#new-app-name');
  await until('the new app', () => text('#created-secret').length > 20);
  const key = text('#created-key');
  await report('step', { name: 'signed in, app created: ' + key });
  await until('the live stream', () => text('#live-state').includes('live') && text('#live-pushes-total') !== '');
  await report('step', { name: 'the live stream reads events' });
  w.location.hash = '#/apps/' + key + '/compose';
  await until('the composer', () => doc().querySelector('#n-title'));
  doc().querySelector('#audience-kind input[value=all]').click();
  type('#n-title', 'from Firefox');
  await until('the preview', () => text('#preview').includes('from Firefox'));
  doc().querySelector('#send').click();
  await until('the answer', () => doc().querySelector('#sent-link'));
  doc().querySelector('#sent-link').click();
  await until('the report', () => text('#msg-state') === 'pending' && doc().querySelector('#recall'));
  await report('step', { name: 'a broadcast sent from the composer, its report' });
  doc().querySelector('#recall').click();
  await until('the recall', () => text('#msg-state') === 'recalled');
  w.location.hash = '#/apps/' + key;
  await until('the app page', () => text('#devices-total') === '0' && text('#live-state').includes('live'));
  await report('step', { name: 'recalled; the app page is live' });
  report('done');
}
run().catch((e) => report('fail', { text: String(e && (e.stack || e)) }));
</script>
`
