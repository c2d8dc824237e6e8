// Package ws is the WebSocket device transport: GET /v1/inbox/ws speaks a
// small JSON protocol (docs/protocol.md) over one connection per device,
// pushing each message as it arrives and taking acks, with close codes that
// tell a client whether to reconnect.
//
// A connection is one delivery.Stream. It costs one goroutine, the reader,
// while idle; a writer goroutine exists only while frames wait to go out,
// so a push never waits on a slow socket and a slow socket never holds a
// lock of the core.
package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/session"
)

// Close codes. 1000–3999 mean the client may reconnect (with back-off);
// 4000–4099 mean it must not reconnect with the same credentials.
const (
	CloseNormal       = websocket.StatusNormalClosure   // 1000: the client asked to close
	CloseGoingAway    = websocket.StatusGoingAway       // 1001: the server is shutting down; reconnect
	ClosePolicy       = websocket.StatusPolicyViolation // 1008: too slow a reader, or silent past the ping timeout; reconnect
	CloseTooBig       = websocket.StatusMessageTooBig   // 1009: a frame over max_frame; reconnect
	CloseInternal     = websocket.StatusInternalError   // 1011: the server failed; reconnect with back-off
	CloseUnauthorized = websocket.StatusCode(4001)      // wrong or missing credentials: register again
	CloseDeleted      = websocket.StatusCode(4004)      // the device was deleted while connected: register again
	CloseReplaced     = websocket.StatusCode(4008)      // newer connections of the device took over: do not fight them
)

// Errors a connection can be closed with.
var (
	// ErrReplaced means the device opened more connections than the
	// gateway allows, and this, its oldest, made room.
	ErrReplaced = errors.New("ws: replaced by a newer connection of the device")
	// errSlow means the client did not read what was sent to it.
	errSlow = errors.New("ws: the client does not read its frames")
	// errSilent means the client answered no ping.
	errSilent = errors.New("ws: no frame from the client within the ping timeout")
	// errAttach means the device's inbox could not be read.
	errAttach = errors.New("ws: attaching the device failed")
)

// Inbox is what the transport needs of delivery.
type Inbox interface {
	Attach(ctx context.Context, d *push.Device, send delivery.Sender, window int) (*delivery.Stream, error)
}

// Options configure the transport. Zero values take the defaults.
type Options struct {
	Window       int           // unacknowledged messages in flight per connection; 64
	MaxFrame     int64         // bytes of one client frame; 64 KiB
	MaxAckIDs    int           // IDs in one ack; 1000
	PingInterval time.Duration // client silence before the server pings; 30 s. Twice that closes.
	WriteTimeout time.Duration // one frame to the socket; 10 s
	MaxPerDevice int           // connections of one device at once; the oldest is closed past it; 8
	Log          *slog.Logger
}

func (o *Options) defaults() {
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = 64 << 10
	}
	if o.MaxAckIDs <= 0 {
		o.MaxAckIDs = 1000
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxPerDevice <= 0 {
		o.MaxPerDevice = 8
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Gateway serves GET /v1/inbox/ws.
type Gateway struct {
	reg   *registry.Registry // never nil
	inbox Inbox              // never nil
	opts  Options

	// conns holds each device's open connections, oldest first, to
	// enforce MaxPerDevice.
	conns session.Conns[*conn]
}

// New returns the WebSocket transport.
func New(reg *registry.Registry, inbox Inbox, o Options) *Gateway {
	o.defaults()
	return &Gateway{reg: reg, inbox: inbox, opts: o}
}

// Register adds the route to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/inbox/ws", g.serve)
}

// Credentials returns the device credentials of r: HTTP Basic
// registration_id:device_secret, or the query parameters registration_id
// and device_secret, since a browser cannot set headers on a WebSocket.
func Credentials(r *http.Request) (id, secret string, ok bool) {
	if id, secret, ok = r.BasicAuth(); ok {
		return id, secret, true
	}
	q := r.URL.Query()
	id, secret = q.Get("registration_id"), q.Get("device_secret")
	return id, secret, id != "" && secret != ""
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	d, authErr := g.auth(r)
	// A browser sees neither the status nor the body of a refused
	// handshake, only a close with 1006, which looks like a network
	// failure. So a WebSocket handshake is accepted and then closed with
	// a code that says what went wrong; a plain HTTP request gets the
	// usual JSON error.
	if authErr != nil && !isUpgrade(r) {
		apierr.Write(w, authErr)
		return
	}
	c, err := websocket.Accept(netpoll.SmallBuffers(w, bufSize), r, &websocket.AcceptOptions{
		// Credentials travel in the URL or the Authorization header, never
		// in cookies, so a page of another origin gains nothing it does not
		// already hold: pages anywhere may use the service.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return // Accept wrote the error
	}
	if authErr != nil {
		code, text := CloseUnauthorized, "unauthorized: register again"
		var e *apierr.Error
		if errors.As(authErr, &e) && e.Status >= 500 {
			code, text = CloseInternal, "internal error"
		}
		c.Close(code, text)
		return
	}
	c.SetReadLimit(g.opts.MaxFrame)
	cn := &conn{gw: g, ws: c, dev: d, held: true}
	// A goroutine of its own, so that net/http's connection state (its
	// request, response and buffers) is freed when this handler returns
	// rather than kept for the life of the WebSocket.
	go cn.serve()
}

// bufSize is the read and write buffer of a WebSocket. Frames a device
// sends are small, and bufio passes larger reads and writes straight
// through, so 512 bytes cost no system calls that matter, where net/http's
// 4 KiB each would be kept by every idle connection.
const bufSize = 512

// auth authenticates the request; errors are apierr values.
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
		g.opts.Log.Error("device authentication failed", "err", err)
		return nil, apierr.Internal
	}
	return &d, nil
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Sec-WebSocket-Key") != ""
}

