// Package apns relays Herald's messages to Apple devices through the Apple
// Push Notification service: each message is posted over HTTP/2 to
// /3/device/{token}, authenticated with a provider token, an ES256 JWT
// signed with the app's .p8 key (Apple's "token-based connection").
package apns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
)

// Interface guards.
var _ relay.Sender = (*Sender)(nil)

// The APNs endpoints, one per environment.
const (
	Production = "https://api.push.apple.com"
	Sandbox    = "https://api.sandbox.push.apple.com"
)

// MaxPayload is the largest payload APNs takes for a regular (not VoIP)
// notification: a message is checked against it before it is sent.
const MaxPayload = 4096

// How long a provider token is used, and how often it may be replaced.
// Apple refuses a token issued more than an hour ago (403
// ExpiredProviderToken) and one replaced more often than every 20 minutes
// (TooManyProviderTokenUpdates).
const (
	TokenLifetime   = 50 * time.Minute
	TokenMinRefresh = 20 * time.Minute
)

// maxAnswer bounds how much of an answer's body is read.
const maxAnswer = 64 << 10

// Options configure a Sender.
type Options struct {
	// KeyP8 is the app's APNs authentication key as Apple hands it out: the
	// PEM of a PKCS#8 P-256 private key (the .p8 file). Required.
	KeyP8 []byte
	// KeyID is the key's 10-character identifier, the JWT's kid. Required.
	KeyID string
	// TeamID is the developer team's identifier, the JWT's iss. Required.
	TeamID string
	// Topic is the app's bundle ID, the apns-topic of every push. Required.
	Topic string
	// Endpoint is the base URL of the service; when empty, Production or
	// Sandbox as Environment says.
	Endpoint string
	// Environment is "production" (the default when empty) or "sandbox".
	Environment string
	// Client sends the requests. When nil, a client of its own keeps one
	// long-lived HTTP/2 connection to the service (as Apple asks: a new
	// connection per push is treated as an attack), trusting the system's
	// roots (SSL_CERT_FILE and SSL_CERT_DIR included), with a ping after a
	// minute of silence so that a dead connection is noticed.
	Client *http.Client
	// Now is the clock for the provider token; time.Now when nil.
	Now func() time.Time
}

// Sender sends one app's messages to APNs device tokens. It is safe for
// concurrent use; all sends share one provider token.
type Sender struct {
	opts     Options
	key      *ecdsa.PrivateKey
	endpoint string // without a trailing slash

	mu     sync.Mutex
	token  string    // the provider token, "" before the first send
	issued time.Time // its iat

	// Until a request has been answered there may be no connection, and
	// net/http dials once for each request waiting for one (keeping one
	// of the connections): a burst of sends on a new Sender would open
	// hundreds. So while connected is false one request goes alone and
	// the others wait for its answer (first is closed then).
	gate      sync.Mutex
	connected bool
	first     chan struct{} // non-nil while a request goes alone
}

// New returns a Sender for the app whose key, key ID, team and bundle ID o
// names.
func New(o Options) (*Sender, error) {
	key, err := ParseKey(o.KeyP8)
	if err != nil {
		return nil, err
	}
	switch {
	case o.KeyID == "":
		return nil, errors.New("apns: a key ID is required")
	case o.TeamID == "":
		return nil, errors.New("apns: a team ID is required")
	case o.Topic == "":
		return nil, errors.New("apns: a topic (the app's bundle ID) is required")
	}
	endpoint := o.Endpoint
	switch o.Environment {
	case "", "production":
		if endpoint == "" {
			endpoint = Production
		}
	case "sandbox":
		if endpoint == "" {
			endpoint = Sandbox
		}
	default:
		return nil, fmt.Errorf("apns: environment %q is neither production nor sandbox", o.Environment)
	}
	if u, err := url.Parse(endpoint); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("apns: the endpoint %q is not an http(s) URL", endpoint)
	}
	if o.Client == nil {
		o.Client = newClient()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sender{opts: o, key: key, endpoint: strings.TrimRight(endpoint, "/")}, nil
}

