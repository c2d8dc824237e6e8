// Package fcm relays Herald's messages to Android, iOS and web devices
// through Firebase Cloud Messaging's HTTP v1 API: each message is posted to
// projects/{project}/messages:send with an OAuth 2.0 access token, which
// the app's service account key obtains by the JWT bearer grant (RFC 7523)
// from the key's own token_uri and which is kept until shortly before it
// expires.
package fcm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
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

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
)

// Interface guards.
var _ relay.Sender = (*Sender)(nil)

// Scope is the OAuth 2.0 scope an access token needs to send with FCM.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// DefaultEndpoint is FCM's HTTP v1 API.
const DefaultEndpoint = "https://fcm.googleapis.com"

// MaxData is the most a message's data may take, its keys and values
// counted (FCM takes 4,096 bytes of payload): a message is checked against
// it before it is sent.
const MaxData = 4096

// maxAnswer bounds how much of an answer (FCM's or the token endpoint's)
// is read.
const maxAnswer = 64 << 10

// tokenTimeout bounds one token exchange when the client sets no timeout
// of its own: the exchange runs apart from any one Send, whose ctx cannot
// stop it (see token).
const tokenTimeout = 30 * time.Second

// Options configure a Sender.
type Options struct {
	// ServiceAccount is the app's Google service account key, the JSON
	// file the Firebase console hands out. Required.
	ServiceAccount []byte
	// Endpoint is the base URL of the FCM API; DefaultEndpoint when empty.
	Endpoint string
	// Client sends the requests, the token exchange included;
	// http.DefaultClient (the system's roots, or SSL_CERT_FILE) when nil.
	Client *http.Client
	// Now is the clock for the access token's expiry and Retry-After
	// dates; time.Now when nil.
	Now func() time.Time
}

// Sender sends one app's messages to FCM registration tokens.
type Sender struct {
	opts    Options
	project string
	url     string // the messages:send URL
	jwt     *jwt.Config
	tokens  *http.Client // Client, bounded by tokenTimeout when it has no timeout

	mu     sync.Mutex
	access string    // the cached access token; empty when none
	expiry time.Time // when access is no longer used, by Now; zero: until FCM refuses it
	flight *flight   // the token exchange under way, if any
}

// flight is one token exchange, which every Send that needs a token while
// it runs waits for.
type flight struct {
	done  chan struct{} // closed when the exchange is over
	token string
	err   error
}

// serviceAccount is the part of a service account key a Sender needs.
type serviceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
	TokenURI    string `json:"token_uri"`
}

// New returns a Sender for the app whose service account key
// o.ServiceAccount is. The key must be of type service_account and name
// its project, client email, RSA private key and token URI.
func New(o Options) (*Sender, error) {
	var sa serviceAccount
	if err := json.Unmarshal(o.ServiceAccount, &sa); err != nil {
		return nil, fmt.Errorf("fcm: the service account key is not JSON: %v", err)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("fcm: the key's type is %q, not service_account", sa.Type)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"project_id", sa.ProjectID}, {"client_email", sa.ClientEmail},
		{"private_key", sa.PrivateKey}, {"token_uri", sa.TokenURI},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("fcm: the service account key has no %s", strings.Join(missing, ", "))
	}
	if u, err := url.Parse(sa.TokenURI); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fcm: the key's token_uri %q is not an https URL", sa.TokenURI)
	}
	if err := checkKey(sa.PrivateKey); err != nil {
		return nil, fmt.Errorf("fcm: the key's private_key: %v", err)
	}
	cfg, err := google.JWTConfigFromJSON(o.ServiceAccount, Scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: %v", err)
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fcm: the endpoint %q is not an http(s) URL", o.Endpoint)
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tokens := *o.Client
	if tokens.Timeout == 0 {
		tokens.Timeout = tokenTimeout
	}
	return &Sender{
		opts:    o,
		project: sa.ProjectID,
		url:     strings.TrimRight(o.Endpoint, "/") + "/v1/projects/" + url.PathEscape(sa.ProjectID) + "/messages:send",
		jwt:     cfg,
		tokens:  &tokens,
	}, nil
}

