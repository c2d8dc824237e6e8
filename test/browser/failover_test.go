package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// deadOrigin is an origin where nothing listens: a port just closed.
func deadOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// evalJSON runs an async function body on the page (client.js imported as
// c) and decodes what it returns into out.
func evalJSON(t *testing.T, ctx context.Context, what, body string, out any) {
	t.Helper()
	expr := `import('/client.js').then(async (c) => JSON.stringify(await (async () => {` + body + `})()))`
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := json.Unmarshal([]byte(raw), out); err != nil {
		t.Fatalf("%s: the page returned %q: %v", what, raw, err)
	}
}

// TestClientFailsOverPastADeadServer: register and connect are given a
// list whose first origin refuses connections; over each transport the
// client tries it, moves on to the second at once, and receives and acks
// there.
func TestClientFailsOverPastADeadServer(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	dead := deadOrigin(t)
	do(t, ctx, "open a page of the server's origin", chromedp.Navigate(s.url+"/healthz"))
	for _, tr := range []string{"ws", "sse", "poll"} {
		t.Run(tr, func(t *testing.T) {
			var regID string
			evalJSON(t, ctx, "register and connect", fmt.Sprintf(`
				if (window.conn) window.conn.close();
				window.got = [];
				window.log = [];
				const reg = await c.register([%q, location.origin], { appKey: %q, fresh: true });
				window.conn = c.connect(reg, {
					transports: [%q],
					onMessage: (m) => { window.got.push(m.notification.body); },
					onStatus: (st) => { window.log.push(st.state + ' ' + st.server); },
				});
				return reg.registration_id;`, dead, s.appKey, tr), &regID)
			do(t, ctx, "connect through the second server",
				until(`window.log.includes('open ' + location.origin)`))
			var log []string
			evalJSON(t, ctx, "read the status log", `return window.log;`, &log)
			// No 'waiting' between the two: a dead server costs one
			// failed attempt, not a back-off.
			if want := []string{"connecting " + dead, "connecting " + s.url, "open " + s.url}; strings.Join(log, "|") != strings.Join(want, "|") {
				t.Errorf("statuses %q, want %q", log, want)
			}
			body := "through the second server over " + tr
			id := s.push(t, regID, "Failover", body)
			do(t, ctx, "receive "+body, until(fmt.Sprintf(`window.got.includes(%q)`, body)))
			waitDelivered(t, s, id)
		})
	}
}

// TestKeptRegistrationOutlivesTheList: the registration is kept by app key,
// so the page stays the same device when its list of servers changes; one
// kept by an earlier client.js (by server and app key) is taken over, with
// its Web Push keys, and forget drops every copy.
func TestKeptRegistrationOutlivesTheList(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	do(t, ctx, "open a page of the server's origin", chromedp.Navigate(s.url+"/healthz"))
	var got struct {
		First, AsString, Reordered, Legacy string
		Servers                            []string
		LegacyGone, Moved                  bool
		OldCopyKeys, Keys                  []string
		Left                               []string
	}
	evalJSON(t, ctx, "register with changing lists", fmt.Sprintf(`
		const appKey = %q, dead = %q, me = location.origin;
		localStorage.clear();
		const out = {};
		const first = await c.register([dead, me], { appKey });
		out.first = first.registration_id;
		out.asString = (await c.register(me, { appKey })).registration_id;
		const reordered = await c.register([me, dead, 'http://127.0.0.1:1'], { appKey });
		out.reordered = reordered.registration_id;
		out.servers = JSON.parse(localStorage.getItem('herald:' + appKey)).servers;

		// As an earlier client.js kept it: by server, without a list.
		localStorage.clear();
		const old = { server: me, app_key: appKey, registration_id: first.registration_id, device_secret: first.device_secret, platform: 'web' };
		localStorage.setItem('herald:' + me + ':' + appKey, JSON.stringify(old));
		localStorage.setItem('herald:' + me + ':' + appKey + ':webpush:' + old.registration_id, JSON.stringify({ sub_1: { id: 'sub_1' } }));
		out.oldCopyKeys = Object.keys(c.webPushKeys(old));
		const taken = await c.register([dead, me], { appKey });
		out.legacy = taken.registration_id;
		out.legacyGone = localStorage.getItem('herald:' + me + ':' + appKey) === null;
		out.moved = localStorage.getItem('herald:' + appKey + ':webpush:' + old.registration_id) !== null;
		out.keys = Object.keys(c.webPushKeys(taken));
		c.forget(taken);
		out.left = Object.keys(localStorage);
		return out;`, s.appKey, deadOrigin(t)), &got)

	if got.First == "" || got.AsString != got.First || got.Reordered != got.First {
		t.Errorf("registrations %q, %q, %q: want one device whatever the list", got.First, got.AsString, got.Reordered)
	}
	if want := []string{s.url, "", "http://127.0.0.1:1"}; len(got.Servers) != 3 || got.Servers[0] != want[0] || got.Servers[2] != want[2] {
		t.Errorf("kept servers %q, want the latest list", got.Servers)
	}
	if got.Legacy != got.First || !got.LegacyGone || !got.Moved {
		t.Errorf("an earlier kept registration: taken as %q (want %q), old entry gone %v, Web Push keys moved %v", got.Legacy, got.First, got.LegacyGone, got.Moved)
	}
	if strings.Join(got.OldCopyKeys, ",") != "sub_1" || strings.Join(got.Keys, ",") != "sub_1" {
		t.Errorf("Web Push keys %q before the move, %q after; want sub_1 both times", got.OldCopyKeys, got.Keys)
	}
	if len(got.Left) != 0 {
		t.Errorf("forget left %q in localStorage", got.Left)
	}
}
