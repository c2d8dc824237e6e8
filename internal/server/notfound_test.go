package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Unknown paths and wrong methods answer the JSON error shape; GET / says
// where to start, as JSON or, to a browser, as a page.
func TestMissesAnswerJSON(t *testing.T) {
	n := startNode(t, testConfig(t))
	if st, code := n.call("GET", "/no/such/route", nil, nil, nil); st != http.StatusNotFound || code != "not_found" {
		t.Errorf("an unknown path: %d %q, want 404 not_found", st, code)
	}
	req, _ := http.NewRequest("PUT", n.url+"/v1/push", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("PUT /v1/push: %d, Allow %q, %s; want 405 with Allow: POST in JSON", resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"))
	}
	if st, code := n.call("PUT", "/v1/push", nil, nil, nil); code != "method_not_allowed" {
		t.Errorf("PUT /v1/push: %d %q, want method_not_allowed", st, code)
	}
	var index struct {
		Links map[string]string `json:"links"`
	}
	if st, _ := n.call("GET", "/", nil, nil, &index); st != http.StatusOK || index.Links["demo"] != n.url+"/demo" || index.Links["console"] != n.url+"/console/" {
		t.Errorf("GET /: %d %v, want links to the demo and the console", st, index.Links)
	}
	req, _ = http.NewRequest("GET", n.url+"/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET / from a browser: %s, want a page", resp.Header.Get("Content-Type"))
	}
}

// A fan-out push says it fans out; an explicit audience that matches no
// device is refused the same way whatever it named, counting what it named.
func TestPushAnswersSayWhatHappened(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("alice", "news")
	var res struct {
		Targeted int  `json:"targeted"`
		Fanout   bool `json:"fanout"`
	}
	if st, _ := n.call("POST", "/v1/push", n.provider(), map[string]any{"audience": map[string]any{"tag": []string{"news"}}, "message": 1}, &res); st != http.StatusAccepted || !res.Fanout {
		t.Errorf("tag push: %d %+v, want 202 with fanout", st, res)
	}
	if st, _ := n.call("POST", "/v1/push", n.provider(), map[string]any{"audience": "all", "message": 1}, &res); st != http.StatusAccepted || !res.Fanout {
		t.Errorf("broadcast: %d %+v, want 202 with fanout", st, res)
	}
	res.Fanout = false
	if st, _ := n.call("POST", "/v1/push", n.provider(), map[string]any{"audience": map[string]any{"registration_id": []string{dev.RegistrationID}}, "message": 1}, &res); st != http.StatusAccepted || res.Fanout || res.Targeted != 1 {
		t.Errorf("direct push: %d %+v, want 202, targeted 1, no fanout", st, res)
	}
	for body, want := range map[string]string{
		`{"audience":{"alias":["nobody"]},"message":1}`:                        "matches the 1 alias named",
		`{"audience":{"registration_id":["x","y"],"alias":["z"]},"message":1}`: "matches the 2 registration IDs and 1 alias named",
		`{"audience":{"alias":["alice"]},"platform":"ios","message":1}`:        "no device of this app on ios matches the 1 alias named",
	} {
		req, _ := http.NewRequest("POST", n.url+"/v1/push", strings.NewReader(body))
		n.provider()(req)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(e.Error.Message, want) {
			t.Errorf("%s: %d %q, want 404 saying %q", body, resp.StatusCode, e.Error.Message, want)
		}
	}
}

// The registration answer lists every way the device can connect.
func TestRegistrationListsEveryTransport(t *testing.T) {
	n, addr := startMQTTNode(t)
	var reg struct {
		Connect struct {
			Inbox, Ack, WebSocket, Stream string
			MQTT                          struct {
				URL  string
				URLs map[string]string
			}
			MQTTWebSocket string `json:"mqtt_websocket"`
		}
	}
	if st, _ := n.call("POST", "/v1/devices", nil, map[string]any{"app_key": n.info.AppKey, "platform": "android"}, &reg); st != http.StatusCreated {
		t.Fatalf("register: %d", st)
	}
	c := reg.Connect
	ws := strings.Replace(n.url, "http://", "ws://", 1)
	for what, pair := range map[string][2]string{
		"inbox": {c.Inbox, n.url + "/v1/inbox"}, "ack": {c.Ack, n.url + "/v1/inbox/ack"},
		"websocket": {c.WebSocket, ws + "/v1/inbox/ws"}, "stream": {c.Stream, n.url + "/v1/inbox/stream"},
		"mqtt": {c.MQTT.URL, "mqtt://" + addr}, "mqtt tcp": {c.MQTT.URLs["tcp"], "mqtt://" + addr},
		"mqtt websocket": {c.MQTT.URLs["websocket"], ws + "/mqtt"}, "mqtt_websocket": {c.MQTTWebSocket, ws + "/mqtt"},
	} {
		if pair[0] != pair[1] {
			t.Errorf("connect %s = %q, want %q", what, pair[0], pair[1])
		}
	}
}

func TestIsAllInterfaces(t *testing.T) {
	for addr, want := range map[string]bool{
		":8080": true, "0.0.0.0:8080": true, "[::]:1883": true,
		"127.0.0.1:8080": false, "[::1]:8080": false, "10.0.0.5:8080": false, "push.example.com:443": false, "nonsense": false,
	} {
		if got := isAllInterfaces(addr); got != want {
			t.Errorf("isAllInterfaces(%q) = %v, want %v", addr, got, want)
		}
	}
}