// checkKey reports whether pemKey is an RSA private key in PEM, PKCS #8 or
// PKCS #1, as the token exchange's RS256 signature needs: a bad key fails
// New rather than every send.
func checkKey(pemKey string) error {
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil {
		return errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return fmt.Errorf("a %T, not an RSA key", k)
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New("neither a PKCS #8 nor a PKCS #1 RSA key")
	}
	return nil
}

// Send posts m for the registration token to.Token, shaped by Body. An
// access token FCM no longer takes (401) is dropped and the send made once
// more with a fresh one; a second 401 means the service account itself is
// refused.
func (s *Sender) Send(ctx context.Context, to relay.Target, m *push.Message) error {
	body, err := Body(to, m, s.project)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		access, err := s.token(ctx)
		if err != nil {
			return err
		}
		err = s.post(ctx, access, body)
		var u *unauthenticated
		if !errors.As(err, &u) {
			return err
		}
		s.drop(access)
		if attempt == 2 {
			return fmt.Errorf("%w: %s, with a freshly exchanged access token too", relay.ErrCredentials, u.what)
		}
	}
}

// unauthenticated is FCM's 401 for an access token it no longer takes
// (expired early, revoked), which a fresh one may cure; Send never
// returns it.
type unauthenticated struct{ what string }

func (u *unauthenticated) Error() string { return u.what }

// post sends one request and maps FCM's answer.
func (s *Sender) post(ctx context.Context, access string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", relay.ErrRejected, err)
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &relay.RetryError{Err: err}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil && resp.StatusCode/100 != 2 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &relay.RetryError{Err: fmt.Errorf("reading FCM's answer %d: %v", resp.StatusCode, err)}
	}
	return s.answer(resp, answer)
}

// fcmError is the error body of Google APIs (google.rpc.Status), with the
// details FCM puts in it.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// answer maps FCM's answer onto the relay's errors, as FCM documents its
// ErrorCode values (UNREGISTERED, INVALID_ARGUMENT, SENDER_ID_MISMATCH,
// QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, THIRD_PARTY_AUTH_ERROR) and the
// HTTP statuses they come with.
func (s *Sender) answer(resp *http.Response, body []byte) error {
	code := resp.StatusCode
	if code/100 == 2 {
		return nil
	}
	var e fcmError
	_ = json.Unmarshal(body, &e) // a body that is not Google's error shape leaves e empty
	var errorCode string
	names := strings.Contains(strings.ToLower(e.Error.Message), "registration token")
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" && errorCode == "" {
			errorCode = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			names = names || v.Field == "message.token"
		}
	}
	what := describe(code, e.Error.Status, errorCode, e.Error.Message, body)
	switch {
	case errorCode == "UNREGISTERED" || code == http.StatusNotFound:
		return fmt.Errorf("%w: %s", relay.ErrGone, what)
	case errorCode == "THIRD_PARTY_AUTH_ERROR" || errorCode == "SENDER_ID_MISMATCH" ||
		code == http.StatusForbidden || e.Error.Status == "PERMISSION_DENIED":
		// The APNs certificate or web push key in the Firebase project
		// is refused, or the token belongs to another project: the app's
		// setup is broken, not this message.
		return fmt.Errorf("%w: %s", relay.ErrCredentials, what)
	case code == http.StatusUnauthorized:
		return &unauthenticated{what}
	case code == http.StatusTooManyRequests || code >= 500:
		return &relay.RetryError{After: relay.RetryAfter(resp.Header.Get("Retry-After"), s.opts.Now()), Err: errors.New(what)}
	case code == http.StatusBadRequest && names:
		// A token FCM cannot parse will never be delivered to.
		return fmt.Errorf("%w: %s", relay.ErrGone, what)
	default: // other INVALID_ARGUMENT, 413: this message will not pass however often it is sent
		return fmt.Errorf("%w: %s", relay.ErrRejected, what)
	}
}

