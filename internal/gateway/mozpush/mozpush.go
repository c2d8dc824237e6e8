// Package mozpush lets Firefox use Herald as its push service: GET /mozpush
// speaks Mozilla's WebSocket push protocol (the one Firefox's
// dom.push.serverURL points at, subprotocol "push-notification";
// docs/protocol.md), mapped onto Herald's registrations, Web Push
// subscriptions and inboxes.
//
// A Firefox profile is one device of platform web. Its UAID, which Firefox
// keeps and sends in every hello, is the device's credential: the
// registration ID and the device secret joined by a dot. Herald keeps only
// the secret's hash, as for every device. Firefox's channels are Web Push
// subscriptions labelled with the channel ID, so a push to a channel's
// endpoint (POST /wpush/{token}) lands in the device's inbox like any other
// push and reaches Firefox as a notification; Firefox's ack takes it out.
// What Firefox does not acknowledge comes again when it reconnects with its
// UAID, until the push's TTL runs out.
//
// A connection is one delivery.Stream, driven like the other WebSocket
// transport: one reader goroutine, and a writer goroutine only while
// messages wait to go out.
package mozpush

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/webpush"
)

// Subprotocol is the WebSocket subprotocol Firefox asks for.
const Subprotocol = "push-notification"

// Close codes. Firefox reconnects, with back-off, after any code but
// CloseBackoff; a reconnecting Firefox says hello with its UAID and gets
// what is still unacknowledged.
const (
	CloseNormal      = websocket.StatusNormalClosure   // 1000: the client asked
	CloseGoingAway   = websocket.StatusGoingAway       // 1001: shutdown, or the device was deleted (its next hello gets a new UAID)
	CloseProtocol    = websocket.StatusProtocolError   // 1002: a malformed message, or one out of order
	CloseUnsupported = websocket.StatusUnsupportedData // 1003: a binary message
	ClosePolicy      = websocket.StatusPolicyViolation // 1008: no hello in time, no pong, or a client that does not read
	CloseTooBig      = websocket.StatusMessageTooBig   // 1009: a message over MaxMessage bytes
	CloseInternal    = websocket.StatusInternalError   // 1011: the server failed
	// CloseBackoff tells Firefox not to reconnect by itself (it comes
	// back on a network change or when a page subscribes): the app_key
	// names no app, or a newer connection of the same UAID took over.
	CloseBackoff = websocket.StatusCode(4774)
)

// Errors a connection can be closed with.
var (
	// ErrReplaced means a newer connection with the same UAID took over.
	ErrReplaced = errors.New("mozpush: replaced by a newer connection of the same UAID")
	errNoApp    = errors.New("mozpush: no such app")
	errNoHello  = errors.New("mozpush: no hello in time")
	errSlow     = errors.New("mozpush: the client does not read its messages")
	errSilent   = errors.New("mozpush: no pong within the timeout")
	errInternal = errors.New("mozpush: internal error")
)

// Inbox is what the transport needs of delivery.
type Inbox interface {
	// AttachExclusive connects the user agent to its inbox, closing its
	// connections on other nodes: one connection per UAID in the whole
	// cluster, as on one node.
	AttachExclusive(ctx context.Context, d *push.Device, send delivery.Sender, window int) (*delivery.Stream, error)
}

// Options configure the transport. Zero values take the defaults.
type Options struct {
	// DefaultApp is the app key used when a connection names none. Required.
	DefaultApp   string
	Window       int           // unacknowledged notifications in flight; 64
	MaxMessage   int64         // bytes of one client message; 64 KiB
	HelloTimeout time.Duration // for the hello after the handshake; 10 s
	// PingInterval is the client silence after which the server sends a
	// WebSocket ping; 5 min, below the idle timeouts of common NATs.
	// Firefox itself pings only every 30 minutes.
	PingInterval time.Duration
	PongTimeout  time.Duration // for the pong; 30 s
	WriteTimeout time.Duration // one message to the socket; 10 s
	// RegisterRate and RegisterBurst bound how fast one source address
	// may have new devices stored (a new UAID's first register): 1 per
	// second, bursts of 20, as for POST /v1/devices.
	RegisterRate  float64
	RegisterBurst int
	Log           *slog.Logger
}

