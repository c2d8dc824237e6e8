// Package browser drives a real headless Chromium against the real herald
// binary: the demo page registers with the browser client (/client.js),
// pushes go through the provider API, and the test reads them off the page,
// over WebSocket, over SSE and over long-polling.
//
// It needs Debian's chromium (apt-get install chromium, or CHROMIUM=path).
// Without it the tests skip, except under CI=true, where they fail.
package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/test/heraldtest"
)

// TestMain builds the herald binary the tests run (test/heraldtest).
func TestMain(m *testing.M) { heraldtest.Main(m) }

// server is a `herald serve` process on a fresh data directory.
type server struct {
	url, appKey, secret string
	log                 *bytes.Buffer
}

var bannerLine = regexp.MustCompile(`^\s+(HTTP API|app_key|master_secret)\s+(\S+)`)

func startServer(t *testing.T) *server {
	t.Helper()
	cmd := exec.Command(heraldtest.Bin(), "serve", "--data", t.TempDir(), "--init", "--http", "127.0.0.1:0", "--mqtt", "")
	stdout, _ := cmd.StdoutPipe()
	s := &server{log: &bytes.Buffer{}}
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting herald: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := bannerLine.FindStringSubmatch(sc.Text()); m != nil {
				switch m[1] {
				case "HTTP API":
					s.url = m[2]
				case "app_key":
					s.appKey = m[2]
				case "master_secret":
					s.secret = m[2]
				}
			}
			if strings.HasPrefix(sc.Text(), "For the client commands") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("herald exited before serving: %s", s.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("herald printed no banner in 30 s: %s", s.log)
	}
	return s
}

// push sends a notification to one device and returns its msg_id.
func (s *server) push(t *testing.T, regID, title, body string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"audience":     map[string]any{"registration_id": []string{regID}},
		"notification": map[string]string{"title": title, "body": body},
	})
	req, _ := http.NewRequest("POST", s.url+"/v1/push", bytes.NewReader(b))
	req.SetBasicAuth(s.appKey, s.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		MsgID string `json:"msg_id"`
	}
	if json.NewDecoder(resp.Body).Decode(&out); resp.StatusCode != 202 || out.MsgID == "" {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	return out.MsgID
}

// state returns a message's delivery state from its report.
func (s *server) state(t *testing.T, msgID string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/v1/messages/"+msgID, nil)
	req.SetBasicAuth(s.appKey, s.secret)
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

// browser starts a headless Chromium with a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(heraldtest.Chromium(t, "the browser end-to-end tests")),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, so that a failure to launch reads as one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// do runs steps with a deadline, failing the test with what the page shows
// when they do not complete.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		page, _ := chromedp.Run(octx, chromedp.Text("body"))
		t.Fatalf("%s: %v\npage: %s", what, err, page)
	}
}

// until waits for a JavaScript expression on the page to be true.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second))
}

// openDemo loads /demo with query, waits until the client is connected on
// want, and returns the registration ID it shows.
func openDemo(t *testing.T, ctx context.Context, s *server, query, want string) string {
	t.Helper()
	do(t, ctx, "open the demo on "+want, chromedp.Navigate(s.url+"/demo"+query))
	connected := until(fmt.Sprintf(`document.getElementById('status').textContent === 'open' &&
			document.getElementById('transport').textContent === %q`, want))
	// Chrome may still be replacing the last page's execution context when
	// Navigate returns; a poll begun in the old one is lost with it.
	for try := 1; ; try++ {
		_, err := chromedp.Run(ctx, connected)
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(err.Error(), "Cannot find context") {
			do(t, ctx, "open the demo on "+want, connected) // fails with the page's text
			break
		}
	}
	regID, err := chromedp.Run(ctx, chromedp.Text("#registration"))
	if err != nil || len(regID) < 16 {
		t.Fatalf("the demo shows registration %q (%v)", regID, err)
	}
	return regID
}

