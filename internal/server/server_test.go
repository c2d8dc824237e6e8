package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/config"
)

// node is a running server under test, reached only through HTTP.
type node struct {
	t    testing.TB
	srv  *Server
	url  string
	info Info
	stop func()
	hc   *http.Client // for call; http.DefaultClient when nil (set it to trust a test CA)
}

func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Init = true // a fresh directory that is not the default
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MQTTAddr = ""
	cfg.ShutdownGrace = time.Second
	return cfg
}

func startNode(t testing.TB, cfg config.Config) *node {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	n := &node{t: t, srv: srv, url: srv.Info().HTTPURL, info: srv.Info()}
	stopped := false
	n.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(n.stop)
	return n
}

// call makes one request and decodes a JSON answer into out (if not nil).
// It returns the status and, for an error answer, the error code.
func (n *node) call(method, path string, auth func(*http.Request), body any, out any) (int, string) {
	n.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, n.url+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	hc := n.hc
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var env struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(raw, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			n.t.Errorf("%s %s: %d with a body that is not an error object: %q", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, env.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, ""
}

func (n *node) provider() func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(n.info.AppKey, n.info.AppSecret) }
}

func deviceAuth(reg *client.Registration) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(reg.RegistrationID, reg.DeviceSecret) }
}

func (n *node) register(alias string, tags ...string) *client.Registration {
	n.t.Helper()
	var reg client.Registration
	status, code := n.call("POST", "/v1/devices", n.provider(), map[string]any{
		"app_key": n.info.AppKey, "platform": "android", "alias": alias, "tags": tags,
	}, &reg)
	if status != http.StatusCreated {
		n.t.Fatalf("register: %d %s", status, code)
	}
	reg.Server = n.url
	return &reg
}

func (n *node) push(req any) string {
	n.t.Helper()
	var out struct {
		MsgID string `json:"msg_id"`
	}
	if status, code := n.call("POST", "/v1/push", n.provider(), req, &out); status != http.StatusAccepted || out.MsgID == "" {
		n.t.Fatalf("push %v: %d %s", req, status, code)
	}
	return out.MsgID
}

func (n *node) poll(reg *client.Registration, query string) []client.Message {
	n.t.Helper()
	var out struct {
		Messages []client.Message `json:"messages"`
	}
	if status, code := n.call("GET", "/v1/inbox"+query, deviceAuth(reg), nil, &out); status != http.StatusOK {
		n.t.Fatalf("poll: %d %s", status, code)
	}
	return out.Messages
}

func (n *node) ack(reg *client.Registration, ids ...string) int {
	n.t.Helper()
	var out struct {
		Acked int `json:"acked"`
	}
	if status, code := n.call("POST", "/v1/inbox/ack", deviceAuth(reg), map[string]any{"ids": ids}, &out); status != http.StatusOK {
		n.t.Fatalf("ack: %d %s", status, code)
	}
	return out.Acked
}

func ids(msgs []client.Message) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

func TestRegisterPushPollAck(t *testing.T) {
	n := startNode(t, testConfig(t))
	if n.info.AppSecret == "" || n.info.AppKey == "" || !n.info.AdminTokenNew {
		t.Fatalf("first start did not create the default app and admin token: %+v", n.info)
	}
	dev := n.register("alice", "news")
	if len(dev.RegistrationID) < 22 || dev.DeviceSecret == "" {
		t.Fatalf("registration %+v: want an ID of at least 128 bits and a secret", dev)
	}
	id := n.push(map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}},
		"notification": map[string]any{"title": "Hello", "body": "world"}})

	msgs := n.poll(dev, "")
	if len(msgs) != 1 || msgs[0].ID != id || msgs[0].Notification.Title != "Hello" {
		t.Fatalf("poll = %+v, want the pushed message", msgs)
	}
	// Not acknowledged: it comes again.
	if again := n.poll(dev, ""); !slices.Equal(ids(again), []string{id}) {
		t.Fatalf("second poll = %v, want %s again", ids(again), id)
	}
	var rep struct {
		State                        string
		Targeted, Delivered, Pending int
	}
	n.call("GET", "/v1/messages/"+id, n.provider(), nil, &rep)
	if rep.State != "pending" || rep.Targeted != 1 || rep.Delivered != 0 || rep.Pending != 1 {
		t.Errorf("report before ack = %+v", rep)
	}
	if acked := n.ack(dev, id); acked != 1 {
		t.Errorf("ack = %d, want 1", acked)
	}
	if left := n.poll(dev, ""); len(left) != 0 {
		t.Errorf("after ack, poll = %v, want nothing", ids(left))
	}
	n.call("GET", "/v1/messages/"+id, n.provider(), nil, &rep)
	if rep.State != "delivered" || rep.Delivered != 1 || rep.Pending != 0 {
		t.Errorf("report after ack = %+v", rep)
	}
}

