// Package sse is the Server-Sent Events device transport: GET
// /v1/inbox/stream holds a text/event-stream response open and writes each
// message as an event as it arrives (docs/protocol.md). SSE carries nothing
// from the client, so a device acknowledges with POST /v1/inbox/ack, which
// reaches this connection's delivery.Stream through the core and refills its
// window: there is no polling timer.
package sse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
)

// Inbox is what the transport needs of delivery.
type Inbox interface {
	Attach(ctx context.Context, d *push.Device, send delivery.Sender, window int) (*delivery.Stream, error)
	Pending(ctx context.Context, d *push.Device, limit int) ([]push.Message, error)
}

// Errors a stream can be closed with.
var (
	// ErrReplaced means the device opened more streams than the gateway
	// allows, and this, its oldest, made room.
	ErrReplaced = errors.New("sse: replaced by a newer stream of the device")
	// errSlow means the client did not read what was sent to it.
	errSlow = errors.New("sse: the client does not read its events")
)

// Options configure the transport. Zero values take the defaults.
type Options struct {
	Window       int           // unacknowledged messages in flight per stream; 64
	Heartbeat    time.Duration // silence after which a comment line is sent; 25 s
	Retry        time.Duration // the reconnection delay suggested to EventSource; 2 s
	WriteTimeout time.Duration // one write to the socket; 10 s
	MaxPerDevice int           // streams of one device at once; the oldest is closed past it; 8
	// ResumeScan is how many waiting messages are searched for the one
	// Last-Event-ID names; 1000.
	ResumeScan int
	Log        *slog.Logger
}

