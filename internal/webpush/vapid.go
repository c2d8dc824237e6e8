package webpush

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// VAPID errors (RFC 8292). ErrNoVAPID is answered 401: the push carries no
// VAPID credentials at all. ErrBadVAPID is answered 403: it carries some,
// and they are malformed, badly signed, for another key, for another push
// service or out of date.
var (
	ErrNoVAPID  = errors.New("webpush: no VAPID credentials")
	ErrBadVAPID = errors.New("webpush: invalid VAPID credentials")
	// ErrBadKey means an application server key is not a P-256 public key
	// in uncompressed form, base64url-encoded.
	ErrBadKey = errors.New("webpush: invalid application server key")
)

// Bounds on what the parser accepts, so that a hostile header costs little.
const (
	// maxToken bounds the JWT, in bytes. A VAPID JWT is a short header, a
	// few claims and a 64-byte signature: a few hundred bytes.
	maxToken = 4096
	// MaxKeyLen bounds a base64 application server key, in characters: a
	// 65-byte point is 87 unpadded, 88 padded.
	MaxKeyLen = 128
	// maxExpiry is how far ahead a JWT's exp may be (RFC 8292 §2: no more
	// than 24 hours from the request).
	maxExpiry = 24 * time.Hour
	// clockSkew is how far an application server's clock may run ahead of
	// ours: a library that sets exp to exactly 24 hours ahead is not
	// refused for a few seconds of drift. It never extends an expired JWT.
	clockSkew = time.Minute
)

// Credentials are what an application server presents to identify itself
// (RFC 8292 §3): a JWT and the public key that signed it.
type Credentials struct {
	Token string // the JWT in compact form
	Key   []byte // the P-256 public key, a 65-byte uncompressed point
}

// ParseVAPID reads VAPID credentials from a request's Authorization and
// Crypto-Key header values. It takes the RFC 8292 form
//
//	Authorization: vapid t=<JWT>, k=<key>
//
// and the form of the drafts before it, still sent by older libraries:
//
//	Authorization: WebPush <JWT>
//	Crypto-Key: p256ecdsa=<key>
//
// Scheme and parameter names are case-insensitive; values may be quoted;
// keys are base64url with or without padding. It returns ErrNoVAPID when
// authorization names neither scheme (absent, or Basic, Bearer...), and an
// error wrapping ErrBadVAPID when it names one and the rest is malformed.
// It checks the form only: Verify checks the JWT.
func ParseVAPID(authorization, cryptoKey string) (Credentials, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	rest = strings.TrimLeft(rest, " \t")
	switch {
	case strings.EqualFold(scheme, "vapid"):
		return parseVAPIDParams(rest)
	case strings.EqualFold(scheme, "webpush"):
		return parseDraftVAPID(rest, cryptoKey)
	}
	return Credentials{}, ErrNoVAPID
}

// parseVAPIDParams reads the auth-params of the vapid scheme (RFC 7235
// §2.1): name=value pairs separated by commas, each value a token or a
// quoted-string. An unquoted value runs to the next comma or white space,
// so that a padded key ("k=BA...=") is taken although '=' is not a tchar.
// Parameters other than t and k are ignored, for extensibility.
func parseVAPIDParams(s string) (Credentials, error) {
	var t, k string
	var seenT, seenK bool
	for s != "" {
		i := 0
		for i < len(s) && isTchar(s[i]) {
			i++
		}
		name := s[:i]
		if name == "" {
			return Credentials{}, badVAPID("expected a parameter name at %q", clip(s))
		}
		s = strings.TrimLeft(s[i:], " \t")
		if !strings.HasPrefix(s, "=") {
			return Credentials{}, badVAPID("parameter %q has no value", clip(name))
		}
		s = strings.TrimLeft(s[1:], " \t")
		value, tail, err := authValue(s)
		if err != nil {
			return Credentials{}, err
		}
		switch {
		case strings.EqualFold(name, "t"):
			if seenT {
				return Credentials{}, badVAPID("t is given twice")
			}
			t, seenT = value, true
		case strings.EqualFold(name, "k"):
			if seenK {
				return Credentials{}, badVAPID("k is given twice")
			}
			k, seenK = value, true
		}
		s = strings.TrimLeft(tail, " \t")
		if s != "" && s[0] != ',' {
			return Credentials{}, badVAPID("expected a comma at %q", clip(s))
		}
		s = strings.TrimLeft(strings.TrimPrefix(s, ","), " \t,")
	}
	if !seenT || !seenK {
		return Credentials{}, badVAPID("the vapid scheme needs both t (the JWT) and k (the public key)")
	}
	return credentials(t, k)
}