// ParseKey reads an APNs authentication key: the PEM of a PKCS#8 P-256
// private key.
func ParseKey(p8 []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(p8)
	if block == nil {
		return nil, errors.New("apns: the key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("apns: the key is not PKCS#8: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("apns: the key is not an EC P-256 key")
	}
	return ek, nil
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     time.Hour,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: time.Minute, PingTimeout: 15 * time.Second},
	}}
}

// Send posts m to APNs for the device token to.Token: an alert push when m
// has a notification, a background push otherwise (see Payload). It
// answers ExpiredProviderToken by replacing the provider token and sending
// once more, when the token may be replaced already; otherwise, and when
// the second send meets the same answer, it returns a *relay.RetryError
// for when it may.
func (s *Sender) Send(ctx context.Context, to relay.Target, m *push.Message) error {
	if to.Token == "" {
		return fmt.Errorf("%w: no APNs device token", relay.ErrRejected)
	}
	body, err := Payload(m)
	if err != nil {
		return err
	}
	tok, err := s.providerToken()
	if err != nil {
		return fmt.Errorf("%w: signing: %v", relay.ErrCredentials, err)
	}
	a, err := s.post(ctx, to.Token, tok, m, body)
	if err != nil {
		return err
	}
	if a.reason == "ExpiredProviderToken" {
		if tok, err = s.refresh(tok); err != nil {
			return err
		}
		if a, err = s.post(ctx, to.Token, tok, m, body); err != nil {
			return err
		}
		// A second ExpiredProviderToken (the clock is off) is retried
		// once the new token may be replaced in turn: see answer.
	}
	return s.answer(a, to)
}

// reply is what APNs answered to one post.
type reply struct {
	status    int
	reason    string // the body's reason, "" when it gave none
	timestamp int64  // the body's timestamp, in ms since the epoch; 0 when absent
	header    http.Header
}

// post sends one request and reads its answer; its error is the network's
// (a *relay.RetryError) or the context's.
func (s *Sender) post(ctx context.Context, token, providerToken string, m *push.Message, body []byte) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", s.endpoint+"/3/device/"+url.PathEscape(token), bytes.NewReader(body))
	if err != nil {
		return reply{}, fmt.Errorf("%w: %v", relay.ErrRejected, err)
	}
	h := req.Header
	h.Set("Authorization", "bearer "+providerToken)
	h.Set("Content-Type", "application/json")
	h.Set("Apns-Topic", s.opts.Topic)
	h.Set("Apns-Push-Type", pushType(m))
	h.Set("Apns-Priority", priority(m))
	h.Set("Apns-Expiration", expiration(m))
	h.Set("Apns-Id", ID(m.ID))
	if m.CollapseID != "" {
		h.Set("Apns-Collapse-Id", relay.APNsCollapseID(m.CollapseID))
	}
	alone, err := s.wait(ctx)
	if err != nil {
		return reply{}, err
	}
	resp, err := s.opts.Client.Do(req)
	if alone || err != nil {
		s.answered(alone, err == nil)
	}
	if err != nil {
		if ctx.Err() != nil {
			return reply{}, ctx.Err()
		}
		return reply{}, &relay.RetryError{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil && ctx.Err() != nil {
		return reply{}, ctx.Err()
	}
	a := reply{status: resp.StatusCode, header: resp.Header}
	var detail struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp"`
	}
	if json.Unmarshal(raw, &detail) == nil {
		a.reason, a.timestamp = detail.Reason, detail.Timestamp
	}
	return a, nil
}

