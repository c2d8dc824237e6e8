package push

import (
	"crypto/ecdh"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Bounds of what a device may store as its channel. Each is generous for
// what the channel's own service issues and small beside what a request
// body may hold, so that an unauthenticated registration cannot park
// megabytes in the store.
const (
	// MinAPNsToken and MaxAPNsToken bound an APNs device token, in bytes
	// (twice that in hex digits). Apple's are 32 bytes today and
	// documented as of variable length.
	MinAPNsToken = 16
	MaxAPNsToken = 100
	// MaxFCMToken bounds an FCM registration token or installation ID,
	// in bytes. Tokens are about 150 to 250 characters today; Google
	// documents no maximum, hence the margin.
	MaxFCMToken = 4096
	// MaxEndpoint bounds a Web Push endpoint URL, in bytes. Browsers'
	// are under 600.
	MaxEndpoint = 2048
	// WebPushAuthBytes is the size of a subscription's auth secret
	// (RFC 8291 §3.2).
	WebPushAuthBytes = 16
)

// NewChannel builds and checks a device's channel from the registration
// fields: at most one of an APNs token, an FCM token and a Web Push
// subscription (nil for none); none of them is Herald's own connection.
// The APNs token is kept in lower-case hex and the Web Push keys in
// unpadded base64url. Errors wrap ErrBadToken or ErrBadSubscription.
func NewChannel(apnsToken, fcmToken string, wp *WebPushSubscription) (Channel, error) {
	given := 0
	for _, set := range []bool{apnsToken != "", fcmToken != "", wp != nil} {
		if set {
			given++
		}
	}
	if given > 1 {
		return Channel{}, fmt.Errorf("%w: give at most one of apns_token, fcm_token and webpush", ErrBadToken)
	}
	switch {
	case apnsToken != "":
		return NormalizeChannel(Channel{Kind: ChannelAPNs, Token: apnsToken})
	case fcmToken != "":
		return NormalizeChannel(Channel{Kind: ChannelFCM, Token: fcmToken})
	case wp != nil:
		return NormalizeChannel(Channel{Kind: ChannelWebPush, WebPush: wp})
	}
	return Channel{Kind: ChannelHerald}, nil
}

// NormalizeChannel checks ch as NewChannel does and returns it in the form
// it is stored in. The zero Channel is Herald's own connection.
func NormalizeChannel(ch Channel) (Channel, error) {
	switch ch.Kind {
	case "", ChannelHerald:
		if ch.Token != "" || ch.WebPush != nil {
			return Channel{}, fmt.Errorf("%w: Herald's own channel has no token or subscription", ErrBadToken)
		}
		return Channel{Kind: ChannelHerald}, nil
	case ChannelAPNs:
		t, err := NormalizeAPNsToken(ch.Token)
		if err != nil || ch.WebPush != nil {
			return Channel{}, orBadToken(err)
		}
		return Channel{Kind: ChannelAPNs, Token: t}, nil
	case ChannelFCM:
		if err := CheckFCMToken(ch.Token); err != nil || ch.WebPush != nil {
			return Channel{}, orBadToken(err)
		}
		return Channel{Kind: ChannelFCM, Token: ch.Token}, nil
	case ChannelWebPush:
		if ch.WebPush == nil || ch.Token != "" {
			return Channel{}, fmt.Errorf("%w: a webpush channel is a subscription and no token", ErrBadSubscription)
		}
		s, err := NormalizeWebPush(*ch.WebPush)
		if err != nil {
			return Channel{}, err
		}
		return Channel{Kind: ChannelWebPush, WebPush: &s}, nil
	}
	return Channel{}, fmt.Errorf("%w: unknown channel kind %q", ErrBadToken, ch.Kind)
}

func orBadToken(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: a token channel has no web push subscription", ErrBadToken)
}

// NormalizeAPNsToken checks an APNs device token (hex, MinAPNsToken to
// MaxAPNsToken bytes) and returns it in lower case.
func NormalizeAPNsToken(t string) (string, error) {
	if len(t)%2 != 0 || len(t) < 2*MinAPNsToken || len(t) > 2*MaxAPNsToken {
		return "", fmt.Errorf("%w: an APNs token is %d to %d bytes in hex (an even number of digits), not %d digits",
			ErrBadToken, MinAPNsToken, MaxAPNsToken, len(t))
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", fmt.Errorf("%w: an APNs token is hex digits only", ErrBadToken)
		}
	}
	return strings.ToLower(t), nil
}

