// Package console drives the web console (/console/) in a real headless
// Chromium against the real herald binary: sign in with the admin token,
// create an app, watch devices that the Go client registers and connects,
// send a push from the composer and watch its funnel reach delivered while
// the device acknowledges it, recall messages from the messages page,
// delete a device, and be sent back to the sign-in page, with a message, by
// a wrong or expired credential.
//
// With HERALD_CONSOLE_SCREENSHOTS=1 it saves a screenshot of each main page
// to docs/console/; without it they go to the test's artifact directory
// (go test -artifacts keeps them), so that CI never rewrites the docs.
//
// It needs Debian's chromium (or CHROMIUM=path); without it the test skips,
// except under CI=true, where it fails.
package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

const adminToken = "console-test-admin-token-0123456789abcdef"

// page is a headless Chromium tab with the console's failures collected:
// uncaught exceptions, console errors and calls of setInterval (the
// console must not poll).
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// noIntervals replaces setInterval, before any of the page's scripts run,
// with one that records its caller: the console is fed by the server's
// stream and must keep no polling timer.
const noIntervals = `(() => {
  const real = window.setInterval;
  window.__intervals = [];
  window.setInterval = function (fn, ms, ...args) {
    window.__intervals.push(String(new Error().stack));
    return real.call(window, fn, ms, ...args);
  };
})();`

func newTab(t *testing.T) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(heraldtest.Chromium(t, "the console test")),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: noIntervals}); err != nil {
		t.Fatalf("adding the interval trap: %v", err)
	}
	tb := &tab{t: t, ctx: ctx}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			// A refused call is logged by the browser as a failed
			// resource load: expected where the test signs in wrong.
			if m.IsException() || (m.Type == "error" && m.Source != "network") {
				tb.mu.Lock()
				tb.problems = append(tb.problems, m.String())
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(tb.check)
	return tb
}

// check fails the test on what the page got wrong.
func (tb *tab) check() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, p := range tb.problems {
		tb.t.Errorf("the page reported: %s", p)
	}
	octx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
	defer cancel()
	if n, err := chromedp.Run(octx, chromedp.Evaluate[[]string](`window.__intervals || []`)); err == nil && len(n) > 0 {
		tb.t.Errorf("the console set %d interval timers (it must not poll): %q", len(n), n)
	}
}

// do runs steps with a deadline, failing with what the page shows when
// they do not complete.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	tctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		octx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
		defer cancel()
		text, _ := chromedp.Run(octx, chromedp.Text("body"))
		tb.t.Fatalf("%s: %v\npage: %s", what, err, text)
	}
}

// until waits for a JavaScript expression to be true on the page.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second))
}

// text waits for sel to hold want (a substring).
func hasText(sel, want string) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(document.querySelector(%q)?.textContent || '').includes(%q)`, sel, want))
}

// submit submits the form of the field sel as the Enter key would, with
// its submit event (chromedp.Submit calls form.submit(), which has none).
func submit(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).form.requestSubmit()`, sel))
}

// eval runs a JavaScript expression for its value.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	tctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// open goes to a hash route of the console, as a click on a link does.
func open(route string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = %q`, route))
}

// shot saves a screenshot of the page as docs/console/name.png with
// HERALD_CONSOLE_SCREENSHOTS=1, else in the test's artifact directory.
func (tb *tab) shot(name string) {
	tb.t.Helper()
	// The chart and the figures settle with the next stream event.
	time.Sleep(1200 * time.Millisecond)
	tctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := tb.t.ArtifactDir()
	if os.Getenv("HERALD_CONSOLE_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs", "console")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// traffic pushes n data messages to device, one every every.
func traffic(t *testing.T, base, app, secret, device string, n int, every time.Duration) {
	t.Helper()
	for i := range n {
		body := fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"n":%d}}`, device, i)
		req, _ := http.NewRequest("POST", base+"/v1/push", strings.NewReader(body))
		req.SetBasicAuth(app, secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push: %d", resp.StatusCode)
		}
		time.Sleep(every)
	}
}