// conn is one device's WebSocket. It is the delivery.Sender of its stream.
type conn struct {
	gw  *Gateway
	ws  *websocket.Conn
	dev *push.Device // immutable

	// lastRead is when the last frame arrived, in Unix nanoseconds;
	// pinged is set when a ping went out after silence and no frame came
	// since. The reader sets them and the ping timer reads them.
	lastRead atomic.Int64
	pinged   atomic.Bool
	timer    *time.Timer // the ping timer; set before any frame is read

	mu sync.Mutex
	// queue holds encoded frames for the writer, in order; guarded by mu.
	queue [][]byte
	// writing is set while a writer goroutine runs; guarded by mu.
	writing bool
	// held keeps the writer from starting until the stream is attached, so
	// that a client that reads the hello knows its pushes reach it;
	// guarded by mu.
	held bool
	// closeCode and closeText, once closing is set, are what the writer
	// closes the socket with after the queue is written; guarded by mu.
	closing   bool
	closeCode websocket.StatusCode
	closeText string
}

func (c *conn) serve() {
	o := &c.gw.opts
	c.lastRead.Store(time.Now().UnixNano())
	// Armed only once c.timer is set, which heartbeat reads.
	c.timer = time.AfterFunc(time.Hour, c.heartbeat)
	c.timer.Reset(o.PingInterval)
	defer c.timer.Stop()
	c.enqueue(mustJSON(helloFrame{
		Type: TypeHello, PingInterval: int(o.PingInterval / time.Second), Window: o.Window,
		MaxFrame: int(o.MaxFrame), MaxAckIDs: o.MaxAckIDs,
	}))
	for _, old := range c.gw.conns.Add(c.dev.ID, c, c.gw.opts.MaxPerDevice) {
		old.Close(ErrReplaced)
	}
	defer c.gw.conns.Remove(c.dev.ID, c)
	// The stream's context outlives the handshake request: the request's
	// context must not be used after the hijack.
	ctx := context.Background()
	st, err := c.gw.inbox.Attach(ctx, c.dev, c, o.Window)
	c.release()
	if err != nil {
		c.gw.opts.Log.Error("attaching a WebSocket device failed", "device", c.dev.ID, "err", err)
		c.Close(errAttach)
		c.readUntilClosed(ctx, nil)
		return
	}
	defer st.Detach()
	c.readUntilClosed(ctx, st)
}

