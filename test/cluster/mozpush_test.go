package cluster

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/heraldpush/herald/test/heraldtest"
)

// mozDevice speaks Mozilla's push protocol (Firefox's dom.push.serverURL)
// to /mozpush of a node.
type mozDevice struct {
	c      *websocket.Conn
	uaid   string
	frames chan map[string]any
	closed chan websocket.StatusCode
}

func connectMozPush(t *testing.T, c *cluster, node *heraldtest.Server, uaid string) *mozDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(node.URL, "http://", "ws://", 1) + "/mozpush?" + url.Values{"app_key": {c.appKey}}.Encode()
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"push-notification"}})
	if err != nil {
		t.Fatalf("mozpush dial: %v", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	hello := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]any{}}
	if uaid != "" {
		hello["uaid"] = uaid
	}
	if err := wsjson.Write(ctx, ws, hello); err != nil {
		t.Fatal(err)
	}
	var answer map[string]any
	if err := wsjson.Read(ctx, ws, &answer); err != nil || answer["messageType"] != "hello" {
		t.Fatalf("mozpush hello: %v %v", answer, err)
	}
	d := &mozDevice{c: ws, uaid: answer["uaid"].(string), frames: make(chan map[string]any, 64), closed: make(chan websocket.StatusCode, 1)}
	go func() {
		for {
			var f map[string]any
			if err := wsjson.Read(context.Background(), ws, &f); err != nil {
				d.closed <- websocket.CloseStatus(err)
				return
			}
			if f["messageType"] == "notification" {
				wsjson.Write(context.Background(), ws, map[string]any{"messageType": "ack",
					"updates": []map[string]any{{"channelID": f["channelID"], "version": f["version"], "code": 100}}})
			}
			d.frames <- f
		}
	}()
	return d
}

func (d *mozDevice) next(t *testing.T, kind string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-d.frames:
			if f["messageType"] == kind {
				return f
			}
		case <-timeout:
			t.Fatalf("mozpush: no %s within 10 s", kind)
		}
	}
}

// Firefox connected to node a gets a Web Push sent to its endpoint on node
// b; connecting again through node b closes the connection on node a with
// 4774 (one connection per UAID in the cluster).
func TestMozPushAcrossNodes(t *testing.T) {
	c := startCluster(t, 2, noRecheck)
	a, b := c.nodes[0], c.nodes[1]
	ff := connectMozPush(t, c, a, "")
	channel := "5477bfda-22db-45d4-9614-fee369630260"
	wsjson.Write(context.Background(), ff.c, map[string]any{"messageType": "register", "channelID": channel})
	reg := ff.next(t, "register")
	endpoint, _ := reg["pushEndpoint"].(string)
	u, err := url.Parse(endpoint)
	if err != nil || !strings.HasPrefix(u.Path, "/wpush/") {
		t.Fatalf("register answer %v", reg)
	}
	req, _ := http.NewRequest("POST", b.URL+u.Path, strings.NewReader("hello through b"))
	req.Header.Set("TTL", "60")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push to the endpoint on node b: %d", resp.StatusCode)
	}
	n := ff.next(t, "notification")
	if n["channelID"] != channel {
		t.Errorf("notification %v, want channel %s", n, channel)
	}

	connectMozPush(t, c, b, ff.uaid)
	select {
	case code := <-ff.closed:
		if code != 4774 {
			t.Errorf("the connection on node a closed with %d, want 4774", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection on node a stayed open when the UAID connected through node b")
	}
}