// authValue reads a token or a quoted-string at the start of s and returns
// it unquoted, with what follows it.
func authValue(s string) (value, tail string, err error) {
	if !strings.HasPrefix(s, `"`) {
		i := strings.IndexAny(s, ", \t")
		if i < 0 {
			i = len(s)
		}
		for j := 0; j < i; j++ {
			if s[j] == '"' || s[j] < 0x21 || s[j] == 0x7f {
				return "", "", badVAPID("a parameter value has a character that needs quoting")
			}
		}
		return s[:i], s[i:], nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", "", badVAPID("a quoted value has a control character")
		default:
			b.WriteByte(c)
		}
	}
	return "", "", badVAPID("a quoted value is not closed")
}

// parseDraftVAPID reads "WebPush <JWT>" with its key in the Crypto-Key
// header: entries separated by commas, parameters by semicolons, one of
// them p256ecdsa.
func parseDraftVAPID(token, cryptoKey string) (Credentials, error) {
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t,") {
		return Credentials{}, badVAPID("the WebPush scheme takes one JWT")
	}
	var key string
	found := false
	for _, param := range strings.FieldsFunc(cryptoKey, func(r rune) bool { return r == ',' || r == ';' }) {
		name, value, ok := strings.Cut(strings.TrimSpace(param), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "p256ecdsa") {
			continue
		}
		if found {
			return Credentials{}, badVAPID("Crypto-Key has p256ecdsa twice")
		}
		key, found = strings.Trim(strings.TrimSpace(value), `"`), true
	}
	if !found {
		return Credentials{}, badVAPID("the WebPush scheme needs the key in Crypto-Key: p256ecdsa=<key>")
	}
	return credentials(token, key)
}

func credentials(token, key string) (Credentials, error) {
	if token == "" || len(token) > maxToken || strings.IndexFunc(token, notJWT) >= 0 {
		return Credentials{}, badVAPID("t must be a JWT in compact form (base64url and dots) of at most %d bytes", maxToken)
	}
	k, err := DecodeKey(key)
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: k: %v", ErrBadVAPID, err)
	}
	return Credentials{Token: token, Key: k}, nil
}

// DecodeKey decodes an application server key: a P-256 public key as a
// 65-byte uncompressed point, in base64url with or without padding (the
// standard alphabet is taken too, as some libraries send it). It checks
// that the point is on the curve.
func DecodeKey(s string) ([]byte, error) {
	if s == "" || len(s) > MaxKeyLen {
		return nil, fmt.Errorf("%w: must be 1 to %d characters of base64url", ErrBadKey, MaxKeyLen)
	}
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url", ErrBadKey)
	}
	if _, err := ecdh.P256().NewPublicKey(b); err != nil || len(b) != 65 {
		return nil, fmt.Errorf("%w: not an uncompressed P-256 point", ErrBadKey)
	}
	return b, nil
}

// EncodeKey is the canonical form of a key: base64url without padding, as
// browsers give applicationServerKey.
func EncodeKey(k []byte) string { return base64.RawURLEncoding.EncodeToString(k) }

// vapidClaims are the claims RFC 8292 §2 defines; sub (a contact) is
// optional and not checked.
type vapidClaims struct {
	jwt.RegisteredClaims
}

// Verify checks credentials c for a push to a subscription created with
// application server key want, at a push service whose origin is origin:
// the JWT is signed with ES256 by c.Key, c.Key is want, its aud is origin
// and its exp lies after now and at most 24 hours ahead. Errors wrap
// ErrBadVAPID.
func Verify(c Credentials, want []byte, origin string, now time.Time) error {
	if !bytes.Equal(c.Key, want) {
		return badVAPID("k is not the application server key of this subscription")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), c.Key)
	if err != nil {
		return badVAPID("k: %v", err)
	}
	var claims vapidClaims
	_, err = jwt.ParseWithClaims(c.Token, &claims,
		func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		return badVAPID("JWT: %v", err)
	}
	if exp := claims.ExpiresAt.Time; exp.After(now.Add(maxExpiry + clockSkew)) {
		return badVAPID("JWT: exp is more than 24 hours ahead")
	}
	if len(claims.Audience) != 1 {
		return badVAPID("JWT: aud must be one origin, the push service's %s", origin)
	}
	if aud, err := Origin(claims.Audience[0]); err != nil || aud != origin {
		return badVAPID("JWT: aud is %q, not this push service's origin %s", clip(claims.Audience[0]), origin)
	}
	return nil
}

// Origin returns the ASCII serialization of a URL's origin (RFC 6454):
// scheme://host[:port], lower-cased, without the scheme's default port.
// For an aud claim, which must be an origin, a path other than "/", a
// query, a fragment or user information is an error.
func Origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q is not an http or https origin", raw)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port != "" {
		// Numerically, as a browser's URL parser does ("0443" is 443).
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return "", fmt.Errorf("%q has an invalid port", raw)
		}
		port = strconv.FormatUint(n, 10)
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// notJWT reports whether r cannot appear in a compact JWS.
func notJWT(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func badVAPID(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadVAPID, fmt.Sprintf(format, args...))
}

// clip shortens s for an error message, which must not echo a large header.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