// readUntilClosed reads and handles client frames until the connection
// ends. With no stream (attaching failed) it only waits for the close.
func (c *conn) readUntilClosed(ctx context.Context, st *delivery.Stream) {
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			c.ws.CloseNow()
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.pinged.Store(false)
		if st == nil {
			continue
		}
		if typ != websocket.MessageText {
			c.sendError(badFrame("binary frames are not part of the protocol; send JSON text frames"))
			continue
		}
		f, err := DecodeFrame(b)
		if err != nil {
			c.sendError(err.(*FrameError))
			continue
		}
		switch f.Type {
		case TypePing:
			c.enqueue(pongFrame)
		case TypeAck:
			if len(f.IDs) > c.gw.opts.MaxAckIDs {
				c.sendError(&FrameError{Code: CodeTooManyIDs, Message: fmt.Sprintf("at most %d IDs in one ack", c.gw.opts.MaxAckIDs)})
				continue
			}
			if _, err := st.Ack(ctx, f.IDs...); err != nil {
				c.gw.opts.Log.Error("WebSocket ack failed", "device", c.dev.ID, "err", err)
				c.sendError(&FrameError{Code: CodeInternal, Message: "the ack was not recorded; send it again"})
			}
		case TypePong:
			// Its arrival already counted as a sign of life.
		}
	}
}

// heartbeat runs on the ping timer: after PingInterval of client silence it
// sends a ping, and after another it closes the connection.
func (c *conn) heartbeat() {
	every := c.gw.opts.PingInterval
	idle := time.Since(time.Unix(0, c.lastRead.Load()))
	switch {
	case idle < every:
		c.timer.Reset(every - idle)
	case c.pinged.Swap(true):
		c.Close(errSilent)
	default:
		c.enqueue(pingFrame)
		c.timer.Reset(every)
	}
}

// Send implements delivery.Sender: it queues the message for the writer.
func (c *conn) Send(m *push.Message, redelivery bool) error {
	b, err := encodeMessage(m, redelivery)
	if err != nil {
		return err
	}
	return c.enqueue(b)
}

// Close implements delivery.Sender: the writer sends what is queued, then
// closes with the code that reason maps to. It does not block.
func (c *conn) Close(reason error) {
	code, text := closeCode(reason)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, text)
}

func (c *conn) closeLocked(code websocket.StatusCode, text string) {
	if c.closing {
		return
	}
	c.closing, c.closeCode, c.closeText = true, code, text
	c.startWriterLocked()
}

// closeCode maps why a connection ends to its close code and reason.
func closeCode(reason error) (websocket.StatusCode, string) {
	switch {
	case reason == nil:
		return CloseNormal, ""
	case errors.Is(reason, registry.ErrNotFound), errors.Is(reason, session.ErrDeviceDeleted):
		return CloseDeleted, "device deleted: register again"
	case errors.Is(reason, ErrReplaced):
		return CloseReplaced, "replaced by a newer connection of this device"
	case errors.Is(reason, errSlow):
		return ClosePolicy, "too slow: frames were not read"
	case errors.Is(reason, errSilent):
		return ClosePolicy, "ping timeout"
	case errors.Is(reason, errAttach):
		return CloseInternal, "internal error: reconnect later"
	default:
		// The server's shutdown, or anything else from above the
		// transport: the device should come back, here or elsewhere.
		return CloseGoingAway, "server going away: reconnect"
	}
}

// maxQueue is how many frames may wait for a slow reader beyond the window
// before the connection is closed: pongs and errors a client provokes
// without reading its socket.
const maxQueue = 64

func (c *conn) enqueue(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	if len(c.queue) >= c.gw.opts.Window+maxQueue {
		c.closeLocked(closeCode(errSlow))
		return errSlow
	}
	c.queue = append(c.queue, b)
	c.startWriterLocked()
	return nil
}

func (c *conn) sendError(e *FrameError) { c.enqueue(encodeError(e)) }

// release lets the writer start: the hello and the drained inbox go out.
func (c *conn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if len(c.queue) > 0 || c.closing {
		c.startWriterLocked()
	}
}

func (c *conn) startWriterLocked() {
	if !c.writing && !c.held {
		c.writing = true
		go c.write()
	}
}

// write sends queued frames until none is left, then closes the socket if
// asked to, and returns: no goroutine waits on an idle connection's writes.
func (c *conn) write() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			c.writing = false
			closing, code, text := c.closing, c.closeCode, c.closeText
			c.mu.Unlock()
			if closing {
				c.ws.Close(code, text)
			}
			return
		}
		c.mu.Unlock()
		for _, b := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), c.gw.opts.WriteTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.mu.Lock()
				c.closing, c.queue, c.writing = true, nil, false
				c.mu.Unlock()
				c.ws.CloseNow()
				return
			}
		}
	}
}

// Transport implements delivery.Sender.
func (c *conn) Transport() string { return "ws" }
