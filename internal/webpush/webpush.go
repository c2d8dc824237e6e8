// Package webpush makes Herald a push service in the sense of RFC 8030: a
// device creates push subscriptions, each an endpoint URL
// (/wpush/{token}) that it hands to an application server; a push sent to
// the endpoint with any Web Push library lands in the device's inbox as an
// ordinary Herald message, and reaches it over whichever transport it uses.
// A subscription created with an application server key accepts only
// pushes signed by that key (VAPID, RFC 8292).
//
// The body is passed through opaque: Herald never decrypts it. The device
// holds the RFC 8291 keys and decrypts (client.WebPushKeys does).
//
// The package is core: the HTTP surface (api) and the Mozilla push gateway
// share it, each building a Service over the registry and delivery.
package webpush

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/store"
)

// Errors of the push service, besides those of the headers and of VAPID.
var (
	// ErrNotFound means no subscription has that token (or, for
	// Unsubscribe, the device has none with that ID or token).
	ErrNotFound = errors.New("webpush: no such subscription")
	// ErrGone means the subscription was revoked or its device deleted.
	ErrGone = errors.New("webpush: subscription gone")
	// ErrTooLarge means the body is over the limit (Options.MaxBody).
	ErrTooLarge = errors.New("webpush: push message too large")
	// ErrNoMessage means the subscription has no such message to recall.
	ErrNoMessage = errors.New("webpush: no such push message")
	// ErrTooManySubscriptions means the device has the most live
	// subscriptions it may have (Options.MaxSubscriptions).
	ErrTooManySubscriptions = errors.New("webpush: too many subscriptions")
	// ErrBadLabel means a label is too long or not UTF-8.
	ErrBadLabel = errors.New("webpush: invalid label")
)

// Defaults of Options.
const (
	// DefaultMaxBody is the body size RFC 8030 §7.2 says a push service
	// must accept at least, and the one Web Push libraries assume.
	DefaultMaxBody = 4096
	// DefaultMaxTTL is the longest a push waits, as for provider pushes.
	DefaultMaxTTL = 30 * 24 * time.Hour
	// DefaultMaxSubscriptions bounds a device's live subscriptions: a
	// browser has one per service worker scope, so a hundred is plenty.
	DefaultMaxSubscriptions = 100
	// MaxLabelLen bounds a subscription's label, in bytes.
	MaxLabelLen = 128
	// maxEncHeader bounds each encryption header kept with a message.
	maxEncHeader = 1024
)

// CollapsePrefix begins the collapse ID of every push that carries a Topic:
// "webpush/<subscription ID>/<topic>". It keeps topics apart from provider
// collapse IDs and per subscription, as RFC 8030 §5.4 scopes them.
const CollapsePrefix = "webpush/"

// Options configure a Service. Zero fields take the defaults.
type Options struct {
	// BaseURL is the public base URL of the HTTP listener: endpoints are
	// BaseURL/wpush/{token}, and a VAPID JWT's aud must be its origin.
	BaseURL          string
	MaxBody          int
	MaxTTL           time.Duration
	MaxSubscriptions int
	Now              func() time.Time // time.Now when nil
	// Admit, when set, is asked once a push has passed every check and
	// before it is stored, with the app it is for; an error refuses the
	// push and Push returns it as it is. The API charges the app's push
	// rate here, so that a push nobody may make costs nothing.
	Admit func(app string) error
}

// Service is the push service. It holds no state of its own, so any number
// of them may share a registry and a delivery service.
type Service struct {
	reg    *registry.Registry // never nil
	deliv  *delivery.Service  // never nil
	opts   Options            // defaults filled in; immutable
	base   string             // BaseURL without a trailing slash
	origin string             // BaseURL's origin, what aud must be
}

// New returns a push service over reg and deliv.
func New(reg *registry.Registry, deliv *delivery.Service, o Options) *Service {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	base := strings.TrimRight(o.BaseURL, "/")
	// The origin ignores a path (Herald behind a proxy under a prefix). A
	// base URL that has none makes every VAPID push fail, loudly.
	origin := "(no origin: the base URL " + base + " is not an http or https URL)"
	if u, err := url.Parse(base); err == nil {
		u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
		if o, err := Origin(u.String()); err == nil {
			origin = o
		}
	}
	return &Service{reg: reg, deliv: deliv, opts: o, base: base, origin: origin}
}

// MaxBody is the largest body a push may have, in bytes.
func (s *Service) MaxBody() int { return s.opts.MaxBody }

// Endpoint returns the endpoint URL of a subscription token.
func (s *Service) Endpoint(token string) string { return s.base + "/wpush/" + token }

