package relay

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Errors of the channel settings.
var (
	// ErrNoChannel means the app has no settings for that vendor channel.
	ErrNoChannel = errors.New("relay: the app has no such channel configured")
	// ErrBadConfig wraps what is wrong with channel settings given to Put.
	ErrBadConfig = errors.New("relay: invalid channel settings")
)

// APNsConfig is an app's APNs settings: token-based authentication with a
// signing key from Apple's developer account.
type APNsConfig struct {
	KeyP8       string `json:"key_p8"`      // the .p8 file: a PEM PKCS#8 P-256 key
	KeyID       string `json:"key_id"`      // its 10-character key ID
	TeamID      string `json:"team_id"`     // the developer team's ID
	Topic       string `json:"topic"`       // the app's bundle ID
	Environment string `json:"environment"` // production or sandbox
	Endpoint    string `json:"endpoint,omitempty"`
}

// FCMConfig is an app's FCM settings: a service account's JSON key.
type FCMConfig struct {
	ServiceAccount json.RawMessage `json:"service_account"`
	Endpoint       string          `json:"endpoint,omitempty"`
}

// WebPushConfig is an app's Web Push settings: its VAPID key (RFC 8292).
type WebPushConfig struct {
	// VAPIDPrivateKey is the P-256 private scalar, 32 bytes in base64url;
	// generated when Put is given none.
	VAPIDPrivateKey string `json:"vapid_private_key,omitempty"`
	Subject         string `json:"subject"` // mailto: or https: contact for the push services
}

// Routing is an app's default channel policy.
type Routing struct {
	Channel    push.ChannelPolicy `json:"channel"`
	RelayAfter int64              `json:"relay_after"` // seconds an own_first push waits for an ack before it is relayed
}

// DefaultRouting is the policy of an app that set none.
var DefaultRouting = Routing{Channel: push.OwnFirst, RelayAfter: 30}

// View is what GET shows of a channel's settings: everything but secrets.
type View map[string]any

// Factory builds the Sender of one app's channel from its settings (the
// JSON of APNsConfig, FCMConfig or WebPushConfig), checking its keys. Only
// the server knows the concrete senders; it passes one in.
type Factory func(kind push.ChannelKind, config []byte) (Sender, error)

// cacheFor is how long a node uses a channel's settings before it reads
// them again: another node may have changed them (cluster mode).
const cacheFor = time.Minute

// Channels keeps the apps' vendor channel settings, sealed in the store,
// and the Senders built from them.
type Channels struct {
	store store.RelayStore
	box   *Box
	build Factory
	now   func() time.Time
	log   *slog.Logger

	mu       sync.Mutex
	senders  map[string]*senderEntry // by label(app, kind); guarded by mu
	routings map[string]routingEntry // by app; guarded by mu
}

type routingEntry struct {
	r      Routing
	readAt time.Time
}

type senderEntry struct {
	sealed  []byte // what the sender was built from
	sender  Sender
	err     error // the settings do not open or build
	readAt  time.Time
	broken  string // the vendor refused the credentials; empty while they work
	brokeAt time.Time
}

// NewChannels returns the channel settings over s, sealed with box.
func NewChannels(s store.RelayStore, box *Box, build Factory, log *slog.Logger) *Channels {
	if log == nil {
		log = slog.Default()
	}
	return &Channels{store: s, box: box, build: build, now: time.Now, log: log,
		senders: map[string]*senderEntry{}, routings: map[string]routingEntry{}}
}

// Kinds are the vendor channels an app can configure.
var Kinds = []push.ChannelKind{push.ChannelAPNs, push.ChannelFCM, push.ChannelWebPush}

// ValidKind reports whether k is one of Kinds.
func ValidKind(k push.ChannelKind) bool {
	return k == push.ChannelAPNs || k == push.ChannelFCM || k == push.ChannelWebPush
}

