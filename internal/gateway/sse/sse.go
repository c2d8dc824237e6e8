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
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/session"
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

	// conns holds each device's open streams, oldest first, to enforce
	// MaxPerDevice.
	conns session.Conns[*stream]
}

// New returns the SSE transport.
func New(reg *registry.Registry, inbox Inbox, o Options) *Gateway {
	o.defaults()
	return &Gateway{reg: reg, inbox: inbox, opts: o}
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
	s := &stream{gw: g, dev: d, held: true}
	if id := lastEventID(r); id != "" {
		// The client holds every message up to and including id, in inbox
		// order, from an earlier stream: those are not sent again here. If
		// id no longer waits (acknowledged, expired), its place is unknown
		// and everything waiting is sent; the client drops duplicates.
		waiting, err := g.inbox.Pending(r.Context(), d, g.opts.ResumeScan)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(waiting, func(m push.Message) bool { return m.ID == id }); i >= 0 {
			s.resumeSeq = waiting[i].Seq
		}
	}

	// On HTTP/1.x the stream takes the connection over: net/http would
	// keep a goroutine, 10 KiB of buffers and the request for the life of
	// an idle stream; hijacked, it costs one goroutine waiting for the
	// client to hang up and nothing else. HTTP/2 cannot be hijacked, and
	// is served through the ResponseWriter.
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		s.conn = conn
		s.queue = append(s.queue, []byte("HTTP/1.1 200 OK\r\n"+responseHeader+
			// The body runs until the connection closes.
			"Connection: close\r\n\r\n"))
	} else {
		for _, line := range strings.Split(strings.TrimSpace(responseHeader), "\r\n") {
			k, v, _ := strings.Cut(line, ": ")
			w.Header().Set(k, v)
		}
		w.WriteHeader(http.StatusOK)
		s.w, s.rc, s.done = w, http.NewResponseController(w), make(chan struct{})
	}
	hello, _ := json.Marshal(struct {
		Heartbeat int `json:"heartbeat"`
		Window    int `json:"window"`
	}{int(g.opts.Heartbeat / time.Second), g.opts.Window})
	s.queue = append(s.queue, []byte("retry: "+strconv.FormatInt(g.opts.Retry.Milliseconds(), 10)+"\nevent: hello\ndata: "+string(hello)+"\n\n"))
	s.lastWrite.Store(time.Now().UnixNano())
	// Armed only once s.timer is set, which heartbeat reads.
	s.timer = time.AfterFunc(time.Hour, s.heartbeat)
	s.timer.Reset(g.opts.Heartbeat)

	for _, old := range g.conns.Add(s.dev.ID, s, g.opts.MaxPerDevice) {
		old.Close(ErrReplaced)
	}
	// The request's context ends with this handler; the stream outlives it.
	st, err := g.inbox.Attach(context.Background(), d, s, g.opts.Window)
	if err != nil {
		g.opts.Log.Error("attaching an SSE device failed", "device", d.ID, "err", err)
		s.Close(errAttach)
	}
	s.attached(st)
	if s.conn != nil {
		go s.watch()
		return nil
	}
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
	s.end()
	s.writers.Wait() // the ResponseWriter is not to be used once this returns
	return nil
}

// responseHeader is the header of every stream, each line ending in CRLF.
const responseHeader = "Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	// nginx would otherwise hold events back.
	"X-Accel-Buffering: no\r\n" +
	// The credentials are in the URL, never in cookies, so a page of any
	// origin may read its own device's stream.
	"Access-Control-Allow-Origin: *\r\n"

var errAttach = errors.New("sse: attaching the device failed")

