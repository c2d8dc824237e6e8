// Package client is Herald's Go device client: it registers a device,
// receives its pushes and acknowledges them, dropping duplicates (delivery
// is at least once) and reconnecting with jittered back-off.
//
// A device may be given several servers: the nodes of a cluster, any of
// which takes any call (a load balancer in front of them is a list of one).
// RegisterAny registers with the first that answers and keeps the list in
// Registration.Servers; the Device's calls (Poll, Ack, Listen, the Web Push
// subscriptions) then go to one server of the list and move on to the next
// when it cannot be reached or answers with a temporary error (a 5xx or a
// 429). ListenMQTTAny does the same over a list of MQTT URLs. A dead node
// costs one failed call or dial, and the next is tried at once; Listen and
// ListenMQTTAny back off only after every server of the list has failed.
// The duplicates that a move brings (a message delivered by the node that
// died but not acknowledged there) are dropped as any other: a Device
// remembers the IDs it handed over whichever server they came from.
//
// It imports nothing of Herald's internals: it speaks only the public wire
// protocol, so Herald's end-to-end tests pin that protocol through it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Message is one push as a device receives it.
type Message struct {
	ID           string          `json:"id"`
	Notification *Notification   `json:"notification,omitempty"`
	Message      json.RawMessage `json:"message,omitempty"` // pass-through data
	Priority     string          `json:"priority,omitempty"`
	CollapseID   string          `json:"collapse_id,omitempty"`
	SentAt       time.Time       `json:"sent_at"`
	ExpiresAt    time.Time       `json:"expires_at"`
}

// Notification is what the device's system shows.
type Notification struct {
	Title  string          `json:"title,omitempty"`
	Body   string          `json:"body,omitempty"`
	Badge  *int            `json:"badge,omitempty"`
	Sound  string          `json:"sound,omitempty"`
	Extras json.RawMessage `json:"extras,omitempty"`
}