// CheckFCMToken checks an FCM registration token or installation ID: 1 to
// MaxFCMToken bytes of letters, digits and - _ : . (the characters of the
// tokens and IDs Firebase issues).
func CheckFCMToken(t string) error {
	if t == "" || len(t) > MaxFCMToken {
		return fmt.Errorf("%w: an FCM token is 1 to %d bytes, not %d", ErrBadToken, MaxFCMToken, len(t))
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_' || c == ':' || c == '.') {
			return fmt.Errorf("%w: an FCM token has only letters, digits and - _ : .", ErrBadToken)
		}
	}
	return nil
}

// NormalizeWebPush checks a browser's push subscription and returns it with
// its keys in unpadded base64url: the endpoint an absolute https URL of at
// most MaxEndpoint bytes with a host and no user info or fragment, p256dh
// an uncompressed point on P-256 (65 bytes), auth 16 bytes. The keys may
// come padded or not, as browsers and libraries differ.
func NormalizeWebPush(s WebPushSubscription) (WebPushSubscription, error) {
	if s.Endpoint == "" || s.P256DH == "" || s.Auth == "" {
		return WebPushSubscription{}, fmt.Errorf("%w: webpush needs endpoint, keys.p256dh and keys.auth", ErrBadSubscription)
	}
	if err := checkEndpoint(s.Endpoint); err != nil {
		return WebPushSubscription{}, err
	}
	p, err := decodeB64URL(s.P256DH)
	if err != nil || len(p) != 65 || p[0] != 4 {
		return WebPushSubscription{}, fmt.Errorf("%w: keys.p256dh must be a 65-byte uncompressed P-256 point in base64url", ErrBadSubscription)
	}
	if _, err := ecdh.P256().NewPublicKey(p); err != nil {
		return WebPushSubscription{}, fmt.Errorf("%w: keys.p256dh is not a point on P-256", ErrBadSubscription)
	}
	a, err := decodeB64URL(s.Auth)
	if err != nil || len(a) != WebPushAuthBytes {
		return WebPushSubscription{}, fmt.Errorf("%w: keys.auth must be %d bytes in base64url", ErrBadSubscription, WebPushAuthBytes)
	}
	return WebPushSubscription{
		Endpoint: s.Endpoint,
		P256DH:   base64.RawURLEncoding.EncodeToString(p),
		Auth:     base64.RawURLEncoding.EncodeToString(a),
	}, nil
}

func checkEndpoint(e string) error {
	if len(e) > MaxEndpoint {
		return fmt.Errorf("%w: the endpoint is over %d bytes", ErrBadSubscription, MaxEndpoint)
	}
	// Printable ASCII only: a URL a push service hands out is already
	// escaped, and anything else would be sent to it as written.
	for i := 0; i < len(e); i++ {
		if e[i] <= ' ' || e[i] >= 0x7f {
			return fmt.Errorf("%w: the endpoint has a space, control or non-ASCII character", ErrBadSubscription)
		}
	}
	u, err := url.Parse(e)
	switch {
	case err != nil:
		return fmt.Errorf("%w: the endpoint is not a URL", ErrBadSubscription)
	case u.Scheme != "https":
		return fmt.Errorf("%w: the endpoint must be an https URL", ErrBadSubscription)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%w: the endpoint has no host", ErrBadSubscription)
	case u.User != nil:
		return fmt.Errorf("%w: the endpoint may not carry user info", ErrBadSubscription)
	case strings.Contains(e, "#"):
		return fmt.Errorf("%w: the endpoint may not have a fragment", ErrBadSubscription)
	}
	return nil
}

// decodeB64URL decodes base64url, padded or not.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
