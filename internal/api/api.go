// Package api is Herald's REST surface for providers (push, reports,
// devices), device registration and administration. Errors come from the
// apierr catalogue.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/relay"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/webpush"
)

// Options configure the API.
type Options struct {
	AdminToken string // bearer token for /v1/apps; admin calls are refused when empty
	// Backup writes a backup of the node's store to w (GET
	// /v1/admin/backup); it returns an error before writing anything when
	// it cannot make one. Nil answers 501 backup_unsupported.
	Backup        func(ctx context.Context, w io.Writer) error
	MaxBody       int64 // bytes of a request body
	MaxBatch      int   // pushes in one batch call
	RegisterRate  float64
	RegisterBurst int
	// AppPushRate and AppPushBurst bound each app's pushes (a token bucket;
	// see appLimiter). A rate of zero does not limit.
	AppPushRate  float64
	AppPushBurst int
	// Links are the device-facing URLs returned with a registration, so a
	// device learns where to connect from the answer itself.
	Links Links
	// WebPush is the push service behind /wpush/ and
	// /v1/webpush/subscriptions, shared with the Mozilla gateway so that
	// both apply the same limits. Required.
	WebPush *webpush.Service
	// Channels are the apps' vendor channel settings; their routes are
	// left out when nil.
	Channels *relay.Channels
	// Sessions are this node's live sessions, for who is online (stats,
	// a device's sessions, the live stream); none are shown when nil.
	Sessions *session.Hub
	// Metrics feed the live figures (stats, the live stream); zeros when
	// nil.
	Metrics *metrics.M
	Log     *slog.Logger
}

// Links are the addresses a device connects to.
type Links struct {
	HTTP string // base URL of the HTTP listener
	MQTT string // mqtts://host:port when MQTT over TLS is on, else mqtt://; empty when neither is
	// Every MQTT listener, for the registration answer's list: plain TCP,
	// TLS and WebSocket; empty when off.
	MQTTTCP, MQTTTLS, MQTTWS string
	WS                       string // the device WebSocket, /v1/inbox/ws
}

// API serves the provider, registration and admin endpoints.
type API struct {
	reg      *registry.Registry // never nil
	delivery *delivery.Service  // never nil
	opts     Options
	limiter  *addrLimiter
	// pushLimit is the per-app push budget; never nil.
	pushLimit *appLimiter
	log       *slog.Logger
	live      *sampler // never nil

	draining  chan struct{} // closed by Drain
	drainOnce sync.Once
}

// New returns the API over its services.
func New(reg *registry.Registry, d *delivery.Service, o Options) *API {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	pushRate := o.AppPushRate
	if pushRate <= 0 {
		pushRate = float64(rate.Inf)
	}
	return &API{reg: reg, delivery: d, opts: o, log: o.Log,
		limiter:   newAddrLimiter(o.RegisterRate, o.RegisterBurst),
		pushLimit: newAppLimiter(pushRate, o.AppPushBurst),
		live:      newSampler(o.Metrics), draining: make(chan struct{})}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	h := func(f apierr.HandlerFunc) http.Handler { return apierr.Handle(a.log, f) }
	mux.Handle("POST /v1/apps", h(a.createApp))
	mux.Handle("GET /v1/admin/backup", h(a.backup))
	mux.Handle("POST /v1/devices", h(a.register))
	mux.Handle("GET /v1/devices/{id}", h(a.provider(a.getDevice)))
	mux.Handle("PATCH /v1/devices/{id}", h(a.provider(a.patchDevice)))
	mux.Handle("DELETE /v1/devices/{id}", h(a.provider(a.deleteDevice)))
	mux.Handle("GET /v1/aliases/{alias}", h(a.provider(a.alias)))
	mux.Handle("POST /v1/push", h(a.provider(a.push)))
	mux.Handle("POST /v1/push/batch", h(a.provider(a.pushBatch)))
	mux.Handle("GET /v1/messages/{id}", h(a.provider(a.report)))
	mux.Handle("DELETE /v1/messages/{id}", h(a.provider(a.recall)))
	a.registerWebPush(mux)
	a.registerChannels(mux)
	a.registerListing(mux)
}

// Run prunes idle rate-limit state and samples the live figures until ctx
// ends.
func (a *API) Run(ctx context.Context) {
	go a.live.run(ctx)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.limiter.prune(now)
		}
	}
}

type providerFunc func(w http.ResponseWriter, r *http.Request, app push.App) error

// provider authenticates the app with HTTP Basic app_key:master_secret, or
// the admin token acting for the app named in Herald-App (providerApp).
func (a *API) provider(f providerFunc) apierr.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		app, err := a.providerApp(r)
		if err != nil {
			return err
		}
		return f(w, r, app)
	}
}