func TestAudiencesAndOrder(t *testing.T) {
	n := startNode(t, testConfig(t))
	a1 := n.register("alice", "news", "sport")
	a2 := n.register("alice")
	b := n.register("bob", "news")
	note := map[string]any{"title": "x"}
	byID := n.push(map[string]any{"audience": map[string]any{"registration_id": []string{b.RegistrationID}}, "notification": note})
	byAlias := n.push(map[string]any{"audience": map[string]any{"alias": []string{"alice"}}, "notification": note})
	byTag := n.push(map[string]any{"audience": map[string]any{"tag": []string{"news"}}, "notification": note})
	byAnd := n.push(map[string]any{"audience": map[string]any{"tag_and": []string{"news", "sport"}}, "notification": note})
	byNot := n.push(map[string]any{"audience": map[string]any{"tag_not": []string{"news"}}, "notification": note})
	all := n.push(map[string]any{"audience": "all", "notification": note})
	// For iOS only: every device here is android, so none may get it (the
	// exact lists below leave it out).
	n.push(map[string]any{"audience": "all", "platform": "ios", "notification": note})

	for _, c := range []struct {
		dev  *client.Registration
		want []string
	}{
		{a1, []string{byAlias, byTag, byAnd, all}},
		{a2, []string{byAlias, byNot, all}},
		{b, []string{byID, byTag, all}},
	} {
		if got := ids(n.poll(c.dev, "")); !slices.Equal(got, c.want) {
			t.Errorf("device %s got %v, want %v (in accepted order)", c.dev.Alias, got, c.want)
		}
	}
}

func TestLongPollWakesOnPush(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	got := make(chan []client.Message, 1)
	go func() {
		d := client.NewDevice(*dev, nil)
		msgs, _ := d.Poll(context.Background(), 30*time.Second)
		got <- msgs
	}()
	// The push can only reach the poll by waking it: the poll waits 30 s
	// and the test fails long before if nothing wakes it.
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 1 })
	id := n.push(map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "message": map[string]int{"n": 1}})
	select {
	case msgs := <-got:
		if !slices.Equal(ids(msgs), []string{id}) {
			t.Errorf("long-poll returned %v, want %s", ids(msgs), id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return after the push")
	}

	// A broadcast with TTL 0 reaches a device waiting now, and nobody later.
	n.ack(dev, id)
	go func() {
		d := client.NewDevice(*dev, nil)
		msgs, _ := d.Poll(context.Background(), 30*time.Second)
		got <- msgs
	}()
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 1 })
	now := n.push(map[string]any{"audience": "all", "message": 1, "options": map[string]any{"ttl": 0}})
	select {
	case msgs := <-got:
		if !slices.Equal(ids(msgs), []string{now}) {
			t.Errorf("waiting device got %v, want the ttl-0 message %s", ids(msgs), now)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return after a ttl-0 push")
	}
	late := n.register("")
	if msgs := n.poll(late, ""); len(msgs) != 0 {
		t.Errorf("a ttl-0 message waited for a device that was not online: %v", ids(msgs))
	}
}