// stream is one device's event stream and the delivery.Sender of its
// delivery.Stream. Events are queued and written by a goroutine that exists
// only while there is something to write, so a push never waits on the
// socket.
type stream struct {
	gw  *Gateway
	dev *push.Device // immutable
	// resumeSeq: messages at or below it in inbox order are held by the
	// client already (Last-Event-ID); immutable once the stream attaches.
	resumeSeq uint64

	// Where events go: conn, the hijacked HTTP/1.x connection, or w and
	// rc on HTTP/2, where the handler waits for done. Immutable.
	conn net.Conn
	w    http.ResponseWriter
	rc   *http.ResponseController
	done chan struct{} // closed when the stream ends (HTTP/2 only)

	writers   sync.WaitGroup // the writer goroutine, if one runs
	lastWrite atomic.Int64   // Unix nanoseconds of the last write, for heartbeats
	timer     *time.Timer    // the heartbeat timer; set before attaching

	mu      sync.Mutex
	queue   [][]byte         // encoded events, in order; guarded by mu
	writing bool             // a writer goroutine runs; guarded by mu
	held    bool             // no writing until attached, so the hello means attached; guarded by mu
	closing bool             // the close event is queued; guarded by mu
	st      *delivery.Stream // nil until attached or when attaching failed; guarded by mu
	ended   bool             // guarded by mu
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

// Close implements delivery.Sender: what is queued is written, then a close
// event saying why, and the stream ends. It does not block.
func (s *stream) Close(reason error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(reason)
}

func (s *stream) closeLocked(reason error) {
	if s.closing {
		return
	}
	s.closing = true
	s.queue = append(s.queue, closeEvent(reason))
	s.startWriterLocked()
}

// maxQueue is how many events may wait beyond the window before a client
// that does not read is dropped.
const maxQueue = 16

var errClosing = errors.New("sse: stream closing")

func (s *stream) enqueue(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errClosing
	}
	if len(s.queue) >= s.gw.opts.Window+maxQueue {
		s.closeLocked(errSlow)
		return errSlow
	}
	s.queue = append(s.queue, b)
	s.startWriterLocked()
	return nil
}

// attached records the delivery stream (nil if attaching failed) and lets
// the writer start.
func (s *stream) attached(st *delivery.Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st, s.held = st, false
	if s.ended && st != nil {
		st.Detach() // the client left while attaching
	}
	if len(s.queue) > 0 {
		s.startWriterLocked()
	}
}

func (s *stream) startWriterLocked() {
	if !s.writing && !s.held && !s.ended {
		s.writing = true
		s.writers.Go(s.write)
	}
}

// write writes queued events until none is left, and returns: no goroutine
// waits on an idle stream's writes. After the close event it ends the
// stream.
func (s *stream) write() {
	for {
		s.mu.Lock()
		batch, closing := s.queue, s.closing
		s.queue = nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := s.out(bytes.Join(batch, nil)); err != nil {
			s.finish()
			return
		}
		if closing {
			s.mu.Lock()
			last := len(s.queue) == 0
			s.mu.Unlock()
			if last {
				s.finish()
				return
			}
		}
	}
}

func (s *stream) out(b []byte) error {
	deadline := time.Now().Add(s.gw.opts.WriteTimeout)
	s.lastWrite.Store(time.Now().UnixNano())
	if s.conn != nil {
		s.conn.SetWriteDeadline(deadline)
		_, err := s.conn.Write(b)
		return err
	}
	s.rc.SetWriteDeadline(deadline)
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// finish ends the response: closing the hijacked connection wakes watch,
// closing done returns the HTTP/2 handler; either calls end.
func (s *stream) finish() {
	if s.conn != nil {
		s.conn.Close()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// watch waits for the client to hang up (or for finish to close the
// connection). Whatever the client sends after its request is discarded.
func (s *stream) watch() {
	var buf [64]byte
	for {
		if _, err := s.conn.Read(buf[:]); err != nil {
			break
		}
	}
	s.conn.Close()
	s.end()
}

// end releases the stream once the response is over.
func (s *stream) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.closing, s.queue = true, true, nil
	st := s.st
	s.mu.Unlock()
	s.timer.Stop()
	if st != nil {
		st.Detach()
	}
	s.gw.conns.Remove(s.dev.ID, s)
}

// heartbeat runs on the heartbeat timer: a comment line after Heartbeat of
// silence keeps proxies from closing an idle stream.
func (s *stream) heartbeat() {
	every := s.gw.opts.Heartbeat
	if idle := time.Since(time.Unix(0, s.lastWrite.Load())); idle < every {
		s.timer.Reset(every - idle)
		return
	}
	if s.enqueue([]byte(": heartbeat\n\n")) == nil {
		s.timer.Reset(every)
	}
}

// closeEvent is the last event of a stream the server ends: its code says
// why, and reconnect whether the client should come back.
func closeEvent(reason error) []byte {
	code, reconnect := "going_away", true
	switch {
	case errors.Is(reason, registry.ErrNotFound), errors.Is(reason, session.ErrDeviceDeleted):
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

// Transport implements delivery.Sender.
func (s *stream) Transport() string { return "sse" }
