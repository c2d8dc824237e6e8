// Package webpush relays Herald's messages to browsers through their Web
// Push services (RFC 8030): each message is encrypted for the
// subscription's keys with the aes128gcm content coding (RFC 8291, RFC
// 8188) and signed for the push service with the app's VAPID key (RFC
// 8292).
package webpush

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
)

// Interface guards.
var _ relay.Sender = (*Sender)(nil)

// MaxBody is the largest encrypted body a push service must take (RFC 8030
// §7.2 asks for at least 4,096 bytes; more is refused by some), header
// included: a message is checked against it before it is sent.
const MaxBody = 4096

// recordSize is the one record's size in the aes128gcm header: the body is
// one record, so any size at least as large as the body works.
const recordSize = MaxBody

// Options configure a Sender.
type Options struct {
	// Key is the app's VAPID key, a P-256 private key. Required.
	Key *ecdsa.PrivateKey
	// Subject is the VAPID contact, a mailto: or https: URL (RFC 8292
	// §2.1), which push services use to reach the sender.
	Subject string
	// Client sends the requests; http.DefaultClient when nil.
	Client *http.Client
	// Now is the clock for the VAPID expiry; time.Now when nil.
	Now func() time.Time
}

// Sender sends one app's messages to Web Push subscriptions.
type Sender struct {
	opts   Options
	public []byte // Key's public half, uncompressed, as the k parameter carries it
}

// New returns a Sender for the app whose VAPID key o.Key is.
func New(o Options) (*Sender, error) {
	if o.Key == nil {
		return nil, errors.New("webpush: a VAPID key is required")
	}
	ek, err := o.Key.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("webpush: the VAPID key is not on P-256: %w", err)
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sender{opts: o, public: ek.Bytes()}, nil
}

// Send encrypts m (as the JSON a device receives from every transport, with
// its id, so a client can drop a copy that came another way) for the
// subscription and posts it to its push service. TTL, Urgency and Topic
// come from m's TTL, priority and collapse ID.
func (s *Sender) Send(ctx context.Context, to relay.Target, m *push.Message) error {
	sub := to.WebPush
	if sub == nil {
		return fmt.Errorf("%w: no Web Push subscription", relay.ErrRejected)
	}
	plain, err := json.Marshal(m.Delivered())
	if err != nil {
		return fmt.Errorf("%w: %v", relay.ErrRejected, err)
	}
	body, err := Encrypt(plain, sub)
	if err != nil {
		return err
	}
	origin, err := origin(sub.Endpoint)
	if err != nil {
		return fmt.Errorf("%w: %v", relay.ErrGone, err)
	}
	auth, err := s.vapid(origin)
	if err != nil {
		return fmt.Errorf("%w: signing: %v", relay.ErrCredentials, err)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", sub.Endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", relay.ErrGone, err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Encoding", "aes128gcm")
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("TTL", strconv.FormatInt(int64(m.TTL/time.Second), 10))
	req.Header.Set("Urgency", urgency(m.Priority))
	if m.CollapseID != "" {
		req.Header.Set("Topic", relay.WebPushTopic(m.CollapseID))
	}
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &relay.RetryError{Err: err}
	}
	defer resp.Body.Close()
	detail, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return answer(resp, strings.TrimSpace(string(detail)))
}

// answer maps a push service's status onto the relay's errors (RFC 8030
// §5, §8.3 and what the browser vendors document for theirs).
func answer(resp *http.Response, detail string) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusNotFound || code == http.StatusGone:
		return fmt.Errorf("%w: push service answered %d %s", relay.ErrGone, code, detail)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("%w: push service answered %d %s", relay.ErrCredentials, code, detail)
	case code == http.StatusTooManyRequests || code >= 500:
		return &relay.RetryError{After: relay.RetryAfter(resp.Header.Get("Retry-After"), time.Now()),
			Err: fmt.Errorf("push service answered %d %s", code, detail)}
	default: // 400, 413: this message will not pass however often it is sent
		return fmt.Errorf("%w: push service answered %d %s", relay.ErrRejected, code, detail)
	}
}

func urgency(p push.Priority) string {
	if p == push.PriorityHigh {
		return "high"
	}
	return "normal"
}

// vapid returns the Authorization header for a push service at origin:
// an ES256 JWT for that audience, valid 12 hours, and the public key.
func (s *Sender) vapid(origin string) (string, error) {
	now := s.opts.Now()
	claims := jwt.MapClaims{"aud": origin, "exp": now.Add(12 * time.Hour).Unix()}
	if s.opts.Subject != "" {
		claims["sub"] = s.opts.Subject
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(s.opts.Key)
	if err != nil {
		return "", err
	}
	return "vapid t=" + tok + ", k=" + base64.RawURLEncoding.EncodeToString(s.public), nil
}

// origin is the scheme and host of an endpoint URL, the JWT's audience.
func origin(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("the endpoint %q is not an http(s) URL", endpoint)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Encrypt encrypts plain for the subscription sub as one aes128gcm record
// (RFC 8188) keyed as RFC 8291 §3 says: an ephemeral P-256 key of the
// application server, whose ECDH secret with the subscription's p256dh key
// is mixed with its auth secret. It fails with relay.ErrRejected when the
// body would pass MaxBody, and relay.ErrGone when the subscription's keys
// are unusable.
func Encrypt(plain []byte, sub *push.WebPushSubscription) ([]byte, error) {
	uaPub, err := decodeKey(sub.P256DH)
	if err != nil {
		return nil, fmt.Errorf("%w: p256dh: %v", relay.ErrGone, err)
	}
	ua, err := ecdh.P256().NewPublicKey(uaPub)
	if err != nil {
		return nil, fmt.Errorf("%w: p256dh: %v", relay.ErrGone, err)
	}
	authSecret, err := decodeKey(sub.Auth)
	if err != nil || len(authSecret) != 16 {
		return nil, fmt.Errorf("%w: auth is not 16 bytes of base64url", relay.ErrGone)
	}
	const header = 16 + 4 + 1 + 65
	if n := header + len(plain) + 1 + 16; n > MaxBody {
		return nil, fmt.Errorf("%w: %d bytes encrypted, and Web Push takes %d", relay.ErrRejected, n, MaxBody)
	}
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	secret, err := as.ECDH(ua)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", relay.ErrGone, err)
	}
	asPub := as.PublicKey().Bytes()
	prkKey, err := hkdf.Extract(sha256.New, secret, authSecret)
	if err != nil {
		return nil, err
	}
	ikm, err := hkdf.Expand(sha256.New, prkKey, "WebPush: info\x00"+string(uaPub)+string(asPub), 32)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, header+len(plain)+17)
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, recordSize)
	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	// The last (and only) record ends with the delimiter 0x02 (RFC 8188
	// §2); no padding.
	record := append(append(make([]byte, 0, len(plain)+1), plain...), 2)
	return gcm.Seal(out, nonce, record, nil), nil
}

// decodeKey decodes base64url, padded or not.
func decodeKey(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