// sessions counts live sessions, so a test knows a long-poll is waiting.
func (n *node) sessions() int { return n.srv.hub.Len() }

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCollapseRecallExpiry(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	to := map[string]any{"registration_id": []string{dev.RegistrationID}}
	n.push(map[string]any{"audience": to, "message": 1, "options": map[string]any{"collapse_id": "score"}})
	newer := n.push(map[string]any{"audience": to, "message": 2, "options": map[string]any{"collapse_id": "score"}})
	recalled := n.push(map[string]any{"audience": to, "message": 3})
	short := n.push(map[string]any{"audience": to, "message": 4, "options": map[string]any{"ttl": 1}})
	if status, code := n.call("DELETE", "/v1/messages/"+recalled, n.provider(), nil, nil); status != http.StatusNoContent {
		t.Fatalf("recall: %d %s", status, code)
	}
	if got := ids(n.poll(dev, "")); !slices.Equal(got, []string{newer, short}) {
		t.Errorf("poll = %v, want the newer collapsed message and the short one", got)
	}
	waitFor(t, 5*time.Second, func() bool { return !slices.Contains(ids(n.poll(dev, "")), short) })
	var rep struct{ State string }
	n.call("GET", "/v1/messages/"+short, n.provider(), nil, &rep)
	if rep.State != "expired" {
		t.Errorf("state of an expired message = %q", rep.State)
	}
	n.call("GET", "/v1/messages/"+recalled, n.provider(), nil, &rep)
	if rep.State != "recalled" {
		t.Errorf("state of a recalled message = %q", rep.State)
	}
}

func TestIdempotencyAndBatch(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	req := map[string]any{"audience": "all", "message": 1, "options": map[string]any{"idempotency_key": "order-7"}}
	first := n.push(req)
	if again := n.push(req); again != first {
		t.Errorf("retried push got %s, want the first msg_id %s", again, first)
	}
	var out struct {
		Accepted int
		Results  []struct {
			MsgID string `json:"msg_id"`
			Error *struct{ Code string }
		}
	}
	status, _ := n.call("POST", "/v1/push/batch", n.provider(), map[string]any{"pushes": []any{
		map[string]any{"audience": "all", "message": "a"},
		map[string]any{"audience": "all"},
		map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "message": "b"},
	}}, &out)
	if status != http.StatusAccepted || out.Accepted != 2 || len(out.Results) != 3 || out.Results[1].Error == nil ||
		out.Results[1].Error.Code != "empty_message" || out.Results[0].MsgID == "" || out.Results[2].MsgID == "" {
		t.Fatalf("batch = %d %+v", status, out)
	}
	want := []string{first, out.Results[0].MsgID, out.Results[2].MsgID}
	if got := ids(n.poll(dev, "")); !slices.Equal(got, want) {
		t.Errorf("poll = %v, want %v", got, want)
	}
}

