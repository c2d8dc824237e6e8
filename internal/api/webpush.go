package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/webpush"
)

// webPushAPI is the HTTP face of the push service (RFC 8030): a device
// manages its subscriptions under /v1/webpush/subscriptions, and
// application servers push to /wpush/{token}. docs/protocol.md documents
// both.
type webPushAPI struct {
	svc *webpush.Service   // never nil
	reg *registry.Registry // never nil
	api *API               // for its options; never nil
}

// registerWebPush mounts the push service's routes on mux.
func (a *API) registerWebPush(mux *http.ServeMux) {
	wp := &webPushAPI{
		svc: a.opts.WebPush, reg: a.reg, api: a,
	}
	h := func(f apierr.HandlerFunc) http.Handler { return apierr.Handle(a.log, f) }
	mux.Handle("POST /v1/webpush/subscriptions", h(wp.device(wp.subscribe)))
	mux.Handle("GET /v1/webpush/subscriptions", h(wp.device(wp.list)))
	mux.Handle("DELETE /v1/webpush/subscriptions/{id}", h(wp.device(wp.unsubscribe)))
	mux.Handle("POST /wpush/{token}", vapidChallenge(h(wp.push)))
	mux.Handle("DELETE /wpush/{token}/messages/{id}", h(wp.recall))
}

type deviceFunc func(w http.ResponseWriter, r *http.Request, d *push.Device) error

// device authenticates with HTTP Basic registration_id:device_secret.
func (wp *webPushAPI) device(f deviceFunc) apierr.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, secret, ok := r.BasicAuth()
		if !ok {
			return apierr.Unauthorized.With("use HTTP Basic with registration_id:device_secret")
		}
		d, err := wp.reg.AuthDevice(r.Context(), id, secret)
		if err != nil {
			return registryError(err)
		}
		return f(w, r, &d)
	}
}

// subscriptionView is a subscription as the API shows it. Endpoint and
// token appear only in the answer to its creation: the token is stored
// hashed, like a secret.
type subscriptionView struct {
	ID                   string    `json:"id"`
	Endpoint             string    `json:"endpoint,omitempty"`
	Token                string    `json:"token,omitempty"`
	ApplicationServerKey string    `json:"application_server_key,omitempty"`
	Label                string    `json:"label,omitempty"`
	CreatedAt            time.Time `json:"created_at"`
}

func subscriptionOf(s *store.Subscription) subscriptionView {
	v := subscriptionView{ID: s.ID, Label: s.Label, CreatedAt: s.CreatedAt}
	if s.AppServerKey != nil {
		v.ApplicationServerKey = webpush.EncodeKey(s.AppServerKey)
	}
	return v
}

func (wp *webPushAPI) subscribe(w http.ResponseWriter, r *http.Request, d *push.Device) error {
	body, err := apierr.ReadBody(r, wp.api.opts.MaxBody)
	if err != nil {
		return err
	}
	var req struct {
		ApplicationServerKey string `json:"application_server_key"`
		Label                string `json:"label"`
	}
	// The body is optional: no body is a subscription without a key.
	if len(bytes.TrimSpace(body)) > 0 {
		if err := apierr.DecodeJSON(body, &req); err != nil {
			return err
		}
	}
	c, err := wp.svc.Subscribe(r.Context(), d, req.ApplicationServerKey, req.Label)
	if err != nil {
		return webPushError(err)
	}
	v := subscriptionOf(&c.Subscription)
	v.Endpoint, v.Token = c.Endpoint, c.Token
	w.Header().Set("Location", c.Endpoint)
	return apierr.WriteJSON(w, http.StatusCreated, v)
}

func (wp *webPushAPI) list(w http.ResponseWriter, r *http.Request, d *push.Device) error {
	subs, err := wp.svc.Subscriptions(r.Context(), d)
	if err != nil {
		return err
	}
	out := struct {
		Subscriptions []subscriptionView `json:"subscriptions"`
	}{make([]subscriptionView, len(subs))}
	for i := range subs {
		out.Subscriptions[i] = subscriptionOf(&subs[i])
	}
	return apierr.WriteJSON(w, http.StatusOK, out)
}

func (wp *webPushAPI) unsubscribe(w http.ResponseWriter, r *http.Request, d *push.Device) error {
	if err := wp.svc.Unsubscribe(r.Context(), d, r.PathValue("id")); err != nil {
		return webPushError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// push is POST /wpush/{token}. It answers 201 with the push message
// resource in Location and the TTL it kept in TTL (RFC 8030 §5, §5.2).
func (wp *webPushAPI) push(w http.ResponseWriter, r *http.Request) error {
	// One byte more than the limit tells a body at the limit from one over
	// it; the service reports the size only after the subscription and its
	// credentials check out.
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(wp.svc.MaxBody())+1))
	if err != nil {
		return apierr.BadJSON.With("reading the body: %v", err)
	}
	res, err := wp.svc.Push(r.Context(), r.PathValue("token"), r.Header, body)
	if err != nil {
		return webPushError(err)
	}
	w.Header().Set("Location", res.Location)
	// Spelled as RFC 8030 spells it; Set would write "Ttl".
	w.Header()["TTL"] = []string{strconv.FormatInt(int64(res.TTL/time.Second), 10)}
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (wp *webPushAPI) recall(w http.ResponseWriter, r *http.Request) error {
	if err := wp.svc.Recall(r.Context(), r.PathValue("token"), r.PathValue("id")); err != nil {
		return webPushError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// webPushErrors maps the push service's errors onto the catalogue.
var webPushErrors = []mapping{
	{webpush.ErrNotFound, apierr.SubscriptionNotFound},
	{webpush.ErrGone, apierr.SubscriptionGone},
	{webpush.ErrNoVAPID, apierr.VAPIDRequired},
	{webpush.ErrBadVAPID, apierr.VAPIDInvalid},
	{webpush.ErrNoTTL, apierr.MissingTTL},
	{webpush.ErrBadTTL, apierr.BadTTL},
	{webpush.ErrBadUrgency, apierr.BadUrgency},
	{webpush.ErrBadTopic, apierr.BadTopic},
	{webpush.ErrBadHeader, apierr.BadHeader},
	{webpush.ErrTooLarge, apierr.PayloadTooLarge},
	{webpush.ErrNoMessage, apierr.MessageNotFound},
	{webpush.ErrBadKey, apierr.BadKey},
	{webpush.ErrBadLabel, apierr.BadName},
	{webpush.ErrTooManySubscriptions, apierr.TooManySubscriptions},
}

// webPushError maps the push service's errors onto the catalogue, keeping
// the service's detail as the message.
func webPushError(err error) error {
	if errors.Is(err, webpush.ErrNoVAPID) {
		return apierr.VAPIDRequired // its own message says what to send
	}
	return mapError(err, webPushErrors)
}

// vapidChallenge makes a 401 from a push endpoint name the vapid scheme
// (RFC 8292 §3): apierr.Write names Basic, the scheme of every other
// endpoint, and sets it just before the status goes out.
func vapidChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(challengeWriter{w}, r)
	})
}

type challengeWriter struct{ http.ResponseWriter }

func (w challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "vapid")
	}
	w.ResponseWriter.WriteHeader(code)
}
