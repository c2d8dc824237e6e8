// Package poll is the pull transport: a device polls or long-polls its inbox
// over HTTP and acknowledges what it received.
package poll

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
)

// Inbox is what the transport needs of delivery.
type Inbox interface {
	Wait(ctx context.Context, d *push.Device, wait time.Duration, limit int) ([]push.Message, error)
	Ack(ctx context.Context, d *push.Device, ids []string) (int, error)
}

// Options configure the transport.
type Options struct {
	MaxWait  time.Duration // longest long-poll
	MaxBody  int64
	MaxBatch int // messages per poll and IDs per ack
	Log      *slog.Logger
}

// Gateway serves GET /v1/inbox and POST /v1/inbox/ack.
type Gateway struct {
	reg   *registry.Registry // never nil
	inbox Inbox              // never nil
	opts  Options
}

// New returns the polling transport.
func New(reg *registry.Registry, inbox Inbox, o Options) *Gateway {
	if o.Log == nil {
		o.Log = slog.Default()
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

// inbox is the answer to a poll.
type inbox struct {
	Messages []push.Delivered `json:"messages"`
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
	msgs, err := g.inbox.Wait(r.Context(), d, wait, limit)
	if err != nil {
		return err
	}
	out := inbox{Messages: make([]push.Delivered, len(msgs))}
	for i := range msgs {
		out.Messages[i] = msgs[i].Delivered()
	}
	return apierr.WriteJSON(w, http.StatusOK, out)
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
	n, err := g.inbox.Ack(r.Context(), d, req.IDs)
	if err != nil {
		return err
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Acked int `json:"acked"`
	}{n})
}