func TestBadInput(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	var app struct {
		AppKey       string `json:"app_key"`
		MasterSecret string `json:"master_secret"`
	}
	admin := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+n.info.AdminToken) }
	if status, code := n.call("POST", "/v1/apps", admin, map[string]string{"name": "second"}, &app); status != http.StatusCreated {
		t.Fatalf("create app: %d %s", status, code)
	}
	second := func(r *http.Request) { r.SetBasicAuth(app.AppKey, app.MasterSecret) }
	ids1001 := make([]string, 1001)
	for i := range ids1001 {
		ids1001[i] = fmt.Sprintf("id%d", i)
	}
	to := map[string]any{"registration_id": []string{dev.RegistrationID}}
	cases := []struct {
		name, method, path string
		auth               func(*http.Request)
		body               any
		status             int
		code               string
	}{
		{"malformed JSON", "POST", "/v1/push", n.provider(), `{"audience":`, 400, "bad_json"},
		{"wrong type", "POST", "/v1/push", n.provider(), `{"audience":"all","message":1,"options":{"ttl":"1h"}}`, 400, "bad_json"},
		{"unknown field", "POST", "/v1/push", n.provider(), `{"audience":"all","message":1,"extra":1}`, 400, "bad_json"},
		{"unknown audience key", "POST", "/v1/push", n.provider(), `{"audience":{"users":["a"]},"message":1}`, 400, "bad_audience"},
		{"empty audience", "POST", "/v1/push", n.provider(), `{"audience":{},"message":1}`, 400, "empty_audience"},
		{"too many IDs", "POST", "/v1/push", n.provider(), map[string]any{"audience": map[string]any{"registration_id": ids1001}, "message": 1}, 400, "too_many_ids"},
		{"payload over 4 KiB", "POST", "/v1/push", n.provider(), map[string]any{"audience": "all", "message": strings.Repeat("x", 4100)}, 413, "payload_too_large"},
		{"a Web Push envelope from a provider", "POST", "/v1/push", n.provider(), map[string]any{"audience": "all", "message": map[string]any{"webpush": map[string]any{"subscription": "s", "label": "x"}}}, 400, "reserved_key"},
		{"body over the limit", "POST", "/v1/push", n.provider(), `{"audience":"all","message":"` + strings.Repeat("x", 5<<20) + `"}`, 413, "body_too_large"},
		{"bad TTL", "POST", "/v1/push", n.provider(), `{"audience":"all","message":1,"options":{"ttl":-1}}`, 400, "bad_ttl"},
		{"no content", "POST", "/v1/push", n.provider(), `{"audience":"all"}`, 400, "empty_message"},
		{"wrong media type", "POST", "/v1/push", func(r *http.Request) { n.provider()(r); r.Header.Set("Content-Type", "multipart/form-data") }, `{}`, 415, "unsupported_media_type"},
		{"missing credentials", "POST", "/v1/push", nil, map[string]any{"audience": "all", "message": 1}, 401, "unauthorized"},
		{"wrong secret", "POST", "/v1/push", func(r *http.Request) { r.SetBasicAuth(n.info.AppKey, "nope") }, map[string]any{"audience": "all", "message": 1}, 401, "unauthorized"},
		{"unknown app", "POST", "/v1/push", func(r *http.Request) { r.SetBasicAuth("ak_nope", "nope") }, map[string]any{"audience": "all", "message": 1}, 401, "unauthorized"},
		{"device secret as provider", "POST", "/v1/push", deviceAuth(dev), map[string]any{"audience": "all", "message": 1}, 401, "unauthorized"},
		{"wrong device secret", "GET", "/v1/inbox", func(r *http.Request) { r.SetBasicAuth(dev.RegistrationID, "nope") }, nil, 401, "unauthorized"},
		{"bad wait", "GET", "/v1/inbox?wait=600", deviceAuth(dev), nil, 400, "bad_parameter"},
		{"another app's device", "GET", "/v1/devices/" + dev.RegistrationID, second, nil, 404, "device_not_found"},
		{"push to another app's device", "POST", "/v1/push", second, map[string]any{"audience": to, "message": 1}, 404, "device_not_found"},
		{"unknown device", "GET", "/v1/devices/nope", n.provider(), nil, 404, "device_not_found"},
		{"unknown message", "GET", "/v1/messages/nope", n.provider(), nil, 404, "message_not_found"},
		{"admin without token", "POST", "/v1/apps", nil, map[string]string{"name": "x"}, 401, "unauthorized"},
		{"app exists", "POST", "/v1/apps", admin, map[string]string{"name": "second"}, 409, "app_exists"},
		{"register to unknown app", "POST", "/v1/devices", nil, map[string]any{"app_key": "ak_nope", "platform": "ios"}, 404, "app_not_found"},
		{"register bad platform", "POST", "/v1/devices", nil, map[string]any{"app_key": n.info.AppKey, "platform": "symbian"}, 400, "bad_platform"},
		{"bad tag", "PATCH", "/v1/devices/" + dev.RegistrationID, n.provider(), map[string]any{"tags": []string{""}}, 400, "bad_name"},
		{"batch too large", "POST", "/v1/push/batch", n.provider(), map[string]any{"pushes": make([]any, 1001)}, 400, "bad_batch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, code := n.call(c.method, c.path, c.auth, c.body, nil)
			if status != c.status || code != c.code {
				t.Errorf("%s %s = %d %q, want %d %q", c.method, c.path, status, code, c.status, c.code)
			}
		})
	}
	// Nothing of the above reached the device.
	if msgs := n.poll(dev, ""); len(msgs) != 0 {
		t.Errorf("rejected pushes were delivered: %v", ids(msgs))
	}
}

