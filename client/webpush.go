package client

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Herald is a push service in the sense of RFC 8030: a device creates a
// push subscription, gets an endpoint URL, and hands it to an application
// server together with the public half of its WebPushKeys, as a browser
// hands over a PushSubscription. Any Web Push library can then send an
// encrypted push to the endpoint; it arrives in the device's inbox as a
// Message whose WebPush method returns it, and WebPushKeys.Decrypt opens
// it. Herald never sees the plaintext.

// WebPushSubscription is a push subscription Herald hosts for the device.
type WebPushSubscription struct {
	ID string `json:"id"`
	// Endpoint is where an application server sends pushes. It is given
	// only when the subscription is created: Herald keeps its token hashed.
	Endpoint string `json:"endpoint,omitempty"`
	// Token is the last part of Endpoint; DeleteWebPushSubscription takes
	// it or the ID.
	Token string `json:"token,omitempty"`
	// ApplicationServerKey, when set, is the VAPID key every push must be
	// signed with (base64url).
	ApplicationServerKey string    `json:"application_server_key,omitempty"`
	Label                string    `json:"label,omitempty"`
	CreatedAt            time.Time `json:"created_at"`
}

// WebPushOptions describe a new push subscription.
type WebPushOptions struct {
	// ApplicationServerKey restricts the subscription to pushes signed by
	// this application server (VAPID, RFC 8292): its P-256 public key in
	// base64url, padded or not. Empty accepts pushes from anyone who knows
	// the endpoint.
	ApplicationServerKey string `json:"application_server_key,omitempty"`
	// Label is the device's own name for the subscription, returned with
	// each push to it (at most 128 bytes).
	Label string `json:"label,omitempty"`
}

// CreateWebPushSubscription creates a push subscription for the device.
// Keep the returned Endpoint: it is shown only now.
func (d *Device) CreateWebPushSubscription(ctx context.Context, o WebPushOptions) (*WebPushSubscription, error) {
	var s WebPushSubscription
	if err := d.do(ctx, "POST", "/v1/webpush/subscriptions", o, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WebPushSubscriptions lists the device's live push subscriptions, oldest
// first, without their endpoints.
func (d *Device) WebPushSubscriptions(ctx context.Context) ([]WebPushSubscription, error) {
	var out struct {
		Subscriptions []WebPushSubscription `json:"subscriptions"`
	}
	if err := d.do(ctx, "GET", "/v1/webpush/subscriptions", nil, &out); err != nil {
		return nil, err
	}
	return out.Subscriptions, nil
}

// DeleteWebPushSubscription revokes a push subscription, named by its ID
// or its token: pushes to its endpoint are refused with 410 Gone from now
// on.
func (d *Device) DeleteWebPushSubscription(ctx context.Context, idOrToken string) error {
	return d.do(ctx, "DELETE", "/v1/webpush/subscriptions/"+url.PathEscape(idOrToken), nil, nil)
}

// WebPushMessage is a push that came through a Web Push endpoint. It is the
// "webpush" object of a Message's pass-through data.
type WebPushMessage struct {
	Subscription string `json:"subscription"` // the subscription's ID
	Label        string `json:"label,omitempty"`
	// Data is the body the application server sent, base64url without
	// padding; empty for a push without a body. Body decodes it.
	Data string `json:"data,omitempty"`
	// Headers are the body's encoding headers, names in lower case:
	// content-encoding ("aes128gcm"), and for the older "aesgcm" encoding
	// encryption and crypto-key.
	Headers map[string]string `json:"headers,omitempty"`
	Urgency string            `json:"urgency"` // very-low, low, normal or high
	Topic   string            `json:"topic,omitempty"`
}

// WebPush returns the Web Push part of m, and false when m is not a push
// that came through a Web Push endpoint.
func (m *Message) WebPush() (*WebPushMessage, bool) {
	var env struct {
		WebPush *WebPushMessage `json:"webpush"`
	}
	if len(m.Message) == 0 || json.Unmarshal(m.Message, &env) != nil || env.WebPush == nil || env.WebPush.Subscription == "" {
		return nil, false
	}
	return env.WebPush, true
}

// Body returns the body the application server sent, still encrypted.
func (w *WebPushMessage) Body() ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(w.Data)
}

// WebPushKeys are the keys a device keeps for one push subscription
// (RFC 8291 §2): a P-256 key pair and a 16-byte authentication secret. The
// public key and the secret go to the application server (a browser's
// PushSubscription.keys.p256dh and .auth); the private key never leaves the
// device. Keep them with the subscription: without them its pushes cannot
// be read.
type WebPushKeys struct {
	Private *ecdh.PrivateKey // P-256
	Auth    []byte           // 16 random bytes
}

// NewWebPushKeys generates keys for a new push subscription.
func NewWebPushKeys() (*WebPushKeys, error) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	auth := make([]byte, 16)
	rand.Read(auth) // never fails (crypto/rand documents it)
	return &WebPushKeys{Private: priv, Auth: auth}, nil
}

// ParseWebPushKeys restores keys saved with Export.
func ParseWebPushKeys(private, auth string) (*WebPushKeys, error) {
	p, err := decodeB64(private)
	if err != nil {
		return nil, fmt.Errorf("client: web push private key: %w", err)
	}
	priv, err := ecdh.P256().NewPrivateKey(p)
	if err != nil {
		return nil, fmt.Errorf("client: web push private key: %w", err)
	}
	a, err := decodeB64(auth)
	if err != nil || len(a) != 16 {
		return nil, errors.New("client: web push auth secret must be 16 bytes, base64url")
	}
	return &WebPushKeys{Private: priv, Auth: a}, nil
}