// describe names an FCM answer for an error message: its status, its
// ErrorCode and FCM's own words (or, when it said none, the start of its
// body).
func describe(code int, status, errorCode, message string, body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "FCM answered %d", code)
	if status != "" {
		b.WriteString(" " + status)
	}
	if errorCode != "" && errorCode != status {
		b.WriteString(" " + errorCode)
	}
	if message == "" {
		message = strings.TrimSpace(string(body))
	}
	if message != "" {
		b.WriteString(": " + clip(message))
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// token returns the cached access token, or exchanges the service
// account's assertion for a new one. One exchange runs at a time, apart
// from the Sends that wait for it, so that a Send whose ctx ends gives up
// waiting without failing the others (the oauth2 package's exchange takes
// no ctx of its own).
func (s *Sender) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.access != "" && (s.expiry.IsZero() || s.opts.Now().Before(s.expiry)) {
		access := s.access
		s.mu.Unlock()
		return access, nil
	}
	f := s.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		s.flight = f
		go s.exchange(f)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// exchange runs one token exchange at the key's token_uri, caches its
// access token and ends f.
func (s *Sender) exchange(f *flight) {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.tokens)
	t, err := s.jwt.TokenSource(ctx).Token()
	if err == nil && t.AccessToken == "" {
		err = errors.New("the token endpoint answered no access_token")
	}
	if err != nil {
		f.err = s.tokenError(err)
	}
	s.mu.Lock()
	if err == nil {
		f.token = t.AccessToken
		s.access, s.expiry = t.AccessToken, time.Time{}
		if !t.Expiry.IsZero() {
			// Expiry is stamped by time.Now; carry the lifetime over to
			// Now's clock, and stop using the token a minute early (half
			// its life when it lives less than two minutes).
			life := time.Until(t.Expiry)
			s.expiry = s.opts.Now().Add(life - min(time.Minute, life/2))
		}
	}
	s.flight = nil
	s.mu.Unlock()
	close(f.done)
}

// tokenError maps a failed token exchange: an answer refusing the grant
// (400 invalid_grant, 401 invalid_client: a revoked or deleted key, a
// wrong clock) is the credentials' fault; 429, 5xx, a network error or a
// garbled answer are retried.
func (s *Sender) tokenError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return &relay.RetryError{Err: fmt.Errorf("token exchange: %v", err)}
	}
	code := re.Response.StatusCode
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(re.Body, &e)
	what := fmt.Sprintf("the token endpoint answered %d", code)
	if e.Error != "" {
		what += " " + e.Error
	}
	if e.Description != "" {
		what += ": " + clip(e.Description)
	} else if e.Error == "" && len(re.Body) > 0 {
		what += ": " + clip(strings.TrimSpace(string(re.Body)))
	}
	if code == http.StatusTooManyRequests || code >= 500 {
		return &relay.RetryError{After: relay.RetryAfter(re.Response.Header.Get("Retry-After"), s.opts.Now()), Err: errors.New(what)}
	}
	return fmt.Errorf("%w: %s", relay.ErrCredentials, what)
}

// drop forgets the access token access, which FCM refused, unless another
// Send has already replaced it.
func (s *Sender) drop(access string) {
	s.mu.Lock()
	if s.access == access {
		s.access, s.expiry = "", time.Time{}
	}
	s.mu.Unlock()
}

// The JSON of an FCM v1 send request (projects.messages.send), only the
// fields Herald sets.
type (
	request struct {
		Message message `json:"message"`
	}
	message struct {
		Token        string            `json:"token"`
		Notification *notification     `json:"notification,omitempty"`
		Data         map[string]string `json:"data,omitempty"`
		Android      *android          `json:"android,omitempty"`
		APNs         *apns             `json:"apns,omitempty"`
		WebPush      *webpush          `json:"webpush,omitempty"`
	}
	notification struct {
		Title string `json:"title,omitempty"`
		Body  string `json:"body,omitempty"`
	}
	android struct {
		CollapseKey  string               `json:"collapse_key,omitempty"`
		Priority     string               `json:"priority"`
		TTL          string               `json:"ttl"`
		Notification *androidNotification `json:"notification,omitempty"`
	}
	androidNotification struct {
		Sound string `json:"sound,omitempty"`
	}
	apns struct {
		Headers map[string]string `json:"headers"`
		Payload apnsPayload       `json:"payload"`
	}
	apnsPayload struct {
		APS aps `json:"aps"`
	}
	aps struct {
		Badge            *int   `json:"badge,omitempty"`
		Sound            string `json:"sound,omitempty"`
		ContentAvailable int    `json:"content-available,omitempty"`
		MutableContent   int    `json:"mutable-content,omitempty"`
	}
	webpush struct {
		Headers map[string]string `json:"headers"`
	}
)

