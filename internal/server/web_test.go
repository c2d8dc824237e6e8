package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/client"
)

// The WebSocket and SSE transports against a real node, through their wire
// protocols only (docs/protocol.md).

// wsFrame is any frame the server sends. "message" is an object in a
// message frame and a string in an error frame.
type wsFrame struct {
	Type         string          `json:"type"`
	Raw          json.RawMessage `json:"message"`
	Message      client.Message  `json:"-"`
	Redelivery   bool            `json:"redelivery"`
	Code         string          `json:"code"`
	PingInterval int             `json:"ping_interval"`
	Window       int             `json:"window"`
}

type wsConn struct {
	t *testing.T
	c *websocket.Conn
}

// dialWS connects dev with the query-parameter credentials, or HTTP Basic
// when basic is set, and reads the hello.
func (n *node) dialWS(dev *client.Registration, basic bool) *wsConn {
	n.t.Helper()
	c, resp, err := n.dialWSRaw(dev.RegistrationID, dev.DeviceSecret, basic)
	if err != nil {
		n.t.Fatalf("dial: %v (%v)", err, resp)
	}
	w := &wsConn{t: n.t.(*testing.T), c: c}
	n.t.Cleanup(func() { c.CloseNow() })
	if f := w.read(); f.Type != "hello" || f.Window != 64 || f.PingInterval != 30 {
		n.t.Fatalf("first frame %+v, want hello with window 64 and ping_interval 30", f)
	}
	return w
}

func (n *node) dialWSRaw(id, secret string, basic bool) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := strings.Replace(n.url, "http://", "ws://", 1) + "/v1/inbox/ws"
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
	if basic {
		req, _ := http.NewRequest("GET", u, nil)
		req.SetBasicAuth(id, secret)
		opts.HTTPHeader.Set("Authorization", req.Header.Get("Authorization"))
	} else if id != "" {
		u += "?" + url.Values{"registration_id": {id}, "device_secret": {secret}}.Encode()
	}
	return websocket.Dial(ctx, u, opts)
}

func (w *wsConn) read() wsFrame {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		w.t.Fatalf("a %v frame; the server sends only text", typ)
	}
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		w.t.Fatalf("frame %q: %v", b, err)
	}
	if f.Type == "message" {
		if err := json.Unmarshal(f.Raw, &f.Message); err != nil {
			w.t.Fatalf("message frame %q: %v", b, err)
		}
	}
	return f
}

func (w *wsConn) send(s string) {
	w.t.Helper()
	if err := w.c.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// messages reads n message frames.
func (w *wsConn) messages(n int) (ids []string, redelivered []bool) {
	w.t.Helper()
	for range n {
		f := w.read()
		if f.Type != "message" {
			w.t.Fatalf("frame %+v, want a message", f)
		}
		ids, redelivered = append(ids, f.Message.ID), append(redelivered, f.Redelivery)
	}
	return ids, redelivered
}

// quiet checks that nothing but the pong comes back to a ping: frames are
// written in order, so anything sent before the pong would show.
func (w *wsConn) quiet() {
	w.t.Helper()
	w.send(`{"type":"ping"}`)
	if f := w.read(); f.Type != "pong" {
		w.t.Fatalf("frame %+v, want only the pong", f)
	}
}

// closeCode reads until the server closes and returns its close code.
func (w *wsConn) closeCode() websocket.StatusCode {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := w.c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func to(dev *client.Registration, title string) map[string]any {
	return map[string]any{
		"audience":     map[string]any{"registration_id": []string{dev.RegistrationID}},
		"notification": map[string]string{"title": title},
	}
}

func TestWebSocketDrainLiveAckAndRedelivery(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	waiting := []string{n.push(to(dev, "one")), n.push(to(dev, "two"))}

	w := n.dialWS(dev, false)
	if got, _ := w.messages(2); !slices.Equal(got, waiting) {
		t.Fatalf("drained %v, want %v in order", got, waiting)
	}
	live := n.push(to(dev, "three"))
	if got, _ := w.messages(1); got[0] != live {
		t.Fatalf("live push: got %v, want %s", got, live)
	}
	w.send(`{"type":"ack","ids":["` + waiting[0] + `","` + live + `"]}`)
	w.quiet()
	w.c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 0 })

	// Only the unacknowledged one comes again, marked as a redelivery, and
	// over HTTP Basic this time.
	w = n.dialWS(dev, true)
	got, redelivered := w.messages(1)
	if got[0] != waiting[1] || !redelivered[0] {
		t.Fatalf("reconnect sent %v (redelivery %v), want %s as a redelivery", got, redelivered, waiting[1])
	}
	w.quiet()
	w.send(`{"type":"ack","ids":["` + waiting[1] + `"]}`)
	w.quiet()
	if left := n.poll(dev, ""); len(left) != 0 {
		t.Fatalf("after WebSocket acks the inbox still has %v", ids(left))
	}
}