// wait returns once a request may go: at once when APNs has answered
// one already, else after the request going alone is answered, or (alone
// true) when it is to be that request.
func (s *Sender) wait(ctx context.Context) (alone bool, err error) {
	s.gate.Lock()
	if s.connected {
		s.gate.Unlock()
		return false, nil
	}
	if s.first == nil {
		s.first = make(chan struct{})
		s.gate.Unlock()
		return true, nil
	}
	first := s.first
	s.gate.Unlock()
	select {
	case <-first:
		// Answered or not, the waiting requests go: when the service
		// cannot be reached, each finds out for itself.
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// answered records that a request was answered (ok) or met a network
// error, and lets the waiting requests go when it went alone. After a
// network error the connection may be lost: the next request goes alone.
func (s *Sender) answered(alone, ok bool) {
	s.gate.Lock()
	defer s.gate.Unlock()
	s.connected = ok
	if alone {
		close(s.first)
		s.first = nil
	}
}

// answer maps APNs's answer onto the relay's errors, as Apple's "Handling
// notification responses from APNs" documents its statuses and reasons.
// The reason decides where the status alone would mislead: a token that
// is bad (400 BadDeviceToken, DeviceTokenNotForTopic) is gone, an idle
// connection (400 IdleTimeout) or too many token updates (429, or 403 as
// some answer it) is retried.
func (s *Sender) answer(a reply, to relay.Target) error {
	code, reason := a.status, a.reason
	what := fmt.Sprintf("APNs %d %s", code, reason)
	switch {
	case code >= 200 && code < 300:
		return nil
	case reason == "BadDeviceToken" || reason == "DeviceTokenNotForTopic":
		return fmt.Errorf("%w: %s", relay.ErrGone, what)
	case code == http.StatusGone:
		// Unregistered, ExpiredToken: APNs says when it learnt the token
		// was invalid. A token the device registered after that is valid
		// again (the app was reinstalled, say) and stays.
		if a.timestamp > 0 && !to.Since.IsZero() {
			if at := time.UnixMilli(a.timestamp); !at.After(to.Since) {
				return fmt.Errorf("%w: %s at %s, but the token was registered again at %s", relay.ErrRejected,
					what, at.UTC().Format(time.RFC3339Nano), to.Since.UTC().Format(time.RFC3339Nano))
			}
		}
		return fmt.Errorf("%w: %s", relay.ErrGone, what)
	case reason == "ExpiredProviderToken":
		// Send replaced the token, or could not yet: retried once it may.
		return &relay.RetryError{After: s.refreshIn(), Err: errors.New(what)}
	case reason == "TooManyProviderTokenUpdates" || reason == "IdleTimeout" ||
		code == http.StatusTooManyRequests || code >= 500:
		return &relay.RetryError{After: relay.RetryAfter(a.header.Get("Retry-After"), s.opts.Now()), Err: errors.New(what)}
	case code == http.StatusForbidden:
		// InvalidProviderToken, MissingProviderToken, BadCertificate,
		// BadCertificateEnvironment, Forbidden, UnrelatedKeyIdInToken,
		// BadEnvironmentKeyIdInToken.
		return fmt.Errorf("%w: %s", relay.ErrCredentials, what)
	default: // 400, 404, 405, 413: this message will not pass however often it is sent
		return fmt.Errorf("%w: %s", relay.ErrRejected, what)
	}
}

// providerToken returns the provider token, made anew when there is none
// or the one there is was issued TokenLifetime ago.
func (s *Sender) providerToken() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if s.token != "" && now.Sub(s.issued) < TokenLifetime {
		return s.token, nil
	}
	return s.sign(now)
}

// refresh replaces the provider token stale that APNs called expired and
// returns its successor: the token another send made already, or a new
// one when stale is at least TokenMinRefresh old; otherwise a
// *relay.RetryError for when it will be.
func (s *Sender) refresh(stale string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != stale {
		return s.token, nil
	}
	now := s.opts.Now()
	if age := now.Sub(s.issued); age < TokenMinRefresh {
		return "", &relay.RetryError{After: TokenMinRefresh - age,
			Err: errors.New("APNs 403 ExpiredProviderToken, and the provider token may not be replaced yet")}
	}
	tok, err := s.sign(now)
	if err != nil {
		return "", fmt.Errorf("%w: signing: %v", relay.ErrCredentials, err)
	}
	return tok, nil
}

// refreshIn is how long until the provider token may be replaced.
func (s *Sender) refreshIn() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(TokenMinRefresh-s.opts.Now().Sub(s.issued), 0)
}

