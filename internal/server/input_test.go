package server

import (
	"encoding/json"
	"net/http"
	"testing"
)

// Issue 7: a key named twice in one object was resolved by encoding/json to
// the last one, so a unicast with a second "audience" became a broadcast to
// every device of the app. Every decoder of outside JSON refuses it now.
func TestDuplicateKeysRefused(t *testing.T) {
	n := startNode(t, testConfig(t))
	target, bystander := n.register("target"), n.register("bystander")
	for _, body := range []string{
		`{"audience":{"registration_id":["nobody"]},"audience":"all","message":{"x":1}}`,
		`{"audience":{"registration_id":["nobody"]},"Audience":"all","message":{"x":1}}`,
		`{"audience":{"registration_id":["` + target.RegistrationID + `"],"Registration_ID":["nobody"]},"message":{"x":1}}`,
		`{"audience":{"alias":["target"]},"message":{"x":1},"\u006Dessage":{"x":2}}`,
	} {
		if status, code := n.call("POST", "/v1/push", n.provider(), body, nil); status != http.StatusBadRequest || code != "duplicate_key" {
			t.Errorf("push %s: %d %s, want 400 duplicate_key", body, status, code)
		}
	}
	// In a batch, each push is refused on its own.
	var batch struct {
		Accepted int `json:"accepted"`
		Results  []struct {
			MsgID string `json:"msg_id"`
			Error *struct {
				Code string `json:"code"`
			} `json:"error"`
		} `json:"results"`
	}
	body := `{"pushes":[{"audience":{"alias":["target"]},"audience":"all","message":1},{"audience":{"alias":["target"]},"message":2}]}`
	if status, code := n.call("POST", "/v1/push/batch", n.provider(), body, &batch); status != http.StatusAccepted {
		t.Fatalf("batch: %d %s", status, code)
	}
	if batch.Accepted != 1 || batch.Results[0].Error == nil || batch.Results[0].Error.Code != "duplicate_key" || batch.Results[1].MsgID == "" {
		t.Errorf("batch results %+v: want the first refused as duplicate_key and the second accepted", batch)
	}
	if status, code := n.call("POST", "/v1/push/batch", n.provider(), `{"pushes":[],"pushes":[{"audience":"all","message":1}]}`, nil); status != http.StatusBadRequest || code != "duplicate_key" {
		t.Errorf("batch with pushes twice: %d %s", status, code)
	}
	if msgs := n.poll(bystander, ""); len(msgs) != 0 {
		t.Errorf("the bystander received %d messages: a refused push reached it", len(msgs))
	}
	if msgs := n.poll(target, ""); len(msgs) != 1 || string(msgs[0].Message) != "2" {
		raw, _ := json.Marshal(msgs)
		t.Errorf("the target has %s, want only the batch's accepted push", raw)
	}

	// The other decoders: registration, device PATCH, ack.
	for _, c := range []struct {
		method, path string
		auth         func(*http.Request)
		body         string
	}{
		{"POST", "/v1/devices", nil, `{"app_key":"` + n.info.AppKey + `","platform":"android","platform":"ios"}`},
		{"PATCH", "/v1/devices/" + target.RegistrationID, n.provider(), `{"alias":"a","Alias":"b"}`},
		{"POST", "/v1/inbox/ack", deviceAuth(target), `{"ids":["m_1"],"ids":["m_2"]}`},
	} {
		if status, code := n.call(c.method, c.path, c.auth, c.body, nil); status != http.StatusBadRequest || code != "duplicate_key" {
			t.Errorf("%s %s %s: %d %s, want 400 duplicate_key", c.method, c.path, c.body, status, code)
		}
	}
}