func TestWebSocketMalformedFramesKeepTheConnection(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	w := n.dialWS(dev, false)
	for frame, code := range map[string]string{
		`not json`:                        "bad_frame",
		`{"type":"ack"}`:                  "bad_frame",
		`{"type":"ack","ids":[""]}`:       "bad_frame",
		`{"type":"ping","ids":["x"]}`:     "bad_frame",
		`{"type":"ping","extra":1}`:       "bad_frame",
		`{"type":"ping"} {"type":"ping"}`: "bad_frame",
		`{"type":"subscribe"}`:            "unknown_type",
		`[]`:                              "bad_frame",
	} {
		w.send(frame)
		if f := w.read(); f.Type != "error" || f.Code != code {
			t.Errorf("frame %s: answer %+v, want an error %s", frame, f, code)
		}
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = "m_x"
	}
	b, _ := json.Marshal(map[string]any{"type": "ack", "ids": many})
	w.send(string(b))
	if f := w.read(); f.Code != "too_many_ids" {
		t.Errorf("an ack of 1001 IDs: %+v, want too_many_ids", f)
	}
	w.c.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3})
	if f := w.read(); f.Code != "bad_frame" {
		t.Errorf("a binary frame: %+v, want bad_frame", f)
	}
	// Still attached: a push arrives.
	id := n.push(to(dev, "still here"))
	if got, _ := w.messages(1); got[0] != id {
		t.Fatalf("after bad frames got %v, want %s", got, id)
	}
	// A frame over the cap ends the connection with 1009; the client may
	// reconnect. The server closes once it has read past the cap, and may
	// do so while the client is still writing the rest of the frame: the
	// client's write then fails with a reset, which is the server's right.
	// The close frame went out before the reset and is still read.
	_ = w.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping","pad":"`+strings.Repeat("x", 70<<10)+`"}`))
	if code := w.closeCode(); code != websocket.StatusMessageTooBig {
		t.Fatalf("an oversized frame: close %d, want 1009", code)
	}
}

func TestWebSocketCloseCodes(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")

	for name, creds := range map[string][2]string{
		"wrong secret": {dev.RegistrationID, "nope"},
		"unknown id":   {"r_unknown", dev.DeviceSecret},
		"none":         {"", ""},
	} {
		c, _, err := n.dialWSRaw(creds[0], creds[1], false)
		if err != nil {
			t.Fatalf("%s: the handshake failed (%v); it should succeed and close with 4001", name, err)
		}
		w := &wsConn{t: t, c: c}
		if code := w.closeCode(); code != 4001 {
			t.Errorf("%s: close %d, want 4001", name, code)
		}
	}
	// A plain HTTP request gets the JSON error.
	if status, code := n.call("GET", "/v1/inbox/ws", nil, nil, nil); status != 401 || code != "unauthorized" {
		t.Errorf("plain GET without credentials: %d %s, want 401 unauthorized", status, code)
	}

	w := n.dialWS(dev, false)
	if status, _ := n.call("DELETE", "/v1/devices/"+dev.RegistrationID, n.provider(), nil, nil); status != 204 && status != 200 {
		t.Fatalf("delete device: %d", status)
	}
	if code := w.closeCode(); code != 4004 {
		t.Errorf("device deleted: close %d, want 4004", code)
	}

	other := n.register("")
	w = n.dialWS(other, false)
	n.stop()
	if code := w.closeCode(); code != websocket.StatusGoingAway {
		t.Errorf("shutdown: close %d, want 1001", code)
	}
}

func TestWebSocketReplacesOldestPastTheCap(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	var conns []*wsConn
	for range 9 {
		conns = append(conns, n.dialWS(dev, false))
	}
	if code := conns[0].closeCode(); code != 4008 {
		t.Fatalf("the oldest of 9 connections: close %d, want 4008", code)
	}
	// Every other connection gets the push; an ack on one is for the device.
	id := n.push(to(dev, "to all tabs"))
	for _, w := range conns[1:] {
		if got, _ := w.messages(1); got[0] != id {
			t.Fatalf("got %v, want %s", got, id)
		}
	}
	conns[1].send(`{"type":"ack","ids":["` + id + `"]}`)
	conns[1].quiet()
	if left := n.poll(dev, ""); len(left) != 0 {
		t.Fatalf("inbox after the ack: %v", ids(left))
	}
}

// sseEvent is one parsed event.
type sseEvent struct {
	ID, Event, Data string
}

type sseConn struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

// openSSE opens dev's event stream with the query credentials, sending
// lastID as Last-Event-ID when set, and reads the hello.
func (n *node) openSSE(dev *client.Registration, lastID string) *sseConn {
	n.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	q := url.Values{"registration_id": {dev.RegistrationID}, "device_secret": {dev.DeviceSecret}}
	req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/v1/inbox/stream?"+q.Encode(), nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		n.t.Fatalf("GET stream: %v", err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		n.t.Fatalf("GET stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseConn{t: n.t.(*testing.T), resp: resp, events: make(chan sseEvent, 256), cancel: cancel}
	n.t.Cleanup(s.close)
	go s.parse()
	if e := s.next(); e.Event != "hello" {
		n.t.Fatalf("first event %+v, want hello", e)
	}
	return s
}

