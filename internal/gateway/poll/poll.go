// Package poll is the pull transport: a device polls or long-polls its inbox
// over HTTP and acknowledges what it received.
package poll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/session"
)

// Inbox is what the transport needs of delivery.
type Inbox interface {
	Wait(ctx context.Context, d *push.Device, wait time.Duration, limit, maxBytes int) ([]push.Message, error)
	AckFrom(ctx context.Context, transport string, d *push.Device, ids []string) (int, error)
}

// Options configure the transport.
type Options struct {
	MaxWait  time.Duration // longest long-poll
	MaxBody  int64
	MaxBatch int // messages per poll and IDs per ack
	// MaxBytes bounds the messages of one answer (their JSON); the first
	// message is always sent, whatever its size. 1 MiB when zero.
	MaxBytes int
	// WriteTimeout is how long a client may take to read an answer; a
	// long-poll's deadlines are its wait plus this. 30 s when zero.
	WriteTimeout time.Duration
	// MaxPerDevice bounds the long-polls one device holds at once; a newer
	// one ends the oldest, which answers at once with what it has. 8 when
	// zero.
	MaxPerDevice int
	Log          *slog.Logger
}

// Gateway serves GET /v1/inbox and POST /v1/inbox/ack.
type Gateway struct {
	reg   *registry.Registry // never nil
	inbox Inbox              // never nil
	opts  Options

	// waiting holds each device's long-polls, oldest first, to enforce
	// MaxPerDevice.
	waiting session.Conns[*longPoll]
}

// longPoll is one waiting GET /v1/inbox?wait=; end makes it answer now.
type longPoll struct{ end context.CancelFunc }

// New returns the polling transport.
func New(reg *registry.Registry, inbox Inbox, o Options) *Gateway {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.MaxPerDevice <= 0 {
		o.MaxPerDevice = 8
	}
	return &Gateway{reg: reg, inbox: inbox, opts: o}
}

// Register adds the routes to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("GET /v1/inbox", apierr.Handle(g.opts.Log, g.device(g.poll)))
	mux.Handle("POST /v1/inbox/ack", apierr.Handle(g.opts.Log, g.device(g.ack)))
}

type deviceFunc func(w http.ResponseWriter, r *http.Request, d *push.Device) error

// device authenticates with HTTP Basic registration_id:device_secret.
func (g *Gateway) device(f deviceFunc) apierr.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, secret, ok := r.BasicAuth()
		if !ok {
			return apierr.Unauthorized.With("use HTTP Basic with registration_id:device_secret")
		}
		d, err := g.reg.AuthDevice(r.Context(), id, secret)
		if errors.Is(err, registry.ErrUnauthorized) {
			return apierr.Unauthorized
		}
		if err != nil {
			return err
		}
		return f(w, r, &d)
	}
}

func (g *Gateway) poll(w http.ResponseWriter, r *http.Request, d *push.Device) error {
	q := r.URL.Query()
	wait, err := seconds(q.Get("wait"), g.opts.MaxWait)
	if err != nil {
		return apierr.BadParameter.With("wait must be 0 to %d seconds", int(g.opts.MaxWait/time.Second))
	}
	limit := g.opts.MaxBatch
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > g.opts.MaxBatch {
			return apierr.BadParameter.With("limit must be 1 to %d", g.opts.MaxBatch)
		}
		limit = n
	}
	ctx := r.Context()
	if wait > 0 {
		// The server's deadlines for every request are shorter than a
		// long wait; this one may hold its connection for the wait, and
		// for the write timeout after it.
		rc := http.NewResponseController(w)
		until := time.Now().Add(wait + g.opts.WriteTimeout)
		rc.SetReadDeadline(until)
		rc.SetWriteDeadline(until)
		var end context.CancelFunc
		ctx, end = context.WithCancel(ctx)
		defer end()
		lp := &longPoll{end: end}
		for _, old := range g.waiting.Add(d.ID, lp, g.opts.MaxPerDevice) {
			old.end()
		}
		defer g.waiting.Remove(d.ID, lp)
	}
	msgs, err := g.inbox.Wait(ctx, d, wait, limit, g.opts.MaxBytes)
	if err != nil && ctx.Err() != nil && r.Context().Err() == nil {
		// A newer long-poll of the device ended this one before it read
		// the inbox: it answers with nothing, as a wait that timed out.
		msgs, err = nil, nil
	}
	if err != nil {
		return err
	}
	size := 0
	for i := range msgs {
		size += msgs[i].Size()
	}
	// The store stops at the byte cap: what it returned reaching it means
	// more may wait.
	body := g.answer(msgs, size >= g.opts.MaxBytes)
	msgs = nil // what did not fit is not held while a slow client reads
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return nil
}

// answer encodes msgs as a poll answer, {"messages":[...]}, with as many
// messages, in order, as fit in MaxBytes (at least one) and "more": true
// when some did not fit or more may wait: those come on the next poll,
// since only an ack takes a message out of the inbox.
//
// The messages are encoded straight into one buffer sized for them, so that
// a poll allocates its answer once: under a flood of polls, what each
// allocates is what the node's memory follows.
func (g *Gateway) answer(msgs []push.Message, more bool) []byte {
	size := 64
	for i := range msgs {
		size += msgs[i].Size()
	}
	var b bytes.Buffer
	b.Grow(min(size, g.opts.MaxBytes+64<<10))
	b.WriteString(`{"messages":[`)
	enc := json.NewEncoder(&b)
	for i := range msgs {
		mark := b.Len()
		if i > 0 {
			b.WriteByte(',')
		}
		if err := enc.Encode(msgs[i].Delivered()); err != nil {
			b.Truncate(mark) // cannot happen: every field encodes
			continue
		}
		b.Truncate(b.Len() - 1) // the newline Encode ends each value with
		if i > 0 && b.Len() > g.opts.MaxBytes {
			b.Truncate(mark)
			more = true
			break
		}
	}
	b.WriteString("]")
	if more {
		b.WriteString(`,"more":true`)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

func seconds(s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 || n > max.Seconds() {
		return 0, strconv.ErrRange
	}
	return time.Duration(n * float64(time.Second)), nil
}

func (g *Gateway) ack(w http.ResponseWriter, r *http.Request, d *push.Device) error {
	var req struct {
		IDs []string `json:"ids"`
	}
	if err := apierr.ReadJSON(r, g.opts.MaxBody, &req); err != nil {
		return err
	}
	if len(req.IDs) > g.opts.MaxBatch {
		return apierr.TooManyIDs.With("at most %d IDs per ack", g.opts.MaxBatch)
	}
	n, err := g.inbox.AckFrom(r.Context(), "poll", d, req.IDs)
	if err != nil {
		return err
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Acked int `json:"acked"`
	}{n})
}