// MessageURL returns the URL of a push message resource: DELETE on it
// recalls the message (RFC 8030 §5 calls it the push message resource).
func (s *Service) MessageURL(token, msgID string) string {
	return s.Endpoint(token) + "/messages/" + msgID
}

// Created is a new subscription with its token, which is shown only now.
type Created struct {
	store.Subscription
	Token    string
	Endpoint string
}

// Subscribe creates a push subscription for device d. key is the
// application server key (base64url, padded or not) whose VAPID signature
// every push must then carry; "" accepts unsigned pushes. label is the
// device's own name for the subscription, returned with every push to it.
func (s *Service) Subscribe(ctx context.Context, d *push.Device, key, label string) (Created, error) {
	var k []byte
	if key != "" {
		var err error
		if k, err = DecodeKey(key); err != nil {
			return Created{}, err
		}
	}
	if len(label) > MaxLabelLen || !validLabel(label) {
		return Created{}, fmt.Errorf("%w: a label is at most %d bytes of UTF-8 without control characters", ErrBadLabel, MaxLabelLen)
	}
	live, err := s.Subscriptions(ctx, d)
	if err != nil {
		return Created{}, err
	}
	// Two concurrent calls may both pass this check: the bound is there to
	// stop a runaway client, not to be exact.
	if len(live) >= s.opts.MaxSubscriptions {
		return Created{}, fmt.Errorf("%w: a device has at most %d; revoke one first", ErrTooManySubscriptions, s.opts.MaxSubscriptions)
	}
	sub, token, err := s.reg.Subscribe(ctx, d, k, label)
	if errors.Is(err, registry.ErrNotFound) {
		return Created{}, ErrGone
	}
	if err != nil {
		return Created{}, err
	}
	return Created{Subscription: sub, Token: token, Endpoint: s.Endpoint(token)}, nil
}

func validLabel(l string) bool {
	if err := push.ValidName(l); l != "" && err != nil {
		return false
	}
	return true
}

