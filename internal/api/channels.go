package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/relay"
)

// registerChannels adds the routes of the apps' vendor channel settings.
func (a *API) registerChannels(mux *http.ServeMux) {
	if a.opts.Channels == nil {
		return
	}
	h := func(f appFunc) http.Handler { return apierr.Handle(a.log, a.appOwner(f)) }
	mux.Handle("GET /v1/apps/{app_key}/channels", h(a.listChannels))
	mux.Handle("PATCH /v1/apps/{app_key}/channels", h(a.setRouting))
	mux.Handle("PUT /v1/apps/{app_key}/channels/{kind}", h(a.putChannel))
	mux.Handle("GET /v1/apps/{app_key}/channels/{kind}", h(a.getChannel))
	mux.Handle("DELETE /v1/apps/{app_key}/channels/{kind}", h(a.deleteChannel))
}

type appFunc func(w http.ResponseWriter, r *http.Request, app push.App) error

// appOwner authenticates a call about the app in the path: the admin token,
// or that app's own master secret (HTTP Basic app_key:master_secret).
func (a *API) appOwner(f appFunc) apierr.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.PathValue("app_key")
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			if err := a.admin(r); err != nil {
				return apierr.Unauthorized.With("use Authorization: Bearer <admin token>, or HTTP Basic with the app's app_key:master_secret")
			}
			app, err := a.reg.App(r.Context(), key)
			if err != nil {
				return appError(err)
			}
			return f(w, r, app)
		}
		user, secret, ok := r.BasicAuth()
		if !ok {
			return apierr.Unauthorized.With("use Authorization: Bearer <admin token>, or HTTP Basic with the app's app_key:master_secret")
		}
		app, err := a.reg.AuthApp(r.Context(), user, secret)
		if err != nil {
			return registryError(err)
		}
		if app.Key != key {
			return apierr.Unauthorized.With("an app's master secret is for that app only")
		}
		return f(w, r, app)
	}
}

func appError(err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return apierr.AppNotFound
	}
	return err
}

func channelError(err error) error {
	switch {
	case errors.Is(err, relay.ErrNoChannel):
		return apierr.ChannelNotFound
	case errors.Is(err, relay.ErrBadConfig):
		return apierr.BadChannelConfig.With("%s", detail(err, relay.ErrBadConfig))
	case errors.Is(err, relay.ErrUnreadable):
		return apierr.ChannelUnreadable
	}
	return err
}

func (a *API) putChannel(w http.ResponseWriter, r *http.Request, app push.App) error {
	body, err := apierr.ReadBody(r, a.opts.MaxBody)
	if err != nil {
		return err
	}
	v, err := a.opts.Channels.Put(r.Context(), app.Key, push.ChannelKind(r.PathValue("kind")), body)
	if err != nil {
		return channelError(err)
	}
	return apierr.WriteJSON(w, http.StatusOK, v)
}

func (a *API) getChannel(w http.ResponseWriter, r *http.Request, app push.App) error {
	v, err := a.opts.Channels.Get(r.Context(), app.Key, push.ChannelKind(r.PathValue("kind")))
	if err != nil {
		return channelError(err)
	}
	return apierr.WriteJSON(w, http.StatusOK, v)
}

func (a *API) deleteChannel(w http.ResponseWriter, r *http.Request, app push.App) error {
	if err := a.opts.Channels.Delete(r.Context(), app.Key, push.ChannelKind(r.PathValue("kind"))); err != nil {
		return channelError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// channelsView is GET /v1/apps/{app_key}/channels: the app's channel
// policy and each vendor channel's settings (null when not configured).
type channelsView struct {
	Routing relay.Routing `json:"routing"`
	APNs    relay.View    `json:"apns"`
	FCM     relay.View    `json:"fcm"`
	WebPush relay.View    `json:"webpush"`
}

func (a *API) listChannels(w http.ResponseWriter, r *http.Request, app push.App) error {
	ctx := r.Context()
	rt, err := a.opts.Channels.Routing(ctx, app.Key)
	if err != nil {
		return err
	}
	out := channelsView{Routing: rt}
	for kind, dst := range map[push.ChannelKind]*relay.View{push.ChannelAPNs: &out.APNs, push.ChannelFCM: &out.FCM, push.ChannelWebPush: &out.WebPush} {
		v, err := a.opts.Channels.Get(ctx, app.Key, kind)
		if err != nil && !errors.Is(err, relay.ErrNoChannel) {
			return channelError(err)
		}
		*dst = v
	}
	return apierr.WriteJSON(w, http.StatusOK, out)
}

func (a *API) setRouting(w http.ResponseWriter, r *http.Request, app push.App) error {
	ctx := r.Context()
	rt, err := a.opts.Channels.Routing(ctx, app.Key)
	if err != nil {
		return err
	}
	var req struct {
		Channel    *push.ChannelPolicy `json:"channel"`
		RelayAfter *int64              `json:"relay_after"`
	}
	if err := apierr.ReadJSON(r, a.opts.MaxBody, &req); err != nil {
		return err
	}
	if req.Channel != nil {
		rt.Channel = *req.Channel
	}
	if req.RelayAfter != nil {
		rt.RelayAfter = *req.RelayAfter
	}
	if err := a.opts.Channels.SetRouting(ctx, app.Key, rt); err != nil {
		return channelError(err)
	}
	return apierr.WriteJSON(w, http.StatusOK, rt)
}