func (o *Options) defaults() {
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxPerDevice <= 0 {
		o.MaxPerDevice = 8
	}
	if o.ResumeScan <= 0 {
		o.ResumeScan = 1000
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Gateway serves GET /v1/inbox/stream.
type Gateway struct {
	reg   *registry.Registry // never nil
	inbox Inbox              // never nil
	opts  Options

	mu sync.Mutex
	// byDevice holds each device's open streams, oldest first, to enforce
	// MaxPerDevice; guarded by mu.
	byDevice map[string][]*stream
}

// New returns the SSE transport.
func New(reg *registry.Registry, inbox Inbox, o Options) *Gateway {
	o.defaults()
	return &Gateway{reg: reg, inbox: inbox, opts: o, byDevice: make(map[string][]*stream)}
}

// Register adds the route to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("GET /v1/inbox/stream", apierr.Handle(g.opts.Log, g.serve))
}

// Credentials returns the device credentials of r: HTTP Basic
// registration_id:device_secret, or the query parameters registration_id
// and device_secret, since EventSource cannot set headers.
func Credentials(r *http.Request) (id, secret string, ok bool) {
	if id, secret, ok = r.BasicAuth(); ok {
		return id, secret, true
	}
	q := r.URL.Query()
	id, secret = q.Get("registration_id"), q.Get("device_secret")
	return id, secret, id != "" && secret != ""
}

func (g *Gateway) auth(r *http.Request) (*push.Device, error) {
	id, secret, ok := Credentials(r)
	if !ok {
		return nil, apierr.Unauthorized.With("use HTTP Basic or the query parameters registration_id and device_secret")
	}
	d, err := g.reg.AuthDevice(r.Context(), id, secret)
	if errors.Is(err, registry.ErrUnauthorized) {
		return nil, apierr.Unauthorized
	}
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// lastEventID is the resume point: the Last-Event-ID header EventSource
// sends when it reconnects by itself, or the last_event_id query parameter
// a client that opens a new EventSource sets.
func lastEventID(r *http.Request) string {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		return id
	}
	return r.URL.Query().Get("last_event_id")
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) error {
	d, err := g.auth(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	s := &stream{gw: g, w: w, rc: http.NewResponseController(w), dev: d, wake: make(chan struct{}, 1)}
	if id := lastEventID(r); id != "" {
		// The client holds every message up to and including id, in inbox
		// order, from an earlier stream: those are not sent again here. If
		// id no longer waits (acknowledged, expired), its place is unknown
		// and everything waiting is sent; the client drops duplicates.
		waiting, err := g.inbox.Pending(ctx, d, g.opts.ResumeScan)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(waiting, func(m push.Message) bool { return m.ID == id }); i >= 0 {
			s.resumeSeq = waiting[i].Seq
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise hold events back
	// The credentials are in the URL, never in cookies, so a page of any
	// origin may read its own device's stream.
	h.Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(http.StatusOK)
	hello, _ := json.Marshal(struct {
		Heartbeat int `json:"heartbeat"`
		Window    int `json:"window"`
	}{int(g.opts.Heartbeat / time.Second), g.opts.Window})
	s.enqueue([]byte("retry: " + strconv.FormatInt(g.opts.Retry.Milliseconds(), 10) + "\nevent: hello\ndata: " + string(hello) + "\n\n"))

	for _, old := range g.track(s) {
		old.Close(ErrReplaced)
	}
	defer g.untrack(s)
	st, err := g.inbox.Attach(ctx, d, s, g.opts.Window)
	if err != nil {
		g.opts.Log.Error("attaching an SSE device failed", "device", d.ID, "err", err)
		s.Close(errAttach)
		s.run(ctx)
		return nil
	}
	defer st.Detach()
	s.run(ctx)
	return nil
}

var errAttach = errors.New("sse: attaching the device failed")

func (g *Gateway) track(s *stream) []*stream {
	g.mu.Lock()
	defer g.mu.Unlock()
	list := append(g.byDevice[s.dev.ID], s)
	var evicted []*stream
	if n := len(list) - g.opts.MaxPerDevice; n > 0 {
		evicted = slices.Clone(list[:n])
		list = slices.Delete(list, 0, n)
	}
	g.byDevice[s.dev.ID] = list
	return evicted
}

func (g *Gateway) untrack(s *stream) {
	g.mu.Lock()
	defer g.mu.Unlock()
	list := slices.DeleteFunc(g.byDevice[s.dev.ID], func(o *stream) bool { return o == s })
	if len(list) == 0 {
		delete(g.byDevice, s.dev.ID)
	} else {
		g.byDevice[s.dev.ID] = list
	}
}

// stream is one device's event stream. It is the delivery.Sender of its
// delivery.Stream; the request's goroutine is its only writer.
type stream struct {
	gw  *Gateway
	w   http.ResponseWriter
	rc  *http.ResponseController
	dev *push.Device // immutable
	// resumeSeq: messages at or below it in inbox order are held by the
	// client already (Last-Event-ID); immutable once the stream attaches.
	resumeSeq uint64
	wake      chan struct{} // capacity 1: queue or closing changed

	mu      sync.Mutex
	queue   [][]byte // encoded events, in order; guarded by mu
	closing bool     // guarded by mu
	reason  error    // why it closes; guarded by mu
}

// Send implements delivery.Sender.
func (s *stream) Send(m *push.Message, redelivery bool) error {
	if m.Seq != 0 && m.Seq <= s.resumeSeq {
		// The client has it (Last-Event-ID): it counts as in flight,
		// waiting for the ack the client owes, but is not written again.
		return nil
	}
	data, err := json.Marshal(m.Delivered())
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.Grow(len(data) + len(m.ID) + 16)
	b.WriteString("id: ")
	b.WriteString(m.ID)
	b.WriteByte('\n')
	writeData(&b, data)
	return s.enqueue(b.Bytes())
}

// writeData writes data as data: lines; a newline inside would end the
// field, so each line gets its own (the client joins them with newlines).
func writeData(b *bytes.Buffer, data []byte) {
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(bytes.TrimSuffix(line, []byte("\r")))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
}

// Close implements delivery.Sender: the stream writes what is queued and a
// close event saying why, then ends the response. It does not block.
func (s *stream) Close(reason error) {
	s.mu.Lock()
	if !s.closing {
		s.closing, s.reason = true, reason
	}
	s.mu.Unlock()
	s.signal()
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// maxQueue is how many events may wait beyond the window before a client
// that does not read is dropped.
const maxQueue = 16

func (s *stream) enqueue(b []byte) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errClosing
	}
	if len(s.queue) >= s.gw.opts.Window+maxQueue {
		s.closing, s.reason = true, errSlow
		s.mu.Unlock()
		s.signal()
		return errSlow
	}
	s.queue = append(s.queue, b)
	s.mu.Unlock()
	s.signal()
	return nil
}

var errClosing = errors.New("sse: stream closing")

// run writes events as they are queued, and a heartbeat comment after each
// Heartbeat of silence, until the client goes or the stream is closed.
func (s *stream) run(ctx context.Context) {
	every := s.gw.opts.Heartbeat
	beat := time.NewTimer(every)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if s.write([]byte(": heartbeat\n\n")) != nil {
				return
			}
			beat.Reset(every)
		case <-s.wake:
			s.mu.Lock()
			batch, closing, reason := s.queue, s.closing, s.reason
			s.queue = nil
			s.mu.Unlock()
			if len(batch) > 0 {
				if s.write(bytes.Join(batch, nil)) != nil {
					return
				}
				beat.Reset(every)
			}
			if closing {
				s.write(closeEvent(reason))
				return
			}
		}
	}
}

func (s *stream) write(b []byte) error {
	s.rc.SetWriteDeadline(time.Now().Add(s.gw.opts.WriteTimeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// closeEvent is the last event of a stream the server ends: its code says
// why, and reconnect whether the client should come back.
func closeEvent(reason error) []byte {
	code, reconnect := "going_away", true
	switch {
	case errors.Is(reason, registry.ErrNotFound):
		code, reconnect = "device_deleted", false
	case errors.Is(reason, ErrReplaced):
		code, reconnect = "replaced", false
	case errors.Is(reason, errSlow):
		code = "too_slow"
	case errors.Is(reason, errAttach):
		code = "internal"
	}
	b, _ := json.Marshal(struct {
		Code      string `json:"code"`
		Reconnect bool   `json:"reconnect"`
	}{code, reconnect})
	return []byte("event: close\ndata: " + string(b) + "\n\n")
}