// Export returns the private key and the auth secret in base64url, to be
// stored and restored with ParseWebPushKeys.
func (k *WebPushKeys) Export() (private, auth string) {
	return b64(k.Private.Bytes()), b64(k.Auth)
}

// P256DH is the public key, base64url without padding, as a browser gives
// it in PushSubscription.keys.p256dh.
func (k *WebPushKeys) P256DH() string { return b64(k.Private.PublicKey().Bytes()) }

// AuthSecret is the authentication secret, base64url without padding, as a
// browser gives it in PushSubscription.keys.auth.
func (k *WebPushKeys) AuthSecret() string { return b64(k.Auth) }

// PushSubscriptionJSON is what a browser's PushSubscription.toJSON()
// returns, the form Web Push libraries take a subscription in.
type PushSubscriptionJSON struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// Subscription returns what to hand an application server for the
// subscription whose endpoint this is.
func (k *WebPushKeys) Subscription(endpoint string) PushSubscriptionJSON {
	var s PushSubscriptionJSON
	s.Endpoint, s.Keys.P256DH, s.Keys.Auth = endpoint, k.P256DH(), k.AuthSecret()
	return s
}

// Errors of decryption.
var (
	// ErrUnsupportedEncoding means the push is not aes128gcm (RFC 8291),
	// the only content coding Decrypt reads.
	ErrUnsupportedEncoding = errors.New("client: unsupported web push content encoding")
	// ErrDecrypt means the body is malformed or was not encrypted for
	// these keys.
	ErrDecrypt = errors.New("client: web push message does not decrypt")
)

// DecryptMessage returns the plaintext of a push received through a Web
// Push endpoint. A push without a body has no plaintext (nil, nil).
func (k *WebPushKeys) DecryptMessage(w *WebPushMessage) ([]byte, error) {
	body, err := w.Body()
	if err != nil {
		return nil, fmt.Errorf("%w: data is not base64url", ErrDecrypt)
	}
	if len(body) == 0 {
		return nil, nil
	}
	if enc := strings.ToLower(w.Headers["content-encoding"]); enc != "aes128gcm" {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedEncoding, enc)
	}
	return k.Decrypt(body)
}

// Decrypt opens a body encrypted with the aes128gcm content coding
// (RFC 8188) under these keys as RFC 8291 derives them: the header names
// the application server's ephemeral public key, whose ECDH secret with the
// device's private key, mixed with the auth secret, keys the records.
func (k *WebPushKeys) Decrypt(body []byte) ([]byte, error) {
	// Header (RFC 8188 §2.1): salt(16) rs(4) idlen(1) keyid(idlen).
	if len(body) < 21 {
		return nil, fmt.Errorf("%w: shorter than the aes128gcm header", ErrDecrypt)
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if len(body) < 21+idlen {
		return nil, fmt.Errorf("%w: shorter than the aes128gcm header", ErrDecrypt)
	}
	keyid, records := body[21:21+idlen], body[21+idlen:]
	// A record holds at least the 16-byte tag and the delimiter octet.
	if rs < 18 {
		return nil, fmt.Errorf("%w: record size %d below 18", ErrDecrypt, rs)
	}
	// RFC 8291 §4: the key ID is the application server's public key.
	asPub, err := ecdh.P256().NewPublicKey(keyid)
	if err != nil {
		return nil, fmt.Errorf("%w: the key ID is not a P-256 public key", ErrDecrypt)
	}
	secret, err := k.Private.ECDH(asPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	// RFC 8291 §3.4: IKM from the ECDH secret and the auth secret.
	prkKey, err := hkdf.Extract(sha256.New, secret, k.Auth)
	if err != nil {
		return nil, err
	}
	info := "WebPush: info\x00" + string(k.Private.PublicKey().Bytes()) + string(keyid)
	ikm, err := hkdf.Expand(sha256.New, prkKey, info, 32)
	if err != nil {
		return nil, err
	}
	// RFC 8188 §2.2, §2.3: content key and nonce from the salt.
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
	if len(records) == 0 {
		return nil, fmt.Errorf("%w: no records", ErrDecrypt)
	}
	var out []byte
	iv := make([]byte, 12)
	for seq := uint64(0); len(records) > 0; seq++ {
		n := min(int(min(rs, 1<<24)), len(records))
		rec := records[:n]
		records = records[n:]
		last := len(records) == 0
		// The nonce of record seq is NONCE XOR seq (RFC 8188 §2.3).
		copy(iv, nonce)
		for i := range 8 {
			iv[11-i] ^= byte(seq >> (8 * i))
		}
		plain, err := gcm.Open(nil, iv, rec, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: record %d: %v", ErrDecrypt, seq, err)
		}
		// Strip the padding: zeros, then the delimiter, 2 for the last
		// record and 1 for the others (RFC 8188 §2).
		i := len(plain) - 1
		for i >= 0 && plain[i] == 0 {
			i--
		}
		want := byte(1)
		if last {
			want = 2
		}
		if i < 0 || plain[i] != want {
			return nil, fmt.Errorf("%w: record %d has no valid padding delimiter", ErrDecrypt, seq)
		}
		out = append(out, plain[:i]...)
	}
	return out, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// decodeB64 takes base64url with or without padding.
func decodeB64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