// see waits until the page lists a push with text in it.
func see(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	do(t, ctx, "see "+text+" on the page",
		until(fmt.Sprintf(`[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes(%q))`, text)))
}

func waitDelivered(t *testing.T, s *server, msgID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.state(t, msgID) != "delivered" {
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %q, not delivered: the page did not ack it", msgID, s.state(t, msgID))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDemoOverWebSocket(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	regID := openDemo(t, ctx, s, "", "ws")
	id := s.push(t, regID, "Hello from the test", "over a WebSocket")
	see(t, ctx, "over a WebSocket")
	waitDelivered(t, s, id)

	// Away from the page, a push waits; back on it, the same registration
	// (kept in localStorage) drains it.
	do(t, ctx, "leave the page", chromedp.Navigate("about:blank"))
	waiting := s.push(t, regID, "While away", "kept for the device")
	if again := openDemo(t, ctx, s, "", "ws"); again != regID {
		t.Fatalf("the page registered again (%s, was %s): the registration was not kept", again, regID)
	}
	see(t, ctx, "kept for the device")
	waitDelivered(t, s, waiting)
}

func TestDemoOverSSE(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	regID := openDemo(t, ctx, s, "?transport=sse", "sse")
	id := s.push(t, regID, "Hello from the test", "over server-sent events")
	see(t, ctx, "over server-sent events")
	waitDelivered(t, s, id) // acked by POST /v1/inbox/ack
	second := s.push(t, regID, "Again", "a second SSE push")
	see(t, ctx, "a second SSE push")
	waitDelivered(t, s, second)
}

func TestDemoOverLongPoll(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	regID := openDemo(t, ctx, s, "?transport=poll", "poll")
	id := s.push(t, regID, "Hello from the test", "over long-polling")
	see(t, ctx, "over long-polling")
	waitDelivered(t, s, id)
}

// TestDemoFallsBackWhenWebSocketsAreBlocked puts the server behind a proxy
// that refuses WebSocket upgrades, as some corporate proxies do: the client
// gives the WebSocket up and receives over SSE instead.
func TestDemoFallsBackWhenWebSocketsAreBlocked(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	target, _ := url.Parse(s.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "WebSockets are not allowed here", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer func() {
		front.CloseClientConnections() // the page's event stream never ends by itself
		front.Close()
	}()
	behind := *s
	behind.url = front.URL

	regID := openDemo(t, ctx, &behind, "", "sse")
	id := s.push(t, regID, "Hello from the test", "after falling back")
	see(t, ctx, "after falling back")
	waitDelivered(t, s, id)
}

// TestSeenElsewhereIsDroppedOnce: a message its service worker marked seen
// (markSeen, as it does for a push relayed to the device's Web Push
// subscription) is acknowledged by connect without reaching onMessage when
// the device's own connection brings it; the next message is shown.
func TestSeenElsewhereIsDroppedOnce(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	regID := openDemo(t, ctx, s, "", "ws")
	do(t, ctx, "leave the demo for another page of its origin", chromedp.Navigate(s.url+"/healthz"))
	relayed := s.push(t, regID, "Shown by the service worker", "relayed-copy")
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
		`import('/client.js').then(async (c) => { await c.markSeen(%q, %q); return c.wasSeen(%q, %q); })`, regID, relayed, regID, relayed),
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("markSeen in the page: %v", err)
	}
	if !ok {
		t.Fatal("wasSeen is false right after markSeen")
	}
	if again := openDemo(t, ctx, s, "", "ws"); again != regID {
		t.Fatalf("the page registered again (%s, was %s)", again, regID)
	}
	waitDelivered(t, s, relayed) // acknowledged...
	after := s.push(t, regID, "After", "own-connection-copy")
	see(t, ctx, "own-connection-copy")
	waitDelivered(t, s, after)
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('relayed-copy'))`))
	if err != nil {
		t.Fatal(err)
	}
	if shown {
		t.Error("the message marked seen was handed to onMessage again") // ...and not shown
	}
}