// Subscriptions returns d's live subscriptions, oldest first. The store
// reads the live ones only: a device that revoked thousands subscribes as
// fast as a new one.
func (s *Service) Subscriptions(ctx context.Context, d *push.Device) ([]store.Subscription, error) {
	subs, err := s.reg.Subscriptions(ctx, d.ID)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(subs, func(a, b store.Subscription) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return subs, nil
}

// Unsubscribe revokes d's subscription named by its ID or by its token: a
// push to it is answered 410 Gone from now on. Messages it already brought
// stay in the inbox. Revoking a revoked subscription is not an error.
func (s *Service) Unsubscribe(ctx context.Context, d *push.Device, idOrToken string) error {
	id := idOrToken
	if sub, err := s.reg.Subscription(ctx, idOrToken); err == nil && sub.Device == d.ID {
		id = sub.ID
	} else if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	err := s.reg.RevokeSubscription(ctx, d.ID, id)
	if errors.Is(err, registry.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// Result is an accepted push.
type Result struct {
	MsgID    string
	TTL      time.Duration // as kept: the request's, lowered to the limit
	Location string        // the push message resource
}

// Push accepts a push message sent to the endpoint of token (RFC 8030 §5):
// h are the request's headers, body its opaque body. Checks run in this
// order, so that a caller learns no more than it may: the subscription
// (ErrNotFound, ErrGone), its VAPID credentials when it has a key
// (ErrNoVAPID, ErrBadVAPID), then the headers and the size, then
// Options.Admit. It returns once the message is durable in the device's
// inbox.
func (s *Service) Push(ctx context.Context, token string, h http.Header, body []byte) (Result, error) {
	sub, d, err := s.live(ctx, token)
	if err != nil {
		return Result{}, err
	}
	if sub.AppServerKey != nil {
		c, err := ParseVAPID(h.Get("Authorization"), strings.Join(h.Values("Crypto-Key"), ","))
		if err != nil {
			return Result{}, err
		}
		if err := Verify(c, sub.AppServerKey, s.origin, s.opts.Now()); err != nil {
			return Result{}, err
		}
	}
	ttl, err := ParseTTL(h.Get("TTL"), s.opts.MaxTTL)
	if err != nil {
		return Result{}, err
	}
	urgency, err := ParseUrgency(h.Get("Urgency"))
	if err != nil {
		return Result{}, err
	}
	_, hasTopic := h["Topic"]
	topic, err := ParseTopic(h.Get("Topic"), hasTopic)
	if err != nil {
		return Result{}, err
	}
	if len(body) > s.opts.MaxBody {
		return Result{}, fmt.Errorf("%w: the body is over %d bytes", ErrTooLarge, s.opts.MaxBody)
	}
	p := Payload{Subscription: sub.ID, Label: sub.Label, Urgency: urgency, Topic: topic}
	if len(body) > 0 {
		p.Data = base64.RawURLEncoding.EncodeToString(body)
	}
	for _, name := range []string{"Content-Encoding", "Encryption", "Crypto-Key"} {
		v := strings.Join(h.Values(name), ",")
		if v == "" {
			continue
		}
		if len(v) > maxEncHeader {
			return Result{}, fmt.Errorf("%w: %s is over %d bytes", ErrBadHeader, name, maxEncHeader)
		}
		if p.Headers == nil {
			p.Headers = map[string]string{}
		}
		p.Headers[strings.ToLower(name)] = v
	}
	data, err := json.Marshal(envelope{WebPush: &p})
	if err != nil {
		return Result{}, err
	}
	m := &push.Message{
		App:      sub.App,
		Audience: push.Audience{RegistrationIDs: []string{d.ID}},
		Data:     data,
		TTL:      ttl,
		Priority: push.PriorityNormal,
	}
	if urgency == High {
		m.Priority = push.PriorityHigh
	}
	if topic != "" {
		m.CollapseID = CollapsePrefix + sub.ID + "/" + topic
	}
	if s.opts.Admit != nil {
		if err := s.opts.Admit(sub.App); err != nil {
			return Result{}, err
		}
	}
	if err := s.deliv.PushMessage(ctx, m, []string{d.ID}); err != nil {
		return Result{}, err
	}
	return Result{MsgID: m.ID, TTL: m.TTL, Location: s.MessageURL(token, m.ID)}, nil
}

// live returns the live subscription of token and its device.
func (s *Service) live(ctx context.Context, token string) (store.Subscription, push.Device, error) {
	sub, err := s.reg.Subscription(ctx, token)
	if errors.Is(err, registry.ErrNotFound) {
		return store.Subscription{}, push.Device{}, ErrNotFound
	}
	if err != nil {
		return store.Subscription{}, push.Device{}, err
	}
	if sub.Revoked() {
		return store.Subscription{}, push.Device{}, ErrGone
	}
	d, err := s.reg.Device(ctx, sub.App, sub.Device)
	if errors.Is(err, registry.ErrNotFound) {
		return store.Subscription{}, push.Device{}, ErrGone
	}
	return sub, d, err
}

// Recall withdraws a push message sent to the endpoint of token, which has
// not reached the device yet (RFC 8030: DELETE on the push message
// resource). The resource URL, with its unguessable message ID, is the
// capability: it needs no VAPID signature, and works after the
// subscription is revoked. ErrNotFound for an unknown token, ErrNoMessage
// for a message that is not this subscription's or no longer exists.
func (s *Service) Recall(ctx context.Context, token, msgID string) error {
	sub, err := s.reg.Subscription(ctx, token)
	if errors.Is(err, registry.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	m, err := s.deliv.Message(ctx, sub.App, msgID)
	if errors.Is(err, delivery.ErrNotFound) {
		return ErrNoMessage
	}
	if err != nil {
		return err
	}
	if p, ok := Decode(&m); !ok || p.Subscription != sub.ID || !slices.Equal(m.Audience.RegistrationIDs, []string{sub.Device}) {
		return ErrNoMessage
	}
	err = s.deliv.Recall(ctx, sub.App, msgID)
	if errors.Is(err, delivery.ErrNotFound) {
		return ErrNoMessage
	}
	return err
}

// Payload is the pass-through "message" of a push that came through a
// Web Push endpoint, under the key "webpush": what a device needs to hand
// it to its consumer and decrypt it. docs/protocol.md documents it.
type Payload struct {
	Subscription string            `json:"subscription"`      // the subscription's ID
	Label        string            `json:"label,omitempty"`   // the subscription's label
	Data         string            `json:"data,omitempty"`    // the body, base64url without padding; absent when empty
	Headers      map[string]string `json:"headers,omitempty"` // content-encoding, and for aesgcm encryption and crypto-key; names lower-case
	Urgency      Urgency           `json:"urgency"`
	Topic        string            `json:"topic,omitempty"`
}

type envelope struct {
	WebPush *Payload `json:"webpush"`
}

// Decode returns the Web Push payload of m, and false when m did not come
// through a Web Push endpoint.
func Decode(m *push.Message) (*Payload, bool) {
	var e envelope
	if len(m.Data) == 0 || json.Unmarshal(m.Data, &e) != nil || e.WebPush == nil || e.WebPush.Subscription == "" {
		return nil, false
	}
	return e.WebPush, true
}

// Body returns the body of p, decoded.
func (p *Payload) Body() ([]byte, error) { return base64.RawURLEncoding.DecodeString(p.Data) }