func label(app string, kind push.ChannelKind) string { return app + "/" + string(kind) }

// routingKind is where the store keeps an app's Routing, beside its
// channels (store.RelayStore.PutChannelConfig).
const routingKind = "delivery"

// Put checks and stores app's settings for kind, given as JSON, and
// returns what GET shows of them.
func (c *Channels) Put(ctx context.Context, app string, kind push.ChannelKind, body []byte) (View, error) {
	if !ValidKind(kind) {
		return nil, fmt.Errorf("%w: no channel %q (apns, fcm or webpush)", ErrBadConfig, kind)
	}
	config, err := normalize(kind, body)
	if err != nil {
		return nil, err
	}
	if _, err := c.build(kind, config); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if err := c.store.PutChannelConfig(ctx, app, string(kind), c.box.Seal(config, label(app, kind))); err != nil {
		return nil, err
	}
	c.mu.Lock()
	delete(c.senders, label(app, kind))
	c.mu.Unlock()
	c.log.Info("channel settings stored", "app", app, "channel", kind)
	return view(kind, config, nil), nil
}

// Get returns what app's settings for kind show without secrets, and the
// state of its credentials. ErrNoChannel if there are none.
func (c *Channels) Get(ctx context.Context, app string, kind push.ChannelKind) (View, error) {
	if !ValidKind(kind) {
		return nil, ErrNoChannel
	}
	config, err := c.open(ctx, app, kind)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	e := c.senders[label(app, kind)]
	c.mu.Unlock()
	return view(kind, config, e), nil
}

// Delete removes app's settings for kind. ErrNoChannel if there are none.
func (c *Channels) Delete(ctx context.Context, app string, kind push.ChannelKind) error {
	if !ValidKind(kind) {
		return ErrNoChannel
	}
	err := c.store.DeleteChannelConfig(ctx, app, string(kind))
	if errors.Is(err, store.ErrNotFound) {
		return ErrNoChannel
	}
	c.mu.Lock()
	delete(c.senders, label(app, kind))
	c.mu.Unlock()
	if err == nil {
		c.log.Info("channel settings deleted", "app", app, "channel", kind)
	}
	return err
}

func (c *Channels) open(ctx context.Context, app string, kind push.ChannelKind) ([]byte, error) {
	sealed, err := c.store.ChannelConfig(ctx, app, string(kind))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoChannel
	}
	if err != nil {
		return nil, err
	}
	return c.box.Open(sealed, label(app, kind))
}

// Routing returns app's channel policy: DefaultRouting unless it set one.
// It is read again after cacheFor, as the senders are: every push asks.
func (c *Channels) Routing(ctx context.Context, app string) (Routing, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.routings[app]
	c.mu.Unlock()
	if ok && now.Sub(e.readAt) < cacheFor {
		return e.r, nil
	}
	r, err := c.readRouting(ctx, app)
	if err != nil {
		return Routing{}, err
	}
	c.mu.Lock()
	c.routings[app] = routingEntry{r, now}
	c.mu.Unlock()
	return r, nil
}

func (c *Channels) readRouting(ctx context.Context, app string) (Routing, error) {
	b, err := c.store.ChannelConfig(ctx, app, routingKind)
	if errors.Is(err, store.ErrNotFound) {
		return DefaultRouting, nil
	}
	if err != nil {
		return Routing{}, err
	}
	var r Routing
	if err := json.Unmarshal(b, &r); err != nil {
		return Routing{}, fmt.Errorf("relay: stored routing of %s: %w", app, err)
	}
	return r, nil
}