// Error is an error answer from the server.
type Error struct {
	Status  int    // HTTP status
	Code    string `json:"code"` // stable code from Herald's error catalogue
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("herald: %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether retrying the same call later may succeed.
func (e *Error) Temporary() bool { return e.Status == 429 || e.Status >= 500 }

// Registration is what a device needs to receive: its ID and secret. Keep
// it: the secret is shown only once.
type Registration struct {
	// Server is the server's base URL; with a list (Servers), the first of
	// it, whichever answered the registration.
	Server string `json:"server"`
	// Servers, when not empty, is every base URL the device may use, in
	// the order it tries them; Server alone when empty. The nodes of one
	// cluster share their devices, so the list may change (a node added or
	// retired) without registering again.
	Servers        []string `json:"servers,omitempty"`
	RegistrationID string   `json:"registration_id"`
	DeviceSecret   string   `json:"device_secret"`
	AppKey         string   `json:"app_key"`
	Platform       string   `json:"platform"`
	Alias          string   `json:"alias,omitempty"`
	Tags           []string `json:"tags,omitempty"`
	// MQTTURL is where the device connects over MQTT (mqtt://host:port),
	// as the server announced at registration; empty when it has no MQTT
	// listener.
	MQTTURL string `json:"mqtt_url,omitempty"`
}

// RegisterRequest describes a new device.
type RegisterRequest struct {
	AppKey   string   `json:"app_key"`
	Platform string   `json:"platform"` // android, ios, web or other
	Alias    string   `json:"alias,omitempty"`
	Tags     []string `json:"tags,omitempty"`
}

// Register registers a device with the server at base URL server.
func Register(ctx context.Context, hc *http.Client, server string, req RegisterRequest) (*Registration, error) {
	return register(ctx, hc, strings.TrimRight(server, "/"), req)
}

// RegisterAny registers a device with the first of servers (base URLs of
// the nodes of one cluster) that answers, moving on from one that cannot be
// reached or answers with a temporary error, and returns the registration
// with the list in Servers. A node that took the registration and died
// before answering leaves a device that nobody knows of, which is harmless.
func RegisterAny(ctx context.Context, hc *http.Client, servers []string, req RegisterRequest) (*Registration, error) {
	list := trimServers(servers)
	if len(list) == 0 {
		return nil, errors.New("client: RegisterAny needs at least one server")
	}
	var err error
	for _, s := range list {
		var reg *Registration
		if reg, err = register(ctx, hc, s, req); err == nil {
			reg.Server, reg.Servers = list[0], list
			return reg, nil
		}
		if ctx.Err() != nil || !temporary(err) {
			break
		}
	}
	return nil, err
}

func trimServers(servers []string) []string {
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if s = strings.TrimRight(strings.TrimSpace(s), "/"); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func register(ctx context.Context, hc *http.Client, server string, req RegisterRequest) (*Registration, error) {
	var answer struct {
		Registration
		Connect struct {
			MQTT *struct {
				URL string `json:"url"`
			} `json:"mqtt"`
		} `json:"connect"`
	}
	if err := call(ctx, hc, "POST", server+"/v1/devices", nil, req, &answer); err != nil {
		return nil, err
	}
	reg := answer.Registration
	reg.Server = server
	if answer.Connect.MQTT != nil {
		reg.MQTTURL = answer.Connect.MQTT.URL
	}
	return &reg, nil
}

// Device receives pushes for one registration.
type Device struct {
	reg     Registration
	http    *http.Client
	seen    *recent
	servers []string     // base URLs, never empty; immutable
	cur     atomic.Int32 // the index in servers of the one calls go to
}

// NewDevice returns a device for reg, which calls reg.Servers (starting
// with the first) or reg.Server. hc may be nil for a default client.
func NewDevice(reg Registration, hc *http.Client) *Device {
	if hc == nil {
		hc = &http.Client{}
	}
	servers := trimServers(reg.Servers)
	if len(servers) == 0 {
		servers = []string{strings.TrimRight(reg.Server, "/")}
	}
	return &Device{reg: reg, http: hc, seen: newRecent(4096), servers: servers}
}

// do makes a device call to the current server and, while it fails with an
// error that another node may not give (temporary), to the next ones in
// turn, each once: a call fails only when every server did, and Listen's
// back-off is between such rounds. The server that answers becomes the
// current one. A call that reached a node which died before answering is
// made again on the next; Herald's device calls are idempotent but for
// creating a Web Push subscription, where a second one is harmless (its
// endpoint is never handed out).
func (d *Device) do(ctx context.Context, method, path string, in, out any) error {
	n := int32(len(d.servers))
	i := d.cur.Load()
	var err error
	for range n {
		if err = call(ctx, d.http, method, d.servers[i]+path, d.auth, in, out); err == nil {
			d.cur.Store(i)
			return nil
		}
		if ctx.Err() != nil || !temporary(err) {
			return err
		}
		// Only the first of concurrent callers that saw i fail moves on,
		// so that two failures do not skip a server.
		next := (i + 1) % n
		d.cur.CompareAndSwap(i, next)
		i = next
	}
	return err
}

// temporary reports whether a call that failed with err may succeed on
// another server, or later: anything but an answer that says otherwise
// (401, 404, 400...). A network error, a cut-off answer and one that is not
// Herald's (a proxy's page) all count.
func temporary(err error) bool {
	if e := (*Error)(nil); errors.As(err, &e) {
		return e.Temporary()
	}
	return true
}

// Poll returns waiting messages, waiting up to wait (at most 60 s) for one
// to arrive. It does not acknowledge them and does not drop duplicates.
func (d *Device) Poll(ctx context.Context, wait time.Duration) ([]Message, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", fmt.Sprintf("%g", wait.Seconds()))
	}
	path := "/v1/inbox"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Messages []Message `json:"messages"`
	}
	if err := d.do(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// MarkSeen records that the app already has the messages with these IDs:
// Listen and ListenMQTT then acknowledge them without calling the handler.
// Herald relays a push to a device's APNs or FCM token with the same id (in
// the payload's "id", FCM's data.id), so an app that handles a vendor push
// calls MarkSeen with its id, and the copy its own connection brings is
// dropped.
func (d *Device) MarkSeen(ids ...string) {
	for _, id := range ids {
		d.seen.add(id)
	}
}

// Ack acknowledges messages: they leave the inbox for good.
func (d *Device) Ack(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	return d.do(ctx, "POST", "/v1/inbox/ack", map[string][]string{"ids": ids}, nil)
}

func (d *Device) auth(r *http.Request) { r.SetBasicAuth(d.reg.RegistrationID, d.reg.DeviceSecret) }

// ErrStop, returned by a Listen handler, ends Listen after the message is
// acknowledged.
var ErrStop = errors.New("client: stop listening")

// Listen long-polls until ctx ends, calling handle once for each new
// message and acknowledging it when handle returns nil. A message that
// arrives again (at-least-once delivery) is acknowledged without calling
// handle twice. A failure moves on to the next of the device's servers at
// once (Poll tries each); once all have failed, Listen retries with
// jittered exponential back-off. An authentication failure ends Listen.
func (d *Device) Listen(ctx context.Context, handle func(Message) error) error {
	backoff := newBackoff(250*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		msgs, err := d.Poll(ctx, 55*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !temporary(err) {
				return err
			}
			if !sleep(ctx, backoff.next()) {
				break
			}
			continue
		}
		backoff.reset()
		var acks []string
		stop := false
		for _, m := range msgs {
			if !d.seen.has(m.ID) {
				if err := handle(m); errors.Is(err, ErrStop) {
					stop = true
				} else if err != nil {
					continue // not acknowledged: it comes again
				}
				d.seen.add(m.ID)
			}
			acks = append(acks, m.ID)
			if stop {
				break
			}
		}
		err = d.Ack(ctx, acks...)
		if stop {
			return err
		}
		if err != nil && ctx.Err() == nil {
			// The acks are lost, so these come again and are dropped as
			// duplicates then; back off as for any failure.
			sleep(ctx, backoff.next())
		}
	}
	return ctx.Err()
}

// call sends one JSON request and decodes the answer into out.
func call(ctx context.Context, hc *http.Client, method, u string, auth func(*http.Request), in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var env struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(raw, &env) == nil && env.Error != nil {
			env.Error.Status = resp.StatusCode
			return env.Error
		}
		return &Error{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(raw))}
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// backoff is exponential back-off with full jitter, so that devices cut
// off together do not come back together.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max, cur: base} }

func (b *backoff) next() time.Duration {
	d := time.Duration(rand.Int64N(int64(b.cur)) + 1)
	b.cur = min(b.cur*2, b.max)
	return d
}

func (b *backoff) reset() { b.cur = b.base }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// recent remembers the last n message IDs, to drop duplicates. Listen
// and MarkSeen may use it from different goroutines.
type recent struct {
	mu   sync.Mutex
	ring []string
	next int
	set  map[string]struct{} // guarded by mu, as ring and next
}

func newRecent(n int) *recent {
	return &recent{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

func (r *recent) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}

func (r *recent) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return
	}
	delete(r.set, r.ring[r.next])
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
