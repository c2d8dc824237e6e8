package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
)

// The routes the console reads (GET /v1/apps, /v1/apps/{app_key}/stats,
// /v1/devices, /v1/devices/{id}/pending, /v1/messages, /v1/stats/stream)
// and the admin token acting for an app, through real HTTP.

// onBothStores runs f on a node of the embedded store and on one of
// PostgreSQL (skipped when it cannot be reached, except under CI=true).
func onBothStores(t *testing.T, f func(*testing.T, *node)) {
	t.Run("embedded", func(t *testing.T) { f(t, startNode(t, testConfig(t))) })
	t.Run("postgres", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.PostgresURL, cfg.PostgresSchema = postgresConfig(t)
		f(t, startNode(t, cfg))
	})
}

func (n *node) admin() func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+n.info.AdminToken) }
}

// adminFor is the admin token acting for app.
func (n *node) adminFor(app string) func(*http.Request) {
	return func(r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+n.info.AdminToken)
		r.Header.Set("Herald-App", app)
	}
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

// newApp creates an app with the admin token and returns its key and
// master secret.
func (n *node) newApp(name string) (key, secret string) {
	n.t.Helper()
	var out struct{ AppKey, MasterSecret string }
	var raw struct {
		AppKey       string `json:"app_key"`
		MasterSecret string `json:"master_secret"`
	}
	if status, code := n.call("POST", "/v1/apps", n.admin(), map[string]string{"name": name}, &raw); status != http.StatusCreated {
		n.t.Fatalf("create app %s: %d %s", name, status, code)
	}
	out.AppKey, out.MasterSecret = raw.AppKey, raw.MasterSecret
	return out.AppKey, out.MasterSecret
}

// registerIn registers a device of app (with its master secret).
func (n *node) registerIn(app, secret, platform string, tags ...string) *client.Registration {
	n.t.Helper()
	var reg client.Registration
	status, code := n.call("POST", "/v1/devices", basic(app, secret), map[string]any{
		"app_key": app, "platform": platform, "tags": tags,
	}, &reg)
	if status != http.StatusCreated {
		n.t.Fatalf("register: %d %s", status, code)
	}
	reg.Server = n.url
	return &reg
}

