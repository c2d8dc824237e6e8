package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// appHeader names the app an admin call acts for: the admin token may do
// whatever an app's master secret may, on any app, so that the console
// signed in as the operator uses the providers' own routes.
const appHeader = "Herald-App"

// registerListing adds the routes that list and count, which the console
// reads like any provider.
func (a *API) registerListing(mux *http.ServeMux) {
	h := func(f apierr.HandlerFunc) http.Handler { return apierr.Handle(a.log, f) }
	mux.Handle("GET /v1/apps", h(a.listApps))
	mux.Handle("GET /v1/apps/{app_key}/stats", h(a.appOwner(a.stats)))
	mux.Handle("GET /v1/devices", h(a.provider(a.listDevices)))
	mux.Handle("GET /v1/devices/{id}/pending", h(a.provider(a.pendingOf)))
	mux.Handle("GET /v1/messages", h(a.provider(a.listMessages)))
	mux.Handle("GET /v1/stats/stream", h(a.statsStream))
}

func isBearer(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// providerApp authenticates a provider call: HTTP Basic with an app's
// key and master secret, or the admin token with the app in Herald-App.
func (a *API) providerApp(r *http.Request) (push.App, error) {
	if isBearer(r) {
		if err := a.admin(r); err != nil {
			return push.App{}, err
		}
		key := r.Header.Get(appHeader)
		if key == "" {
			return push.App{}, apierr.BadHeader.With("the admin token acts for the app named in the %s header, which is missing", appHeader)
		}
		app, err := a.reg.App(r.Context(), key)
		if err != nil {
			return push.App{}, appError(err)
		}
		return app, nil
	}
	key, secret, ok := r.BasicAuth()
	if !ok {
		return push.App{}, apierr.Unauthorized.With("use HTTP Basic with app_key:master_secret")
	}
	app, err := a.reg.AuthApp(r.Context(), key, secret)
	if err != nil {
		return push.App{}, registryError(err)
	}
	return app, nil
}

type appView struct {
	AppKey    string    `json:"app_key"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// listApps is GET /v1/apps: every app with the admin token, the caller's
// own with a master secret. Never a secret.
func (a *API) listApps(w http.ResponseWriter, r *http.Request) error {
	var apps []push.App
	if isBearer(r) && r.Header.Get(appHeader) == "" {
		if err := a.admin(r); err != nil {
			return err
		}
		var err error
		if apps, err = a.reg.Apps(r.Context()); err != nil {
			return err
		}
	} else {
		app, err := a.providerApp(r)
		if err != nil {
			return err
		}
		apps = []push.App{app}
	}
	out := make([]appView, len(apps))
	for i, app := range apps {
		out[i] = appView{AppKey: app.Key, Name: app.Name, CreatedAt: app.CreatedAt}
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Apps []appView `json:"apps"`
	}{out})
}

// limitParam reads the query's limit: def when absent, 1 to most.
func limitParam(r *http.Request, def, most int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, apierr.BadParameter.With("limit must be a whole number from 1 to %d, not %q", most, v)
	}
	return n, nil
}

// listDevices is GET /v1/devices?tag=&after=&limit=: a page of the app's
// devices in ID order; next, when set, is the after of the next page.
func (a *API) listDevices(w http.ResponseWriter, r *http.Request, app push.App) error {
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	tag := q.Get("tag")
	if tag != "" {
		if err := push.ValidName(tag); err != nil {
			return apierr.BadName.With("tag: %v", err)
		}
	}
	ds, err := a.reg.ListDevices(r.Context(), app.Key, store.DeviceQuery{Tag: tag, After: q.Get("after"), Limit: limit})
	if err != nil {
		return err
	}
	views := make([]deviceView, len(ds))
	for i := range ds {
		views[i] = viewOf(&ds[i])
	}
	next := ""
	if len(ds) == limit {
		next = ds[len(ds)-1].ID
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Devices []deviceView `json:"devices"`
		Next    string       `json:"next,omitempty"`
	}{views, next})
}

// sessionView is one live session of a device on this node.
type sessionView struct {
	Transport string    `json:"transport"`
	Since     time.Time `json:"since"`
}

// sessionsOf returns device id's live sessions on this node.
func (a *API) sessionsOf(id string) []sessionView {
	out := []sessionView{}
	if a.opts.Sessions == nil {
		return out
	}
	for _, s := range a.opts.Sessions.DeviceSessions(id) {
		out = append(out, sessionView{Transport: s.Transport, Since: s.Since})
	}
	return out
}

// pendingOf is GET /v1/devices/{id}/pending?limit=: what waits for the
// device, oldest first, as it would receive it; reading it acknowledges
// nothing.
func (a *API) pendingOf(w http.ResponseWriter, r *http.Request, app push.App) error {
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		return err
	}
	d, err := a.reg.Device(r.Context(), app.Key, r.PathValue("id"))
	if err != nil {
		return registryError(err)
	}
	msgs, err := a.delivery.Pending(r.Context(), &d, limit+1)
	if err != nil {
		return err
	}
	more := len(msgs) > limit
	if more {
		msgs = msgs[:limit]
	}
	out := make([]push.Delivered, len(msgs))
	for i := range msgs {
		out[i] = msgs[i].Delivered()
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Messages []push.Delivered `json:"messages"`
		More     bool             `json:"more"`
	}{out, more})
}

// messageView is a message's report with what was pushed.
type messageView struct {
	delivery.Report
	Audience     any                `json:"audience"` // "all" or the object as pushed
	Platform     []push.Platform    `json:"platform,omitempty"`
	Notification *push.Notification `json:"notification,omitempty"`
	Message      json.RawMessage    `json:"message,omitempty"`
	Options      messageOptions     `json:"options"`
}

type messageOptions struct {
	TTL        int64              `json:"ttl"`
	Priority   push.Priority      `json:"priority,omitempty"`
	CollapseID string             `json:"collapse_id,omitempty"`
	Channel    push.ChannelPolicy `json:"channel,omitempty"`
}

func messageViewOf(d *delivery.Described) messageView {
	m := &d.Msg
	var aud any = m.Audience
	if m.Audience.All {
		aud = "all"
	}
	return messageView{
		Report: d.Report, Audience: aud, Platform: m.Platforms, Notification: m.Notification, Message: m.Data,
		Options: messageOptions{TTL: int64(m.TTL / time.Second), Priority: m.Priority, CollapseID: m.CollapseID, Channel: m.Channel},
	}
}

// listMessages is GET /v1/messages?before=&limit=: the app's messages,
// newest first, each with its report; next, when set, is the before of
// the next page.
func (a *API) listMessages(w http.ResponseWriter, r *http.Request, app push.App) error {
	limit, err := limitParam(r, 50, 200)
	if err != nil {
		return err
	}
	before := r.URL.Query().Get("before")
	ds, err := a.delivery.Recent(r.Context(), app.Key, before, limit)
	if errors.Is(err, delivery.ErrNotFound) {
		return apierr.BadParameter.With("before names no message of this app (or one whose report was purged): %q", before)
	}
	if err != nil {
		return err
	}
	views := make([]messageView, len(ds))
	for i := range ds {
		views[i] = messageViewOf(&ds[i])
	}
	next := ""
	if len(ds) == limit {
		next = ds[len(ds)-1].Msg.ID
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Messages []messageView `json:"messages"`
		Next     string        `json:"next,omitempty"`
	}{views, next})
}