func (a *API) admin(r *http.Request) error {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || a.opts.AdminToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(a.opts.AdminToken)) != 1 {
		return apierr.Unauthorized.With("use Authorization: Bearer <admin token>")
	}
	netlimit.Authenticated(r.Context()) // the registry does it for app and device credentials
	return nil
}

// registryError maps registry and validation errors onto the catalogue.
func registryError(err error) error {
	switch {
	case errors.Is(err, registry.ErrUnauthorized):
		return apierr.Unauthorized
	case errors.Is(err, registry.ErrNotFound):
		return apierr.DeviceNotFound
	case errors.Is(err, registry.ErrAppExists):
		return apierr.AppExists
	case errors.Is(err, push.ErrBadTag):
		return apierr.BadName.With("%v", err)
	case errors.Is(err, push.ErrBadToken):
		return apierr.BadToken.With("%s", detail(err, push.ErrBadToken))
	case errors.Is(err, push.ErrBadSubscription):
		return apierr.BadSubscription.With("%s", detail(err, push.ErrBadSubscription))
	case errors.Is(err, registry.ErrInvalid):
		return apierr.BadName.With("%s", strings.TrimPrefix(err.Error(), "registry: invalid: "))
	}
	return err
}

// detail returns what err says after sentinel's own text: the specific
// part of a wrapped validation error.
func detail(err, sentinel error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, sentinel.Error()+": "); ok {
		return after
	}
	return msg
}

// mapping pairs a package's sentinel error with its catalogue entry.
type mapping struct {
	sentinel error
	api      *apierr.Error
}

// mapError returns the catalogue entry of the first sentinel err wraps,
// with err's own detail (the text after its package prefix) as the message;
// err itself when none matches.
func mapError(err error, table []mapping) error {
	for _, m := range table {
		if errors.Is(err, m.sentinel) {
			msg := err.Error()
			if i := strings.Index(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			return m.api.With("%s", msg)
		}
	}
	return err
}

// pushErrors maps push validation and delivery errors onto the catalogue.
var pushErrors = []mapping{
	{push.ErrDuplicateKey, apierr.DuplicateKey},
	{push.ErrBadJSON, apierr.BadJSON},
	{push.ErrBadAudience, apierr.BadAudience},
	{push.ErrEmptyAudience, apierr.EmptyAudience},
	{push.ErrTooManyIDs, apierr.TooManyIDs},
	{push.ErrEmptyMessage, apierr.EmptyMessage},
	{push.ErrPayloadTooLarge, apierr.PayloadTooLarge},
	{push.ErrBadTTL, apierr.BadTTL},
	{push.ErrBadOption, apierr.BadOption},
	{push.ErrBadPlatform, apierr.BadPlatform},
	{push.ErrBadTag, apierr.BadName},
	{push.ErrReservedKey, apierr.ReservedKey},
	{delivery.ErrNoDevices, apierr.DeviceNotFound},
	{delivery.ErrNotFound, apierr.MessageNotFound},
}

// pushError maps a push validation or delivery error onto the catalogue.
func pushError(err error) error { return mapError(err, pushErrors) }

// backup streams a tar of the node's store (GET /v1/admin/backup, admin).
// The headers go out with the archive's first bytes, so that a backup that
// cannot begin is still answered with an error.
func (a *API) backup(w http.ResponseWriter, r *http.Request) error {
	if err := a.admin(r); err != nil {
		return err
	}
	if a.opts.Backup == nil {
		return apierr.BackupUnsupported
	}
	lw := &lazyArchive{w: w, name: "herald-backup-" + time.Now().UTC().Format("20060102-150405") + ".tar"}
	err := a.opts.Backup(r.Context(), lw)
	if err != nil && !lw.started {
		return err
	}
	if err != nil {
		// Too late for a status: cut the response, so that the client
		// sees an incomplete archive rather than a short one that looks whole.
		a.log.Error("backup failed while being sent", "err", err)
		panic(http.ErrAbortHandler)
	}
	if !lw.started {
		lw.start()
	}
	return nil
}

// lazyArchive writes the archive's headers on its first write.
type lazyArchive struct {
	w       http.ResponseWriter
	name    string
	started bool
}

func (l *lazyArchive) start() {
	l.started = true
	l.w.Header().Set("Content-Type", "application/x-tar")
	l.w.Header().Set("Content-Disposition", `attachment; filename="`+l.name+`"`)
	l.w.WriteHeader(http.StatusOK)
}

func (l *lazyArchive) Write(p []byte) (int, error) {
	if !l.started {
		l.start()
	}
	return l.w.Write(p)
}