func (s *sseConn) close() { s.cancel(); s.resp.Body.Close() }

// parse reads events per the SSE rules (fields, blank line ends an event,
// comments ignored) until the stream ends, then closes events.
func (s *sseConn) parse() {
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	var e sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				e.Data = strings.Join(data, "\n")
				if e.Event == "" {
					e.Event = "message"
				}
				s.events <- e
			}
			e, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				e.ID = value
			case "event":
				e.Event = value
			case "data":
				data = append(data, value)
			}
		}
	}
}

func (s *sseConn) next() sseEvent {
	s.t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			s.t.Fatal("the stream ended")
		}
		return e
	case <-time.After(5 * time.Second):
		s.t.Fatal("no event within 5 s")
	}
	return sseEvent{}
}

// messages reads n message events and checks that each id field is the
// message's ID.
func (s *sseConn) messages(n int) []string {
	s.t.Helper()
	var out []string
	for range n {
		e := s.next()
		var m client.Message
		if e.Event != "message" || json.Unmarshal([]byte(e.Data), &m) != nil || m.ID != e.ID {
			s.t.Fatalf("event %+v, want a message whose id field is its ID", e)
		}
		out = append(out, m.ID)
	}
	return out
}

// none checks that no event arrives for a moment.
func (s *sseConn) none() {
	s.t.Helper()
	select {
	case e := <-s.events:
		s.t.Fatalf("unexpected event %+v", e)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestSSEDrainLiveAndAckRefillsTheWindow(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	var waiting []string
	for i := range 65 {
		waiting = append(waiting, n.push(to(dev, "n"+string(rune('a'+i%26)))))
	}
	s := n.openSSE(dev, "")
	if got := s.messages(64); !slices.Equal(got, waiting[:64]) {
		t.Fatalf("drained %v, want the first 64 waiting (the window)", got)
	}
	s.none()
	// The ack arrives by POST, not on the stream, and still opens the
	// window.
	if acked := n.ack(dev, waiting[0]); acked != 1 {
		t.Fatalf("acked %d", acked)
	}
	if got := s.messages(1); got[0] != waiting[64] {
		t.Fatalf("after an ack got %v, want %s", got, waiting[64])
	}
	n.ack(dev, waiting[1:]...)
	live := n.push(to(dev, "live"))
	if got := s.messages(1); got[0] != live {
		t.Fatalf("live push: got %v, want %s", got, live)
	}
}

func TestSSELastEventIDResumes(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	sent := []string{n.push(to(dev, "a")), n.push(to(dev, "b")), n.push(to(dev, "c"))}
	s := n.openSSE(dev, "")
	s.messages(3)
	s.close()
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 0 })

	// The client has everything up to b: only c is sent again, and new
	// pushes follow.
	s = n.openSSE(dev, sent[1])
	if got := s.messages(1); got[0] != sent[2] {
		t.Fatalf("resume after %s: got %v, want only %s", sent[1], got, sent[2])
	}
	live := n.push(to(dev, "d"))
	if got := s.messages(1); got[0] != live {
		t.Fatalf("got %v, want %s", got, live)
	}
	s.close()
	waitFor(t, 5*time.Second, func() bool { return n.sessions() == 0 })

	// Nothing was acknowledged: a fresh stream sends all again. A resume
	// point that no longer waits (acked) says nothing of the rest: all that
	// waits is sent.
	n.ack(dev, sent[0])
	s = n.openSSE(dev, sent[0])
	if got := s.messages(3); !slices.Equal(got, []string{sent[1], sent[2], live}) {
		t.Fatalf("resume after an acked ID: got %v, want all waiting", got)
	}
}

func TestSSEAuthAndClose(t *testing.T) {
	n := startNode(t, testConfig(t))
	dev := n.register("")
	if status, code := n.call("GET", "/v1/inbox/stream?registration_id="+dev.RegistrationID+"&device_secret=nope", nil, nil, nil); status != 401 || code != "unauthorized" {
		t.Errorf("wrong secret: %d %s, want 401 unauthorized", status, code)
	}
	s := n.openSSE(dev, "")
	n.call("DELETE", "/v1/devices/"+dev.RegistrationID, n.provider(), nil, nil)
	if e := s.next(); e.Event != "close" || e.Data != `{"code":"device_deleted","reconnect":false}` {
		t.Fatalf("device deleted: %+v", e)
	}

	other := n.register("")
	s = n.openSSE(other, "")
	n.stop()
	if e := s.next(); e.Event != "close" || e.Data != `{"code":"going_away","reconnect":true}` {
		t.Fatalf("shutdown: %+v", e)
	}
	if _, ok := <-s.events; ok {
		t.Fatal("the stream goes on after its close event")
	}
}

func TestWebAssets(t *testing.T) {
	n := startNode(t, testConfig(t))
	for path, want := range map[string]string{
		"/client.js": "export function connect(",
		"/demo":      `<meta name="herald-app-key" content="` + n.info.AppKey + `">`,
	} {
		resp, err := http.Get(n.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
}