// Body is the send request for m to the registration token to.Token in
// project, shaped for to.Platform:
//
//   - notification: the title and body; the sound goes to the android
//     block, the badge and sound to the apns payload.
//   - data, all strings as FCM wants them: "id", m's ID, always (a client
//     drops a copy that came another way); "message", the pass-through
//     JSON as text; "extras", the notification's extras as text.
//   - android (every platform but iOS and web): ttl in seconds ("3600s"),
//     priority HIGH for high priority (and for a notification of no
//     stated priority), NORMAL else, and the collapse ID as collapse_key.
//   - apns (iOS): the headers apns-priority, apns-expiration,
//     apns-collapse-id, apns-push-type, and the aps dictionary; a message
//     without a notification is a background push.
//   - webpush (web): the headers TTL, Urgency and Topic.
//
// It fails with relay.ErrRejected when the data would pass MaxData or
// there is no token.
func Body(to relay.Target, m *push.Message, project string) ([]byte, error) {
	if to.Token == "" {
		return nil, fmt.Errorf("%w: no FCM registration token", relay.ErrRejected)
	}
	nt := m.Notification
	high := m.Priority == push.PriorityHigh || (m.Priority == "" && nt != nil)
	ttl := int64(max(m.TTL, 0) / time.Second)
	msg := message{Token: to.Token, Data: map[string]string{"id": m.ID}}
	if m.Data != nil {
		msg.Data["message"] = string(m.Data)
	}
	if nt != nil {
		msg.Notification = &notification{Title: nt.Title, Body: nt.Body}
		if len(nt.Extras) > 0 {
			msg.Data["extras"] = string(nt.Extras)
		}
	}
	size := 0
	for k, v := range msg.Data {
		size += len(k) + len(v)
	}
	if size > MaxData {
		return nil, fmt.Errorf("%w: %d bytes of data, and FCM takes %d", relay.ErrRejected, size, MaxData)
	}
	switch to.Platform {
	case push.IOS:
		msg.APNs = apnsBlock(m, high, ttl)
	case push.Web:
		h := map[string]string{"TTL": strconv.FormatInt(ttl, 10), "Urgency": "normal"}
		if high {
			h["Urgency"] = "high"
		}
		if m.CollapseID != "" {
			h["Topic"] = relay.WebPushTopic(m.CollapseID)
		}
		msg.WebPush = &webpush{Headers: h}
	default:
		a := &android{CollapseKey: m.CollapseID, Priority: "NORMAL", TTL: strconv.FormatInt(ttl, 10) + "s"}
		if high {
			a.Priority = "HIGH"
		}
		if nt != nil && nt.Sound != "" {
			a.Notification = &androidNotification{Sound: nt.Sound}
		}
		msg.Android = a
	}
	return json.Marshal(request{Message: msg})
}

// apnsBlock is what FCM passes on to APNs for an iOS device.
func apnsBlock(m *push.Message, high bool, ttl int64) *apns {
	h := map[string]string{}
	var a aps
	if nt := m.Notification; nt != nil {
		h["apns-push-type"] = "alert"
		h["apns-priority"] = "5"
		if high {
			h["apns-priority"] = "10"
		}
		a.Badge, a.Sound, a.MutableContent = nt.Badge, nt.Sound, 1
	} else {
		// Apple takes background pushes at priority 5 only.
		h["apns-push-type"] = "background"
		h["apns-priority"] = "5"
		a.ContentAvailable = 1
	}
	switch {
	case ttl == 0:
		h["apns-expiration"] = "0" // once, now, or not at all
	case !m.ExpiresAt.IsZero():
		h["apns-expiration"] = strconv.FormatInt(m.ExpiresAt.Unix(), 10)
	default:
		h["apns-expiration"] = strconv.FormatInt(time.Now().Unix()+ttl, 10)
	}
	if m.CollapseID != "" {
		h["apns-collapse-id"] = relay.APNsCollapseID(m.CollapseID)
	}
	return &apns{Headers: h, Payload: apnsPayload{APS: a}}
}