// sign makes a provider token issued at now; s.mu is held.
func (s *Sender) sign(now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": s.opts.TeamID, "iat": now.Unix()})
	t.Header["kid"] = s.opts.KeyID
	tok, err := t.SignedString(s.key)
	if err != nil {
		return "", err
	}
	s.token, s.issued = tok, now
	return tok, nil
}

// aps is the payload's Apple dictionary.
type aps struct {
	Alert            *alert `json:"alert,omitempty"`
	Badge            *int   `json:"badge,omitempty"`
	Sound            string `json:"sound,omitempty"`
	ContentAvailable int    `json:"content-available,omitempty"`
	MutableContent   int    `json:"mutable-content,omitempty"`
}

type alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type payload struct {
	APS     aps             `json:"aps"`
	ID      string          `json:"id"`
	Extras  json.RawMessage `json:"extras,omitempty"`
	Message json.RawMessage `json:"message,omitempty"`
}

// Payload is the JSON body APNs receives for m. A message with a
// notification is an alert,
//
//	{"aps":{"alert":{"title":…,"body":…},"badge":…,"sound":…,"mutable-content":1},"id":…,"extras":{…},"message":…}
//
// its badge, sound, extras and message there when m has them;
// mutable-content is always set, so that the app's Notification Service
// Extension may change what is shown (and read the message). A message
// with data alone is a background push,
//
//	{"aps":{"content-available":1},"id":…,"message":…}
//
// Either way "id" is the Herald message ID, which the client uses to drop
// a copy that came another way. Payload fails with relay.ErrRejected when
// the body would pass MaxPayload.
func Payload(m *push.Message) ([]byte, error) {
	p := payload{ID: m.ID, Message: m.Data}
	if n := m.Notification; n != nil {
		p.APS = aps{Badge: n.Badge, Sound: n.Sound, MutableContent: 1}
		if n.Title != "" || n.Body != "" {
			p.APS.Alert = &alert{Title: n.Title, Body: n.Body}
		}
		p.Extras = n.Extras
	} else {
		p.APS.ContentAvailable = 1
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // <, > and & as themselves: 1 byte, not 6, of the 4,096
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("%w: %v", relay.ErrRejected, err)
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(body) > MaxPayload {
		return nil, fmt.Errorf("%w: a payload of %d bytes, and APNs takes %d", relay.ErrRejected, len(body), MaxPayload)
	}
	return body, nil
}

func pushType(m *push.Message) string {
	if m.Notification != nil {
		return "alert"
	}
	return "background"
}

// priority is 10 (at once) for an alert, 5 (when the device sees fit) for
// an alert of normal priority and for every background push, which Apple
// refuses at 10.
func priority(m *push.Message) string {
	if m.Notification != nil && m.Priority != push.PriorityNormal {
		return "10"
	}
	return "5"
}

// expiration is when APNs gives up on m, in seconds since the epoch; 0,
// "now or never" (no copy stored for an offline device), when m has no
// TTL or no expiry.
func expiration(m *push.Message) string {
	if m.TTL <= 0 || m.ExpiresAt.IsZero() {
		return "0"
	}
	return strconv.FormatInt(m.ExpiresAt.Unix(), 10)
}

// ID is the apns-id of the message whose Herald ID is id: a UUID made of
// the first 16 bytes of id's SHA-256, with the version (8, RFC 9562 §5.8,
// the version for name-based UUIDs on hashes other than MD5 and SHA-1) and
// variant bits set, in the lower-case 8-4-4-4-12 form. A message sent
// again carries the same apns-id, so APNs and Apple's delivery logs tie
// the copies together.
func ID(id string) string {
	sum := sha256.Sum256([]byte(id))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