// SetRouting stores app's channel policy.
func (c *Channels) SetRouting(ctx context.Context, app string, r Routing) error {
	if r.Channel == "" {
		r.Channel = DefaultRouting.Channel
	}
	if !r.Channel.Valid() {
		return fmt.Errorf("%w: channel must be own_first, vendor_first, own_only or vendor_only, not %q", ErrBadConfig, r.Channel)
	}
	if r.RelayAfter < 0 || r.RelayAfter > int64(push.MaxRelayAfter/time.Second) {
		return fmt.Errorf("%w: relay_after must be 0 to %d seconds", ErrBadConfig, int64(push.MaxRelayAfter/time.Second))
	}
	b, _ := json.Marshal(r)
	if err := c.store.PutChannelConfig(ctx, app, routingKind, b); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.routings, app)
	c.mu.Unlock()
	return nil
}

// Sender returns the Sender of app's channel kind, built once from its
// settings and read again after cacheFor (another node may have changed
// them). ErrNoChannel when the app has none; ErrCredentials, wrapped with
// the vendor's reason, once the vendor refused them (Broken) and until
// they are replaced.
func (c *Channels) Sender(ctx context.Context, app string, kind push.ChannelKind) (Sender, error) {
	l := label(app, kind)
	now := c.now()
	c.mu.Lock()
	e := c.senders[l]
	c.mu.Unlock()
	if e != nil && now.Sub(e.readAt) < cacheFor {
		return e.use()
	}
	sealed, err := c.store.ChannelConfig(ctx, app, string(kind))
	if errors.Is(err, store.ErrNotFound) {
		c.mu.Lock()
		delete(c.senders, l)
		c.mu.Unlock()
		return nil, ErrNoChannel
	}
	if err != nil {
		return nil, err // the store is down: not cached
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e != nil && bytes.Equal(e.sealed, sealed) {
		e.readAt = now // unchanged: keep the sender, its connection and its token
		return e.use()
	}
	ne := &senderEntry{sealed: sealed, readAt: now}
	config, err := c.box.Open(sealed, l)
	if err == nil {
		ne.sender, err = c.build(kind, config)
	}
	if err != nil {
		ne.err = fmt.Errorf("%w: %v", ErrCredentials, err)
		c.log.Error("channel settings unusable", "app", app, "channel", kind, "err", err)
	}
	c.senders[l] = ne
	return ne.use()
}

func (e *senderEntry) use() (Sender, error) {
	switch {
	case e.err != nil:
		return nil, e.err
	case e.broken != "":
		return nil, fmt.Errorf("%w: %s", ErrCredentials, e.broken)
	}
	return e.sender, nil
}

// Broken records that the vendor refused app's credentials for kind with
// reason: every message of the app would fail alike, so later sends fail
// at once (Sender) until the settings are replaced. It logs once.
func (c *Channels) Broken(app string, kind push.ChannelKind, reason string) {
	c.mu.Lock()
	e := c.senders[label(app, kind)]
	first := e != nil && e.broken == ""
	if first {
		e.broken, e.brokeAt = reason, c.now()
	}
	c.mu.Unlock()
	if first {
		c.log.Error("vendor refused the app's channel credentials; its relays fail until they are replaced",
			"app", app, "channel", kind, "reason", reason)
	}
}

// normalize decodes and checks settings, and returns them as they are
// stored: a Web Push key generated when none was given.
func normalize(kind push.ChannelKind, body []byte) ([]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadConfig, fmt.Sprintf(format, a...))
	}
	switch kind {
	case push.ChannelAPNs:
		var c APNsConfig
		if err := decodeStrict(body, &c); err != nil {
			return nil, bad("%v", err)
		}
		switch {
		case c.KeyP8 == "" || c.KeyID == "" || c.TeamID == "" || c.Topic == "":
			return nil, bad("apns needs key_p8, key_id, team_id and topic")
		case c.Environment == "":
			c.Environment = "production"
		case c.Environment != "production" && c.Environment != "sandbox":
			return nil, bad("environment must be production or sandbox, not %q", c.Environment)
		}
		if err := checkEndpoint(c.Endpoint); err != nil {
			return nil, bad("%v", err)
		}
		return json.Marshal(c)
	case push.ChannelFCM:
		var c FCMConfig
		if err := decodeStrict(body, &c); err != nil {
			return nil, bad("%v", err)
		}
		if len(c.ServiceAccount) == 0 || c.ServiceAccount[0] != '{' {
			return nil, bad("fcm needs service_account, the service account's JSON key as an object")
		}
		if err := checkEndpoint(c.Endpoint); err != nil {
			return nil, bad("%v", err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, c.ServiceAccount); err != nil {
			return nil, bad("service_account: %v", err)
		}
		c.ServiceAccount = compact.Bytes()
		return json.Marshal(c)
	case push.ChannelWebPush:
		var c WebPushConfig
		if err := decodeStrict(body, &c); err != nil {
			return nil, bad("%v", err)
		}
		if !strings.HasPrefix(c.Subject, "mailto:") && !strings.HasPrefix(c.Subject, "https://") {
			return nil, bad("subject must be a mailto: or https: URL, the contact push services use")
		}
		if c.VAPIDPrivateKey == "" {
			k, err := ecdh.P256().GenerateKey(nil)
			if err != nil {
				return nil, err
			}
			c.VAPIDPrivateKey = base64.RawURLEncoding.EncodeToString(k.Bytes())
		}
		if _, err := VAPIDKey(c.VAPIDPrivateKey); err != nil {
			return nil, bad("%v", err)
		}
		return json.Marshal(c)
	}
	return nil, bad("no channel %q", kind)
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// checkEndpoint checks an endpoint override: an https base URL. Trust in a
// test server's certificate comes from SSL_CERT_FILE, never from turning
// verification off.
func checkEndpoint(e string) error {
	if e == "" {
		return nil
	}
	u, err := url.Parse(e)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("endpoint must be an https base URL, not %q", e)
	}
	return nil
}

