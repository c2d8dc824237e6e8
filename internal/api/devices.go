package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
)

type registerRequest struct {
	AppKey   string        `json:"app_key"`
	Platform push.Platform `json:"platform"`
	Alias    string        `json:"alias,omitempty"`
	Tags     []string      `json:"tags,omitempty"`
	channelFields
}

// channelFields name a device's channel, at registration and in a PATCH.
type channelFields struct {
	APNsToken string               `json:"apns_token,omitempty"`
	FCMToken  string               `json:"fcm_token,omitempty"`
	WebPush   *webPushSubscription `json:"webpush,omitempty"`
}

// webPushSubscription is the JSON of a browser's PushSubscription.
type webPushSubscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// given reports whether any channel field is set.
func (f *channelFields) given() bool {
	return f.APNsToken != "" || f.FCMToken != "" || f.WebPush != nil
}

// channel checks the fields (push.NewChannel) and builds the channel.
func (f *channelFields) channel() (push.Channel, error) {
	var wp *push.WebPushSubscription
	if f.WebPush != nil {
		wp = &push.WebPushSubscription{Endpoint: f.WebPush.Endpoint, P256DH: f.WebPush.Keys.P256DH, Auth: f.WebPush.Keys.Auth}
	}
	ch, err := push.NewChannel(f.APNsToken, f.FCMToken, wp)
	if err != nil {
		return push.Channel{}, registryError(err)
	}
	return ch, nil
}

// deviceView is a device as the API shows it; never its secret.
type deviceView struct {
	RegistrationID string        `json:"registration_id"`
	AppKey         string        `json:"app_key"`
	Platform       push.Platform `json:"platform"`
	Alias          string        `json:"alias,omitempty"`
	Tags           []string      `json:"tags"`
	Channel        push.Channel  `json:"channel"`
	CreatedAt      time.Time     `json:"created_at"`
	UpdatedAt      time.Time     `json:"updated_at"`
}

