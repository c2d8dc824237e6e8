// Package client is Herald's Go device client: it registers a device,
// receives its pushes and acknowledges them, dropping duplicates (delivery
// is at least once) and reconnecting with jittered back-off.
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
	Server         string   `json:"server"`
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
	var answer struct {
		Registration
		Connect struct {
			MQTT *struct {
				URL string `json:"url"`
			} `json:"mqtt"`
		} `json:"connect"`
	}
	if err := call(ctx, hc, "POST", strings.TrimRight(server, "/")+"/v1/devices", nil, req, &answer); err != nil {
		return nil, err
	}
	reg := answer.Registration
	reg.Server = strings.TrimRight(server, "/")
	if answer.Connect.MQTT != nil {
		reg.MQTTURL = answer.Connect.MQTT.URL
	}
	return &reg, nil
}

// Device receives pushes for one registration.
type Device struct {
	reg  Registration
	http *http.Client
	seen *recent
}

// NewDevice returns a device for reg. hc may be nil for a default client.
func NewDevice(reg Registration, hc *http.Client) *Device {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Device{reg: reg, http: hc, seen: newRecent(4096)}
}

// Poll returns waiting messages, waiting up to wait (at most 60 s) for one
// to arrive. It does not acknowledge them and does not drop duplicates.
func (d *Device) Poll(ctx context.Context, wait time.Duration) ([]Message, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", fmt.Sprintf("%g", wait.Seconds()))
	}
	u := d.reg.Server + "/v1/inbox"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var out struct {
		Messages []Message `json:"messages"`
	}
	if err := call(ctx, d.http, "GET", u, d.auth, nil, &out); err != nil {
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
	return call(ctx, d.http, "POST", d.reg.Server+"/v1/inbox/ack", d.auth, map[string][]string{"ids": ids}, nil)
}

func (d *Device) auth(r *http.Request) { r.SetBasicAuth(d.reg.RegistrationID, d.reg.DeviceSecret) }

// ErrStop, returned by a Listen handler, ends Listen after the message is
// acknowledged.
var ErrStop = errors.New("client: stop listening")

// Listen long-polls until ctx ends, calling handle once for each new
// message and acknowledging it when handle returns nil. A message that
// arrives again (at-least-once delivery) is acknowledged without calling
// handle twice. Transient failures are retried with jittered exponential
// back-off; an authentication failure ends Listen.
func (d *Device) Listen(ctx context.Context, handle func(Message) error) error {
	backoff := newBackoff(250*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		msgs, err := d.Poll(ctx, 55*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if e := (*Error)(nil); errors.As(err, &e) && !e.Temporary() {
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