// VAPIDKey parses a VAPID private key given as base64url of the P-256
// scalar (the form web-push libraries print), padded or not.
func VAPIDKey(s string) (*ecdsa.PrivateKey, error) {
	d, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(d) != 32 {
		return nil, errors.New("vapid_private_key must be the 32-byte P-256 private key in base64url")
	}
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, errors.New("vapid_private_key is not a P-256 private key")
	}
	return k, nil
}

// view is what GET shows of config: its settings without the secrets, and
// e's state when the node has used it.
func view(kind push.ChannelKind, config []byte, e *senderEntry) View {
	v := View{"channel": string(kind)}
	switch kind {
	case push.ChannelAPNs:
		var c APNsConfig
		_ = json.Unmarshal(config, &c)
		v["key_id"], v["team_id"], v["topic"], v["environment"] = c.KeyID, c.TeamID, c.Topic, c.Environment
		if c.Endpoint != "" {
			v["endpoint"] = c.Endpoint
		}
	case push.ChannelFCM:
		var c FCMConfig
		_ = json.Unmarshal(config, &c)
		var sa struct {
			ProjectID   string `json:"project_id"`
			ClientEmail string `json:"client_email"`
		}
		_ = json.Unmarshal(c.ServiceAccount, &sa)
		v["project_id"], v["client_email"] = sa.ProjectID, sa.ClientEmail
		if c.Endpoint != "" {
			v["endpoint"] = c.Endpoint
		}
	case push.ChannelWebPush:
		var c WebPushConfig
		_ = json.Unmarshal(config, &c)
		v["subject"] = c.Subject
		if k, err := VAPIDKey(c.VAPIDPrivateKey); err == nil {
			if pk, err := k.PublicKey.ECDH(); err == nil {
				v["vapid_public_key"] = base64.RawURLEncoding.EncodeToString(pk.Bytes())
			}
		}
	}
	v["status"] = "ok"
	if e != nil && e.broken != "" {
		v["status"], v["broken_reason"], v["broken_at"] = "broken", e.broken, e.brokeAt.UTC()
	}
	return v
}