// reportState returns a message's state from its report, through the API.
func reportState(t *testing.T, base, app, secret, id string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/messages/"+id, nil)
	req.SetBasicAuth(app, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	defer resp.Body.Close()
	var r struct {
		State string `json:"state"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	return r.State
}

func TestConsole(t *testing.T) {
	tb := newTab(t)
	srv := heraldtest.Start(t, t.TempDir(), "--admin-token", adminToken)

	// A wrong token: the sign-in page again, with the server's reason.
	tb.do("open the console", chromedp.Navigate(srv.URL+"/console/"), chromedp.WaitVisible("#admin-token"))
	tb.do("sign in with a wrong token",
		chromedp.SendKeys("#admin-token", "not-the-token"),
		submit("#admin-token"),
		hasText(".signin .note.bad", "refused the credentials"),
		chromedp.WaitVisible("#admin-token"))
	tb.shot("signin")

	// The right one: the apps page.
	tb.do("sign in as admin",
		chromedp.SendKeys("#admin-token", adminToken),
		submit("#admin-token"),
		hasText("#apps", "default"))
	if stored := eval[string](tb, `sessionStorage.getItem('herald-console') || ''`); !strings.Contains(stored, adminToken) {
		t.Errorf("the credential is not in sessionStorage: %q", stored)
	}
	if kept := eval[int](tb, `localStorage.length`); kept != 0 {
		t.Errorf("the console wrote %d items to localStorage", kept)
	}

	// A new app: its credentials are shown once.
	tb.do("create an app",
		chromedp.SendKeys("#new-app-name", "shop"),
		submit("#new-app-name"),
		chromedp.WaitVisible("#app-created"),
		hasText("#apps", "shop"),
		hasText("#live-state", "live"))
	appKey := eval[string](tb, `document.getElementById('created-key').textContent`)
	secret := eval[string](tb, `document.getElementById('created-secret').textContent`)
	if !strings.HasPrefix(appKey, "ak_") || len(secret) < 32 {
		t.Fatalf("the new app shows key %q and secret %q", appKey, secret)
	}
	tb.shot("apps")

	// Devices, registered by the Go client; one of them listens and acks.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := func(platform, alias string, tags ...string) *client.Registration {
		r, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: appKey, Platform: platform, Alias: alias, Tags: tags})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		return r
	}
	listener := reg("android", "ana", "news", "beta")
	quiet := reg("ios", "ana", "news")
	bo := reg("web", "bo")
	got := make(chan client.Message, 10)
	listening := make(chan error, 1)
	go func() {
		listening <- client.NewDevice(*listener, nil).Listen(ctx, func(m client.Message) error {
			if m.Notification != nil {
				got <- m
			}
			return nil // acknowledged once this returns
		})
	}()

	// The app's page: devices and who is online, live, while data
	// messages flow to the listening device for its chart.
	tb.do("open the app", open("#/apps/"+appKey), hasText("#live-state", "live"))
	traffic(t, srv.URL, appKey, secret, listener.RegistrationID, 12, 250*time.Millisecond)
	tb.do("see the app's figures", hasText("#live-pushes-total", "12"), hasText("#pushes-minute", "12"),
		hasText("#devices-total", "3"),
		hasText("#devices-platforms", "android"),
		until(`document.getElementById('online-devices')?.textContent === '1'`),
		hasText("#online-transports", "poll"))
	tb.do("find devices by alias",
		chromedp.SetValue("#find-kind", "alias"),
		chromedp.SendKeys("#find-term", "ana"),
		submit("#find-term"),
		until(`document.querySelectorAll('#found tbody tr').length === 2`))
	tb.do("find devices by tag",
		chromedp.SetValue("#find-kind", "tag"),
		chromedp.SetValue("#find-term", "beta"),
		submit("#find-term"),
		until(`document.querySelectorAll('#found tbody tr').length === 1`),
		hasText("#found", listener.RegistrationID))
	tb.shot("app")

	// The listening device's page.
	tb.do("open the listening device", chromedp.Click(`#found a`),
		hasText("#device-id", listener.RegistrationID),
		hasText("#device-tags", "beta"),
		hasText("#device-sessions", "poll"),
		hasText("#device-seen", "online now"))
	tb.shot("device")

	// A push from the composer, to the listening device by ID.
	tb.do("compose", open("#/apps/"+appKey+"/compose?to="+listener.RegistrationID),
		chromedp.WaitVisible("#n-title"),
		chromedp.SendKeys("#n-title", "Hello from the console"),
		chromedp.SendKeys("#n-body", "sent by the composer"),
		hasText("#preview", "Hello from the console"))
	tb.shot("compose")
	tb.do("send", chromedp.Click("#send"), chromedp.WaitVisible("#sent-link"))
	msgID := eval[string](tb, `document.getElementById('sent-link').textContent`)
	select {
	case m := <-got:
		if m.ID != msgID || m.Notification == nil || m.Notification.Title != "Hello from the console" {
			t.Errorf("the device got %+v, want %s from the composer", m, msgID)
		}
	case err := <-listening:
		t.Fatalf("the device stopped listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not get the composer's push")
	}
	tb.do("watch the funnel reach delivered", chromedp.Click("#sent-link"),
		hasText("#msg-id", msgID),
		hasText("#msg-state", "delivered"),
		hasText("#funnel-delivered", "1"),
		hasText("#funnel-pending", "0"))
	tb.shot("message")

	// A push nobody acknowledges (the quiet device never connects), and a
	// scheduled one: both recalled from the messages page.
	tb.do("compose a push to the quiet device", open("#/apps/"+appKey+"/compose?to="+quiet.RegistrationID),
		chromedp.WaitVisible("#n-title"),
		chromedp.SendKeys("#n-title", "Never read"),
		chromedp.Click("#send"), chromedp.WaitVisible("#sent-link"))
	unacked := eval[string](tb, `document.getElementById('sent-link').textContent`)
	tb.do("compose a scheduled broadcast", open("#/apps/"+appKey+"/compose"),
		chromedp.WaitVisible("#n-title"),
		chromedp.Click(`#audience-kind input[value=all]`),
		chromedp.SendKeys("#n-title", "Tomorrow"),
		chromedp.Evaluate[chromedp.Void](`(() => { const d = new Date(Date.now() + 86400e3); d.setSeconds(0, 0);
			const el = document.getElementById('o-send-at'); el.value = new Date(d - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
			el.dispatchEvent(new Event('input', { bubbles: true })); })()`),
		hasText("#preview", "send_at"),
		chromedp.Click("#send"), chromedp.WaitVisible("#sent-link"))
	scheduled := eval[string](tb, `document.getElementById('sent-link').textContent`)
	row := func(id string) string { return fmt.Sprintf(`#messages tr[data-msg=%q]`, id) }
	tb.do("open the messages", open("#/apps/"+appKey+"/messages"),
		until(fmt.Sprintf(`document.querySelector(%q)?.dataset.state === 'pending'`, row(unacked))),
		until(fmt.Sprintf(`document.querySelector(%q)?.dataset.state === 'scheduled'`, row(scheduled))),
		until(fmt.Sprintf(`document.querySelector(%q)?.dataset.state === 'delivered'`, row(msgID))))
	tb.shot("messages")
	tb.do("recall both", chromedp.Click(row(unacked)+" button.recall"),
		until(fmt.Sprintf(`document.querySelector(%q)?.dataset.state === 'recalled'`, row(unacked))),
		chromedp.Click(row(scheduled)+" button.recall"),
		until(fmt.Sprintf(`document.querySelector(%q)?.dataset.state === 'recalled'`, row(scheduled))))
	for _, id := range []string{unacked, scheduled} {
		if state := reportState(t, srv.URL, appKey, secret, id); state != "recalled" {
			t.Errorf("message %s is %q after the recall, want recalled", id, state)
		}
	}

	// A device deleted from its page, after a confirmation.
	tb.do("delete a device", open("#/apps/"+appKey+"/devices/"+bo.RegistrationID),
		hasText("#device-id", bo.RegistrationID),
		hasText("#device-seen", "not recorded"),
		chromedp.Click("#delete-device"),
		chromedp.Click("#delete-confirm"),
		hasText(".note.ok", "deleted"))
	if _, err := client.NewDevice(*bo, nil).Poll(ctx, 0); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("the deleted device still polls: %v", err)
	}

	// Signed in with the app's own credentials: that app alone.
	tb.do("sign out", chromedp.Click("#sign-out"), chromedp.WaitVisible("#app-key"))
	tb.do("sign in to the app",
		chromedp.SendKeys("#app-key", appKey),
		chromedp.SendKeys("#master-secret", secret),
		submit("#master-secret"),
		hasText("#devices-total", "2"),
		hasText("#app-name", "shop"))
	if apps := eval[bool](tb, `[...document.querySelectorAll('#nav a')].some(a => a.textContent === 'Apps')`); apps {
		t.Error("an app's credentials see the list of apps")
	}
	tb.do("an app cannot open another app", open("#/apps/"+srv.AppKey), hasText("#app-name", "shop"))

	// A credential that stopped working (the secret changed, the token
	// was rotated): the next page is the sign-in page, with a message.
	tb.do("expire the credential",
		chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem('herald-console', JSON.stringify({kind: 'admin', token: 'rotated-away'}))`),
		open("#/apps"),
		hasText(".signin .note.bad", "refused the credentials"),
		chromedp.WaitVisible("#admin-token"))
	if stored := eval[string](tb, `sessionStorage.getItem('herald-console') || ''`); stored != "" {
		t.Errorf("a refused credential stays in sessionStorage: %q", stored)
	}
}