func viewOf(d *push.Device) deviceView {
	tags := d.Tags
	if tags == nil {
		tags = []string{}
	}
	return deviceView{
		RegistrationID: d.ID, AppKey: d.App, Platform: d.Platform, Alias: d.Alias, Tags: tags,
		Channel: d.Channel, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

// registered is the answer to a registration: the device, its secret (shown
// once) and where to connect.
type registered struct {
	deviceView
	DeviceSecret string      `json:"device_secret"`
	Connect      connectInfo `json:"connect"`
}

type connectInfo struct {
	Inbox       string    `json:"inbox"`          // GET to poll, ?wait=N to long-poll
	Ack         string    `json:"ack"`            // POST {"ids":[...]}
	WebSocket   string    `json:"websocket"`      // the device WebSocket (docs/protocol.md)
	Stream      string    `json:"stream"`         // Server-Sent Events; acks go to Ack
	Credentials string    `json:"credentials"`    // how to authenticate
	MQTT        *mqttInfo `json:"mqtt,omitempty"` // MQTT over TCP or TLS, when a listener is on
	// MQTTWebSocket is MQTT over WebSocket (subprotocol mqtt), on the HTTP
	// listener whether or not an MQTT listener is on.
	MQTTWebSocket string `json:"mqtt_websocket,omitempty"`
}

type mqttInfo struct {
	URL      string `json:"url"` // the one to use: MQTTS when it is on
	ClientID string `json:"client_id"`
	Username string `json:"username"`
	Topic    string `json:"topic"`
	QoS      int    `json:"qos"`
	// URLs lists every MQTT listener: tcp, tls, websocket.
	URLs map[string]string `json:"urls"`
}

func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := apierr.ReadJSON(r, a.opts.MaxBody, &req); err != nil {
		return err
	}
	if req.AppKey == "" {
		return apierr.BadJSON.With("app_key is required")
	}
	// The app key is public, so registration is limited per address; an
	// app server that proves the master secret (bulk imports, load tests)
	// is not.
	if key, secret, ok := r.BasicAuth(); ok {
		app, err := a.reg.AuthApp(r.Context(), key, secret)
		if err != nil {
			return registryError(err)
		}
		if app.Key != req.AppKey {
			return apierr.Unauthorized.With("the credentials are for another app")
		}
	} else if wait, ok := a.limiter.allow(r, time.Now()); !ok {
		return apierr.RateLimited.RetryIn(wait).With("too many registrations from this address; retry in %s", wait.Round(time.Millisecond))
	}
	ch, err := req.channel()
	if err != nil {
		return err
	}
	d, secret, err := a.reg.Register(r.Context(), registry.Registration{
		AppKey: req.AppKey, Platform: req.Platform, Alias: req.Alias, Tags: req.Tags, Channel: ch,
	})
	if errors.Is(err, registry.ErrNotFound) {
		return apierr.AppNotFound.With("no app with key %q", req.AppKey)
	}
	if errors.Is(err, registry.ErrInvalid) && !req.Platform.Valid() {
		return apierr.BadPlatform.With("platform must be android, ios, web or other, not %q", req.Platform)
	}
	if err != nil {
		return registryError(err)
	}
	out := registered{deviceView: viewOf(&d), DeviceSecret: secret, Connect: connectInfo{
		Inbox:       a.opts.Links.HTTP + "/v1/inbox",
		Ack:         a.opts.Links.HTTP + "/v1/inbox/ack",
		WebSocket:   a.opts.Links.WS,
		Stream:      a.opts.Links.HTTP + "/v1/inbox/stream",
		Credentials: "HTTP Basic registration_id:device_secret (WebSocket and SSE also take ?registration_id=&device_secret=)",
	}}
	l := a.opts.Links
	out.Connect.MQTTWebSocket = l.MQTTWS
	if l.MQTT != "" {
		urls := map[string]string{}
		for name, u := range map[string]string{"tcp": l.MQTTTCP, "tls": l.MQTTTLS, "websocket": l.MQTTWS} {
			if u != "" {
				urls[name] = u
			}
		}
		out.Connect.MQTT = &mqttInfo{URL: l.MQTT, ClientID: d.ID, Username: d.ID, Topic: "devices/" + d.ID, QoS: 1, URLs: urls}
	}
	return apierr.WriteJSON(w, http.StatusCreated, out)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request, app push.App) error {
	d, err := a.reg.Device(r.Context(), app.Key, r.PathValue("id"))
	if err != nil {
		return registryError(err)
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		deviceView
		// Sessions are the device's live connections on this node (a
		// cluster's other nodes are not asked).
		Sessions []sessionView `json:"sessions"`
	}{viewOf(&d), a.sessionsOf(d.ID)})
}

func (a *API) patchDevice(w http.ResponseWriter, r *http.Request, app push.App) error {
	var req struct {
		Alias      *string   `json:"alias"`
		Tags       *[]string `json:"tags"`
		AddTags    []string  `json:"add_tags"`
		RemoveTags []string  `json:"remove_tags"`
		// A channel field replaces the device's channel.
		channelFields
	}
	if err := apierr.ReadJSON(r, a.opts.MaxBody, &req); err != nil {
		return err
	}
	p := registry.Patch{Alias: req.Alias, Tags: req.Tags, AddTags: req.AddTags, RemoveTags: req.RemoveTags}
	if req.given() {
		ch, err := req.channel()
		if err != nil {
			return err
		}
		p.Channel = &ch
	}
	d, err := a.reg.Update(r.Context(), app.Key, r.PathValue("id"), p)
	if err != nil {
		return registryError(err)
	}
	a.delivery.DeviceChanged(&d)
	return apierr.WriteJSON(w, http.StatusOK, viewOf(&d))
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, app push.App) error {
	id := r.PathValue("id")
	if err := a.reg.Delete(r.Context(), app.Key, id); err != nil {
		return registryError(err)
	}
	a.delivery.DeviceDeleted(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) alias(w http.ResponseWriter, r *http.Request, app push.App) error {
	ds, err := a.reg.Alias(r.Context(), app.Key, r.PathValue("alias"))
	if err != nil {
		return err
	}
	views := make([]deviceView, 0, len(ds))
	for i := range ds {
		views = append(views, viewOf(&ds[i]))
	}
	return apierr.WriteJSON(w, http.StatusOK, struct {
		Alias   string       `json:"alias"`
		Devices []deviceView `json:"devices"`
	}{r.PathValue("alias"), views})
}