func (o *Options) defaults() {
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = 64 << 10
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = 10 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 5 * time.Minute
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.RegisterRate <= 0 {
		o.RegisterRate = 1
	}
	if o.RegisterBurst <= 0 {
		o.RegisterBurst = 20
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Gateway serves GET /mozpush.
type Gateway struct {
	reg   *registry.Registry // never nil
	inbox Inbox              // never nil
	wp    *webpush.Service   // the channels' subscriptions; never nil
	opts  Options
	limit *addrLimiter // new devices per source address; never nil

	mu sync.Mutex
	// byDevice holds the connection of each device: one per UAID, the
	// newest; guarded by mu.
	byDevice map[string]*conn
}

// New returns the transport. Firefox's channels are subscriptions of wp.
func New(reg *registry.Registry, inbox Inbox, wp *webpush.Service, o Options) *Gateway {
	o.defaults()
	return &Gateway{
		reg: reg, inbox: inbox, wp: wp, opts: o,
		limit: newAddrLimiter(o.RegisterRate, o.RegisterBurst), byDevice: make(map[string]*conn),
	}
}

// Register adds the route to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /mozpush", g.serve)
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	appKey := r.URL.Query().Get("app_key")
	if appKey == "" {
		appKey = g.opts.DefaultApp
	}
	app, appErr := g.reg.App(r.Context(), appKey)
	if appErr != nil && !errors.Is(appErr, registry.ErrNotFound) {
		g.opts.Log.Error("mozpush: looking the app up failed", "err", appErr)
	}
	if appErr != nil && r.Header.Get("Sec-WebSocket-Key") == "" {
		if errors.Is(appErr, registry.ErrNotFound) {
			apierr.Write(w, apierr.AppNotFound.With("app_key names no app"))
		} else {
			apierr.Write(w, apierr.Internal)
		}
		return
	}
	ws, err := websocket.Accept(netpoll.SmallBuffers(w, bufSize), r, &websocket.AcceptOptions{
		Subprotocols: []string{Subprotocol},
		// Firefox opens the socket from its chrome, with no Origin a page
		// controls; the UAID is the credential.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return // Accept wrote the error
	}
	if appErr != nil {
		// A refused handshake looks like a network failure to Firefox, which
		// would retry at once; a close with the back-off code stops it.
		code, reason := closeCode(errNoApp)
		if !errors.Is(appErr, registry.ErrNotFound) {
			code, reason = closeCode(errInternal)
		}
		ws.Close(code, reason)
		return
	}
	ws.SetReadLimit(g.opts.MaxMessage)
	c := &conn{gw: g, ws: ws, app: app.Key, remote: r.RemoteAddr}
	// A goroutine of its own, so that net/http's state for the request is
	// freed when this handler returns rather than kept for the life of the
	// WebSocket. The connection's limiter ticket goes along for the hello.
	go c.serve(netlimit.FromContext(r.Context()))
}

// track makes c its device's connection and returns the one it replaces.
func (g *Gateway) track(c *conn) *conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.byDevice[c.dev.ID]
	g.byDevice[c.dev.ID] = c
	return old
}

func (g *Gateway) untrack(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byDevice[c.dev.ID] == c {
		delete(g.byDevice, c.dev.ID)
	}
}

// UAID returns the UAID of the device with registration ID id and device
// secret secret.
func UAID(id, secret string) string { return id + "." + secret }

// parseUAID splits a UAID into registration ID and device secret; ok is
// false for a UAID Herald did not make.
func parseUAID(uaid string) (id, secret string, ok bool) {
	if len(uaid) > MaxUAIDLen {
		return "", "", false
	}
	id, secret, ok = strings.Cut(uaid, ".")
	return id, secret, ok && id != "" && secret != ""
}

// closeCode maps why a connection ends to its close code and reason.
func closeCode(reason error) (websocket.StatusCode, string) {
	var pe *ProtocolError
	switch {
	case reason == nil:
		return CloseNormal, ""
	case errors.As(reason, &pe):
		return CloseProtocol, truncate(pe.Reason, 120)
	case errors.Is(reason, errBinary):
		return CloseUnsupported, "binary messages are not part of the protocol"
	case errors.Is(reason, ErrReplaced), errors.Is(reason, session.ErrTakenOver):
		return CloseBackoff, "replaced by a newer connection of this UAID"
	case errors.Is(reason, errNoApp):
		return CloseBackoff, "app_key names no app"
	case errors.Is(reason, errNoHello):
		return ClosePolicy, "no hello in time"
	case errors.Is(reason, errSlow):
		return ClosePolicy, "too slow: messages were not read"
	case errors.Is(reason, errSilent):
		return ClosePolicy, "ping timeout"
	case errors.Is(reason, errInternal):
		return CloseInternal, "internal error: reconnect later"
	case errors.Is(reason, registry.ErrNotFound), errors.Is(reason, session.ErrDeviceDeleted):
		return CloseGoingAway, "registration deleted: say hello again"
	default:
		// The server's shutdown, or anything else from above the
		// transport: Firefox should come back, here or elsewhere.
		return CloseGoingAway, "server going away: reconnect"
	}
}

// bufSize is the read and write buffer of a connection. Client messages
// are small and bufio passes larger reads and writes straight through, so
// 512 bytes cost no system calls that matter, where net/http's 4 KiB each
// would be kept by every idle connection.
const bufSize = 512