func TestDevicesAndAliases(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("alice", "a")
	var got struct {
		Alias string
		Tags  []string
	}
	n.call("PATCH", "/v1/devices/"+dev.RegistrationID, n.provider(), map[string]any{"alias": "carol", "add_tags": []string{"b"}}, &got)
	if got.Alias != "carol" || !slices.Equal(got.Tags, []string{"a", "b"}) {
		t.Errorf("patched device = %+v", got)
	}
	var alias struct {
		Devices []struct {
			RegistrationID string `json:"registration_id"`
		}
	}
	n.call("GET", "/v1/aliases/carol", n.provider(), nil, &alias)
	if len(alias.Devices) != 1 || alias.Devices[0].RegistrationID != dev.RegistrationID {
		t.Errorf("alias carol = %+v", alias)
	}
	if status, _ := n.call("DELETE", "/v1/devices/"+dev.RegistrationID, n.provider(), nil, nil); status != http.StatusNoContent {
		t.Errorf("delete = %d", status)
	}
	if status, code := n.call("GET", "/v1/inbox", deviceAuth(dev), nil, nil); status != 401 {
		t.Errorf("deleted device polled: %d %s", status, code)
	}
}

func TestRegistrationRateLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.RegisterRate, cfg.RegisterBurst = 0.001, 3
	n := startNode(t, cfg)
	body := map[string]any{"app_key": n.info.AppKey, "platform": "web"}
	for i := range 3 {
		if status, code := n.call("POST", "/v1/devices", nil, body, nil); status != http.StatusCreated {
			t.Fatalf("registration %d: %d %s", i, status, code)
		}
	}
	if status, code := n.call("POST", "/v1/devices", nil, body, nil); status != 429 || code != "rate_limited" {
		t.Errorf("registration over the limit = %d %s, want 429 rate_limited", status, code)
	}
	// The master secret proves an app server: bulk imports are not limited.
	for i := range 5 {
		if status, code := n.call("POST", "/v1/devices", n.provider(), body, nil); status != http.StatusCreated {
			t.Fatalf("registration %d with the master secret: %d %s", i, status, code)
		}
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dev := n.register("")
	id := n.push(map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "message": "kept"})
	bcast := n.push(map[string]any{"audience": "all", "message": "kept too"})
	first := n.info
	n.stop()

	n2 := startNode(t, cfg)
	n2.info.AppSecret = first.AppSecret
	if n2.info.AppKey != first.AppKey || n2.info.AdminToken != first.AdminToken || n2.info.AdminTokenNew {
		t.Errorf("restart changed the default app or admin token: %+v vs %+v", n2.info, first)
	}
	if got := ids(n2.poll(dev, "")); !slices.Equal(got, []string{id, bcast}) {
		t.Errorf("after restart, poll = %v, want %v", got, []string{id, bcast})
	}
}

// TestDeviceCORS: a page on another origin may register and poll (the
// preflight is answered), but provider calls get no CORS headers.
func TestDeviceCORS(t *testing.T) {
	n := startNode(t, testConfig(t))
	preflight := func(path, method string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", n.url+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", method)
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, c := range []struct{ path, method string }{{"/v1/devices", "POST"}, {"/v1/inbox", "GET"}, {"/v1/inbox/ack", "POST"}} {
		resp := preflight(c.path, c.method)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight %s %s: %d %v", c.method, c.path, resp.StatusCode, resp.Header)
		}
	}
	if resp := preflight("/v1/push", "POST"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("the provider API answered a cross-origin preflight: %v", resp.Header)
	}
	dev := n.register("")
	req, _ := http.NewRequest("GET", n.url+"/v1/inbox", nil)
	req.Header.Set("Origin", "https://app.example")
	deviceAuth(dev)(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("cross-origin poll: %d, Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}