// rawGet returns a GET's status and body.
func (n *node) rawGet(path string, auth func(*http.Request)) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest("GET", n.url+path, nil)
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type listedApp struct {
	AppKey    string    `json:"app_key"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

func TestListApps(t *testing.T) { onBothStores(t, testListApps) }

func testListApps(t *testing.T, n *node) {
	shop, shopSecret := n.newApp("shop")
	var all struct{ Apps []listedApp }
	if status, code := n.call("GET", "/v1/apps", n.admin(), nil, &all); status != 200 {
		t.Fatalf("GET /v1/apps (admin) = %d %s", status, code)
	}
	var names []string
	for _, a := range all.Apps {
		names = append(names, a.Name)
		if a.AppKey == "" || a.CreatedAt.IsZero() {
			t.Errorf("listed app %+v lacks its key or creation time", a)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"default", "shop"}) {
		t.Errorf("admin lists apps %v, want default and shop", names)
	}
	_, body := n.rawGet("/v1/apps", n.admin())
	if strings.Contains(body, "secret") || strings.Contains(body, shopSecret) {
		t.Errorf("the app list shows a secret: %s", body)
	}

	for name, auth := range map[string]func(*http.Request){
		"master secret":  basic(shop, shopSecret),
		"admin for shop": n.adminFor(shop),
	} {
		var one struct{ Apps []listedApp }
		if status, code := n.call("GET", "/v1/apps", auth, nil, &one); status != 200 || len(one.Apps) != 1 || one.Apps[0].AppKey != shop || one.Apps[0].Name != "shop" {
			t.Errorf("GET /v1/apps with the %s = %d %s %+v, want shop alone", name, status, code, one.Apps)
		}
	}
	for name, c := range map[string]struct {
		auth func(*http.Request)
		code string
	}{
		"no credentials":     {nil, "unauthorized"},
		"a wrong token":      {func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, "unauthorized"},
		"a wrong secret":     {basic(shop, "nope"), "unauthorized"},
		"admin, unknown app": {n.adminFor("ak_nope"), "app_not_found"},
	} {
		if status, code := n.call("GET", "/v1/apps", c.auth, nil, nil); code != c.code || (code == "unauthorized") != (status == 401) {
			t.Errorf("GET /v1/apps with %s = %d %s, want %s", name, status, code, c.code)
		}
	}
}

// TestAdminActsForApp: the admin token with Herald-App is that app's
// provider on every provider route.
func TestAdminActsForApp(t *testing.T) { onBothStores(t, testAdminActsForApp) }

func testAdminActsForApp(t *testing.T, n *node) {
	shop, shopSecret := n.newApp("shop")
	dev := n.registerIn(shop, shopSecret, "web")
	var pushed struct {
		MsgID string `json:"msg_id"`
	}
	push := map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "notification": map[string]string{"title": "hi"}}
	if status, code := n.call("POST", "/v1/push", n.adminFor(shop), push, &pushed); status != 202 {
		t.Fatalf("push as admin for shop = %d %s", status, code)
	}
	var rep struct {
		State    string
		Targeted int
	}
	if status, code := n.call("GET", "/v1/messages/"+pushed.MsgID, basic(shop, shopSecret), nil, &rep); status != 200 || rep.Targeted != 1 {
		t.Errorf("the app's own report of the admin's push = %d %s %+v", status, code, rep)
	}
	if status, code := n.call("GET", "/v1/messages/"+pushed.MsgID, n.adminFor(n.info.AppKey), nil, nil); status != 404 || code != "message_not_found" {
		t.Errorf("another app's message as admin for default = %d %s, want 404 message_not_found", status, code)
	}
	if status, code := n.call("GET", "/v1/devices/"+dev.RegistrationID, n.admin(), nil, nil); status != 400 || code != "bad_header" {
		t.Errorf("admin without Herald-App = %d %s, want 400 bad_header", status, code)
	}
	if status, code := n.call("POST", "/v1/push", n.adminFor("ak_nope"), push, nil); status != 404 || code != "app_not_found" {
		t.Errorf("admin for an unknown app = %d %s, want 404 app_not_found", status, code)
	}
	bad := func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong"); r.Header.Set("Herald-App", shop) }
	if status, code := n.call("POST", "/v1/push", bad, push, nil); status != 401 || code != "unauthorized" {
		t.Errorf("a wrong admin token with Herald-App = %d %s, want 401", status, code)
	}
	if status, code := n.call("DELETE", "/v1/messages/"+pushed.MsgID, n.adminFor(shop), nil, nil); status != 204 {
		t.Errorf("recall as admin for shop = %d %s", status, code)
	}
}

type listedDevice struct {
	RegistrationID string   `json:"registration_id"`
	AppKey         string   `json:"app_key"`
	Tags           []string `json:"tags"`
}

func TestListDevicesByTag(t *testing.T) { onBothStores(t, testListDevicesByTag) }

func testListDevicesByTag(t *testing.T, n *node) {
	shop, shopSecret := n.newApp("shop")
	var news, all []string
	for i := range 7 {
		tags := []string{"t" + fmt.Sprint(i%2)}
		if i%3 == 0 {
			tags = append(tags, "news")
		}
		d := n.registerIn(shop, shopSecret, "android", tags...)
		all = append(all, d.RegistrationID)
		if i%3 == 0 {
			news = append(news, d.RegistrationID)
		}
	}
	n.register("", "news") // the default app's: never listed for shop
	slices.Sort(all)
	slices.Sort(news)

	page := func(query string) ([]string, string) {
		t.Helper()
		var out struct {
			Devices []listedDevice
			Next    string
		}
		if status, code := n.call("GET", "/v1/devices"+query, basic(shop, shopSecret), nil, &out); status != 200 {
			t.Fatalf("GET /v1/devices%s = %d %s", query, status, code)
		}
		var ids []string
		for _, d := range out.Devices {
			if d.AppKey != shop {
				t.Errorf("GET /v1/devices%s lists %+v of another app", query, d)
			}
			ids = append(ids, d.RegistrationID)
		}
		return ids, out.Next
	}
	walk := func(query string) []string {
		var ids []string
		after := ""
		for range 20 {
			got, next := page(query + "&after=" + after)
			ids = append(ids, got...)
			if next == "" {
				return ids
			}
			after = next
		}
		t.Fatalf("GET /v1/devices%s never ends", query)
		return nil
	}
	if got := walk("?limit=2"); !slices.Equal(got, all) {
		t.Errorf("every device in pages of 2 = %v, want %v", got, all)
	}
	if got := walk("?tag=news&limit=1"); !slices.Equal(got, news) {
		t.Errorf("tag news in pages of 1 = %v, want %v", got, news)
	}
	if got, next := page("?tag=news"); !slices.Equal(got, news) || next != "" {
		t.Errorf("tag news in one page = %v (next %q), want %v and no next", got, next, news)
	}
	if got, _ := page("?tag=nobody"); len(got) != 0 {
		t.Errorf("a tag nobody has lists %v", got)
	}
	// The admin token for shop sees the same.
	var asAdmin struct{ Devices []listedDevice }
	n.call("GET", "/v1/devices?tag=news", n.adminFor(shop), nil, &asAdmin)
	if len(asAdmin.Devices) != len(news) {
		t.Errorf("admin for shop lists %d devices with news, want %d", len(asAdmin.Devices), len(news))
	}
	for _, c := range []struct{ query, code string }{
		{"?limit=0", "bad_parameter"}, {"?limit=1001", "bad_parameter"}, {"?limit=x", "bad_parameter"},
		{"?tag=" + strings.Repeat("x", 200), "bad_name"},
	} {
		if status, code := n.call("GET", "/v1/devices"+c.query, basic(shop, shopSecret), nil, nil); status != 400 || code != c.code {
			t.Errorf("GET /v1/devices%s = %d %s, want 400 %s", c.query, status, code, c.code)
		}
	}
	if status, code := n.call("GET", "/v1/devices", nil, nil, nil); status != 401 || code != "unauthorized" {
		t.Errorf("GET /v1/devices without credentials = %d %s", status, code)
	}
	// Devices register on this path from any origin; listing them is a
	// provider's call, which pages of other origins do not get to read.
	for _, method := range []string{"OPTIONS", "GET"} {
		req, _ := http.NewRequest(method, n.url+"/v1/devices", nil)
		req.Header.Set("Origin", "https://app.example")
		if method == "OPTIONS" {
			req.Header.Set("Access-Control-Request-Method", "GET")
		} else {
			req.SetBasicAuth(shop, shopSecret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("a cross-origin %s /v1/devices is allowed (%q)", method, got)
		}
	}
}

func TestDeviceSessionsAndPending(t *testing.T) { onBothStores(t, testDeviceSessionsAndPending) }

func testDeviceSessionsAndPending(t *testing.T, n *node) {
	dev := n.register("ana")
	type sess struct {
		Transport string
		Since     time.Time
	}
	device := func() []sess {
		t.Helper()
		var out struct {
			RegistrationID string `json:"registration_id"`
			Sessions       []sess
		}
		if status, code := n.call("GET", "/v1/devices/"+dev.RegistrationID, n.provider(), nil, &out); status != 200 || out.Sessions == nil {
			t.Fatalf("GET /v1/devices/{id} = %d %s %+v, want a sessions list", status, code, out)
		}
		return out.Sessions
	}
	if s := device(); len(s) != 0 {
		t.Errorf("an idle device has sessions %+v", s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		client.NewDevice(*dev, nil).Poll(ctx, 30*time.Second)
	}()
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 1 })
	if s := device(); len(s) != 1 || s[0].Transport != "poll" || time.Since(s[0].Since) > time.Minute {
		t.Errorf("a device in a long-poll has sessions %+v, want one poll", s)
	}
	cancel()
	<-polled
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 0 })

	first := n.push(map[string]any{"audience": map[string]any{"alias": []string{"ana"}}, "notification": map[string]string{"title": "one"}})
	second := n.push(map[string]any{"audience": "all", "message": map[string]int{"n": 2}})
	pending := func(query string) ([]string, bool) {
		t.Helper()
		var out struct {
			Messages []struct {
				ID           string
				Notification *struct{ Title string }
			}
			More bool
		}
		if status, code := n.call("GET", "/v1/devices/"+dev.RegistrationID+"/pending"+query, n.provider(), nil, &out); status != 200 {
			t.Fatalf("GET pending%s = %d %s", query, status, code)
		}
		var ids []string
		for _, m := range out.Messages {
			ids = append(ids, m.ID)
		}
		if len(out.Messages) > 0 && (out.Messages[0].Notification == nil || out.Messages[0].Notification.Title != "one") {
			t.Errorf("the pending message does not read as the device gets it: %+v", out.Messages[0])
		}
		return ids, out.More
	}
	if ids, more := pending(""); !slices.Equal(ids, []string{first, second}) || more {
		t.Errorf("pending = %v (more %v), want %s, %s", ids, more, first, second)
	}
	if ids, more := pending("?limit=1"); !slices.Equal(ids, []string{first}) || !more {
		t.Errorf("pending?limit=1 = %v (more %v), want %s and more", ids, more, first)
	}
	if ids, _ := pending(""); len(ids) != 2 {
		t.Errorf("reading what is pending acknowledged it: %v left", ids)
	}
	n.ack(dev, first, second)
	if ids, _ := pending(""); len(ids) != 0 {
		t.Errorf("pending after the acks = %v", ids)
	}
	shop, shopSecret := n.newApp("shop")
	for name, c := range map[string]struct {
		path   string
		auth   func(*http.Request)
		status int
		code   string
	}{
		"unknown device":     {"/v1/devices/nope/pending", n.provider(), 404, "device_not_found"},
		"another app's":      {"/v1/devices/" + dev.RegistrationID + "/pending", basic(shop, shopSecret), 404, "device_not_found"},
		"bad limit":          {"/v1/devices/" + dev.RegistrationID + "/pending?limit=-1", n.provider(), 400, "bad_parameter"},
		"no credentials":     {"/v1/devices/" + dev.RegistrationID + "/pending", nil, 401, "unauthorized"},
		"the device's own":   {"/v1/devices/" + dev.RegistrationID + "/pending", deviceAuth(dev), 401, "unauthorized"},
		"another app's view": {"/v1/devices/" + dev.RegistrationID, basic(shop, shopSecret), 404, "device_not_found"},
	} {
		if status, code := n.call("GET", c.path, c.auth, nil, nil); status != c.status || code != c.code {
			t.Errorf("%s: GET %s = %d %s, want %d %s", name, c.path, status, code, c.status, c.code)
		}
	}
}

type listedMessage struct {
	MsgID        string `json:"msg_id"`
	State        string
	Targeted     int
	Delivered    int
	Pending      int
	Recalled     int
	Audience     json.RawMessage
	Notification *struct{ Title string }
	Message      json.RawMessage
	Options      struct {
		TTL        int64  `json:"ttl"`
		CollapseID string `json:"collapse_id"`
	}
	Channels map[string]struct{ Delivered int }
}

func TestListMessages(t *testing.T) { onBothStores(t, testListMessages) }

func testListMessages(t *testing.T, n *node) {
	a := n.register("a")
	n.register("b")
	var want []string // newest first
	for i := range 5 {
		id := n.push(map[string]any{"audience": map[string]any{"alias": []string{"a"}}, "notification": map[string]string{"title": fmt.Sprint("n", i)},
			"options": map[string]any{"ttl": 600, "collapse_id": fmt.Sprint("c", i)}})
		want = append([]string{id}, want...)
	}
	all := n.push(map[string]any{"audience": "all", "message": map[string]string{"k": "v"}})
	want = append([]string{all}, want...)
	n.ack(a, want[1])
	if status, code := n.call("DELETE", "/v1/messages/"+want[2], n.provider(), nil, nil); status != 204 {
		t.Fatalf("recall: %d %s", status, code)
	}

	list := func(query string) ([]listedMessage, string) {
		t.Helper()
		var out struct {
			Messages []listedMessage
			Next     string
		}
		if status, code := n.call("GET", "/v1/messages"+query, n.provider(), nil, &out); status != 200 {
			t.Fatalf("GET /v1/messages%s = %d %s", query, status, code)
		}
		return out.Messages, out.Next
	}
	var got []string
	var byID = map[string]listedMessage{}
	before := ""
	for range 10 {
		ms, next := list("?limit=4&before=" + before)
		for _, m := range ms {
			got = append(got, m.MsgID)
			byID[m.MsgID] = m
		}
		if next == "" {
			break
		}
		before = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("messages in pages of 4 = %v, want newest first %v", got, want)
	}
	if m := byID[all]; string(m.Audience) != `"all"` || m.Targeted != 2 || m.State != "pending" || string(m.Message) != `{"k":"v"}` {
		t.Errorf("the broadcast lists as %+v, want audience all, 2 targeted, pending", m)
	}
	if m := byID[want[1]]; m.State != "delivered" || m.Delivered != 1 || m.Notification == nil || m.Notification.Title != "n4" ||
		m.Options.TTL != 600 || m.Options.CollapseID != "c4" || !strings.Contains(string(m.Audience), `"alias":["a"]`) || m.Channels["own"].Delivered != 1 {
		t.Errorf("the acknowledged push lists as %+v", m)
	}
	if m := byID[want[2]]; m.State != "recalled" || m.Recalled != 1 {
		t.Errorf("the recalled push lists as %+v", m)
	}
	// The single report carries the same.
	var one listedMessage
	n.call("GET", "/v1/messages/"+want[1], n.provider(), nil, &one)
	if one.MsgID != want[1] || one.Notification == nil || one.Notification.Title != "n4" || one.Options.TTL != 600 {
		t.Errorf("GET /v1/messages/{id} = %+v, want the push's content with its report", one)
	}

	shop, shopSecret := n.newApp("shop")
	var other struct{ Messages []listedMessage }
	n.call("GET", "/v1/messages", basic(shop, shopSecret), nil, &other)
	if len(other.Messages) != 0 {
		t.Errorf("another app lists %d messages", len(other.Messages))
	}
	for _, c := range []struct{ query, code string }{
		{"?before=m_nope", "bad_parameter"}, {"?limit=0", "bad_parameter"}, {"?limit=201", "bad_parameter"},
	} {
		if status, code := n.call("GET", "/v1/messages"+c.query, n.provider(), nil, nil); status != 400 || code != c.code {
			t.Errorf("GET /v1/messages%s = %d %s, want 400 %s", c.query, status, code, c.code)
		}
	}
	if status, code := n.call("GET", "/v1/messages?before="+all, basic(shop, shopSecret), nil, nil); status != 400 || code != "bad_parameter" {
		t.Errorf("another app's message as the cursor = %d %s, want 400 bad_parameter", status, code)
	}
	if status, code := n.call("GET", "/v1/messages", nil, nil, nil); status != 401 || code != "unauthorized" {
		t.Errorf("GET /v1/messages without credentials = %d %s", status, code)
	}
}

type appStatsOut struct {
	AppKey  string `json:"app_key"`
	Devices struct {
		Total      int
		ByPlatform map[string]int `json:"by_platform"`
	}
	Online struct {
		Scope       string
		Devices     int
		Sessions    int
		ByTransport map[string]int `json:"by_transport"`
	}
	Pushes struct {
		Scope      string
		LastMinute int64 `json:"last_minute"`
		LastHour   int64 `json:"last_hour"`
		SinceStart int64 `json:"since_start"`
	}
}

func TestAppStats(t *testing.T) { onBothStores(t, testAppStats) }

func testAppStats(t *testing.T, n *node) {
	shop, shopSecret := n.newApp("shop")
	devs := []*client.Registration{n.registerIn(shop, shopSecret, "android"), n.registerIn(shop, shopSecret, "android"), n.registerIn(shop, shopSecret, "web")}
	n.register("")
	for range 3 {
		var out struct{}
		// TTL 0: nothing waits, so that the device's long-poll below waits.
		n.call("POST", "/v1/push", basic(shop, shopSecret), map[string]any{"audience": "all", "message": 1, "options": map[string]int{"ttl": 0}}, &out)
	}
	// Once they are offered (to nobody), so that none ends the poll below.
	n.srv.deliv.Sync()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go client.NewDevice(*devs[2], nil).Poll(ctx, 30*time.Second)
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 1 })

	path := "/v1/apps/" + shop + "/stats"
	for name, auth := range map[string]func(*http.Request){"master secret": basic(shop, shopSecret), "admin": n.admin()} {
		var st appStatsOut
		if status, code := n.call("GET", path, auth, nil, &st); status != 200 {
			t.Fatalf("stats with the %s = %d %s", name, status, code)
		}
		if st.AppKey != shop || st.Devices.Total != 3 || st.Devices.ByPlatform["android"] != 2 || st.Devices.ByPlatform["web"] != 1 || st.Devices.ByPlatform["ios"] != 0 {
			t.Errorf("stats with the %s: devices %+v", name, st.Devices)
		}
		if st.Online.Scope != "node" || st.Online.Devices != 1 || st.Online.Sessions != 1 || st.Online.ByTransport["poll"] != 1 {
			t.Errorf("stats with the %s: online %+v, want one device in a long-poll", name, st.Online)
		}
		if st.Pushes.LastMinute != 3 || st.Pushes.LastHour != 3 || st.Pushes.SinceStart != 3 {
			t.Errorf("stats with the %s: pushes %+v, want 3 in each window", name, st.Pushes)
		}
	}
	var def appStatsOut
	n.call("GET", "/v1/apps/"+n.info.AppKey+"/stats", n.provider(), nil, &def)
	if def.Devices.Total != 1 || def.Pushes.SinceStart != 0 || def.Online.Devices != 0 {
		t.Errorf("the default app's stats count the other app's: %+v", def)
	}
	for name, c := range map[string]struct {
		path   string
		auth   func(*http.Request)
		status int
		code   string
	}{
		"another app's secret": {path, n.provider(), 401, "unauthorized"},
		"no credentials":       {path, nil, 401, "unauthorized"},
		"admin, unknown app":   {"/v1/apps/ak_nope/stats", n.admin(), 404, "app_not_found"},
	} {
		if status, code := n.call("GET", c.path, c.auth, nil, nil); status != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", name, status, code, c.status, c.code)
		}
	}
}

type liveEventOut struct {
	At            time.Time
	Scope         string
	App           string `json:"app_key"`
	Connections   map[string]int
	OnlineDevices *int     `json:"online_devices"`
	PushesPerS    float64  `json:"pushes_per_s"`
	SentPerS      *float64 `json:"sent_per_s"`
	DeliveredPerS float64  `json:"delivered_per_s"`
	Totals        struct {
		Pushes    int64
		Sent      *int64
		Delivered int64
	}
	PushesLastMinute int64 `json:"pushes_last_minute"`
	PushesLastHour   int64 `json:"pushes_last_hour"`
}

// liveStream opens GET /v1/stats/stream and returns its events, as
// (name, event) pairs, until the stream ends.
func (n *node) liveStream(ctx context.Context, auth func(*http.Request)) (<-chan [2]string, *http.Response) {
	n.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/v1/stats/stream", nil)
	auth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("GET /v1/stats/stream: %v", err)
	}
	events := make(chan [2]string, 100)
	go func() {
		defer close(events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				events <- [2]string{name, line[6:]}
			}
		}
	}()
	return events, resp
}

func nextEvent(t *testing.T, events <-chan [2]string) (string, liveEventOut) {
	t.Helper()
	select {
	case e, ok := <-events:
		if !ok {
			t.Fatal("the live stream ended")
		}
		var ev liveEventOut
		if err := json.Unmarshal([]byte(e[1]), &ev); err != nil {
			t.Fatalf("event %s: %q: %v", e[0], e[1], err)
		}
		return e[0], ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event from the live stream in 5 s")
	}
	return "", liveEventOut{}
}

func TestStatsStream(t *testing.T) { onBothStores(t, testStatsStream) }

func testStatsStream(t *testing.T, n *node) {
	shop, shopSecret := n.newApp("shop")
	dev := n.registerIn(shop, shopSecret, "web")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	events, resp := n.liveStream(ctx, n.admin())
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/stats/stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	start := time.Now()
	name, ev := nextEvent(t, events)
	if name != "stats" || ev.Scope != "node" || ev.SentPerS == nil || ev.Totals.Sent == nil || ev.Connections == nil || time.Since(start) > time.Second {
		t.Errorf("first event %s %+v: want node stats at once", name, ev)
	}
	appEvents, _ := n.liveStream(ctx, basic(shop, shopSecret))
	if _, ev := nextEvent(t, appEvents); ev.Scope != "app" || ev.App != shop || ev.OnlineDevices == nil || *ev.OnlineDevices != 0 || ev.SentPerS != nil {
		t.Errorf("first event with the master secret: %+v, want shop's figures without the node's", ev)
	}

	go client.NewDevice(*dev, nil).Poll(ctx, 30*time.Second)
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 1 })
	for range 4 {
		var out struct{}
		n.call("POST", "/v1/push", basic(shop, shopSecret), map[string]any{"audience": "all", "message": 1}, &out)
	}
	seen := false
	for range 5 {
		_, ev := nextEvent(t, appEvents)
		if ev.Totals.Pushes == 4 && ev.Connections["poll"] <= 1 && *ev.OnlineDevices <= 1 {
			if ev.PushesLastMinute != 4 || ev.PushesLastHour != 4 {
				t.Errorf("an event counts %d pushes in the last minute and %d in the hour, want 4 and 4", ev.PushesLastMinute, ev.PushesLastHour)
			}
			if ev.PushesPerS > 0 {
				seen = true
				break
			}
		}
	}
	if !seen {
		t.Error("the app's stream never showed the 4 pushes as a rate")
	}
	nodeSaw := false
	for range 5 {
		if _, ev := nextEvent(t, events); ev.Totals.Pushes == 4 {
			nodeSaw = true
			break
		}
	}
	if !nodeSaw {
		t.Error("the node's stream never counted the 4 pushes")
	}

	for name, c := range map[string]struct {
		auth func(*http.Request)
		code string
	}{
		"no credentials":   {func(*http.Request) {}, "unauthorized"},
		"a wrong token":    {func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, "unauthorized"},
		"a wrong secret":   {basic(shop, "nope"), "unauthorized"},
		"the device's own": {deviceAuth(dev), "unauthorized"},
	} {
		if status, code := n.call("GET", "/v1/stats/stream", c.auth, nil, nil); status != 401 || code != c.code {
			t.Errorf("the stream with %s = %d %s, want 401 %s", name, status, code, c.code)
		}
	}

	// A drain ends the streams with a close event, and does not wait for them.
	began := time.Now()
	n.stop()
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("the drain took %s with live streams open", took)
	}
	for e := range events {
		if e[0] == "close" {
			return
		}
	}
	t.Error("the stream ended without a close event")
}
