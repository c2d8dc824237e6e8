package webpush

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const origin = "https://push.example.net"

// appServer is an application server's VAPID key pair.
type appServer struct {
	priv *ecdsa.PrivateKey
	pub  []byte // uncompressed point
}

func newAppServer(t testing.TB) appServer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return appServer{priv: priv, pub: pub}
}

// jwt signs claims with ES256.
func (a appServer) jwt(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(a.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (a appServer) claims(aud string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"aud": aud, "exp": exp.Unix(), "sub": "mailto:ops@example.com"}
}

func (a appServer) key() string { return base64.RawURLEncoding.EncodeToString(a.pub) }

func TestParseVAPID(t *testing.T) {
	as := newAppServer(t)
	tok := as.jwt(t, as.claims(origin, now.Add(time.Hour)))
	k := as.key()
	padded := base64.URLEncoding.EncodeToString(as.pub)
	std := base64.StdEncoding.EncodeToString(as.pub)
	good := []struct{ name, auth, cryptoKey string }{
		{"rfc 8292", "vapid t=" + tok + ", k=" + k, ""},
		{"no space after comma", "vapid t=" + tok + ",k=" + k, ""},
		{"k first", "vapid k=" + k + ", t=" + tok, ""},
		{"padded key", "vapid t=" + tok + ", k=" + padded, ""},
		{"standard alphabet", "vapid t=" + tok + ", k=" + std, ""},
		{"quoted", `vapid t="` + tok + `", k="` + padded + `"`, ""},
		{"case", "VAPID T=" + tok + ", K=" + k, ""},
		{"space around =", "vapid t = " + tok + " , k =" + k, ""},
		{"unknown parameter", "vapid t=" + tok + ", x=1, k=" + k, ""},
		{"draft", "WebPush " + tok, "p256ecdsa=" + k},
		{"draft with dh", "webpush " + tok, "dh=BBBB; p256ecdsa=" + padded},
		{"draft with two entries", "WebPush " + tok, "dh=BBBB,p256ecdsa=\"" + k + "\""},
	}
	for _, c := range good {
		got, err := ParseVAPID(c.auth, c.cryptoKey)
		if err != nil {
			t.Errorf("%s: ParseVAPID(%q) = %v", c.name, c.auth, err)
			continue
		}
		if got.Token != tok || string(got.Key) != string(as.pub) {
			t.Errorf("%s: ParseVAPID = %+v, want the token and key back", c.name, got)
		}
	}

	absent := []string{"", "Basic dXNlcjpwYXNz", "Bearer " + tok, "vapidt=" + tok, "key=" + tok}
	for _, a := range absent {
		if _, err := ParseVAPID(a, ""); !errors.Is(err, ErrNoVAPID) {
			t.Errorf("ParseVAPID(%q) = %v, want ErrNoVAPID", a, err)
		}
	}

	bad := []struct{ name, auth, cryptoKey string }{
		{"no parameters", "vapid", ""},
		{"no key", "vapid t=" + tok, ""},
		{"no token", "vapid k=" + k, ""},
		{"empty token", "vapid t=, k=" + k, ""},
		{"t twice", "vapid t=" + tok + ", t=" + tok + ", k=" + k, ""},
		{"k twice", "vapid t=" + tok + ", k=" + k + ", k=" + k, ""},
		{"no =", "vapid t " + tok + ", k=" + k, ""},
		{"no comma", "vapid t=" + tok + " k=" + k, ""},
		{"unclosed quote", `vapid t="` + tok + `, k=` + k, ""},
		{"key not base64", "vapid t=" + tok + ", k=!!!", ""},
		{"key too short", "vapid t=" + tok + ", k=" + k[:40], ""},
		{"key off the curve", "vapid t=" + tok + ", k=" + base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)), ""},
		{"compressed key", "vapid t=" + tok + ", k=" + base64.RawURLEncoding.EncodeToString(compress(as.pub)), ""},
		{"token not a JWT", "vapid t=a+b, k=" + k, ""},
		{"huge token", "vapid t=" + strings.Repeat("a", maxToken+1) + ", k=" + k, ""},
		{"control character", "vapid t=" + tok + "\x01, k=" + k, ""},
		{"draft without Crypto-Key", "WebPush " + tok, ""},
		{"draft without p256ecdsa", "WebPush " + tok, "dh=" + k},
		{"draft two tokens", "WebPush " + tok + " " + tok, "p256ecdsa=" + k},
		{"draft p256ecdsa twice", "WebPush " + tok, "p256ecdsa=" + k + ";p256ecdsa=" + k},
	}
	for _, c := range bad {
		if _, err := ParseVAPID(c.auth, c.cryptoKey); !errors.Is(err, ErrBadVAPID) {
			t.Errorf("%s: ParseVAPID(%q, %q) = %v, want ErrBadVAPID", c.name, c.auth, c.cryptoKey, err)
		}
	}
}

// compress returns the compressed form of an uncompressed point.
func compress(p []byte) []byte {
	c := append([]byte{2 + p[64]&1}, p[1:33]...)
	return c
}

func TestVerify(t *testing.T) {
	as := newAppServer(t)
	other := newAppServer(t)
	creds := func(tok string) Credentials { return Credentials{Token: tok, Key: as.pub} }
	ok := as.jwt(t, as.claims(origin, now.Add(12*time.Hour)))
	if err := Verify(creds(ok), as.pub, origin, now); err != nil {
		t.Fatalf("Verify(valid) = %v", err)
	}
	for _, aud := range []string{"https://push.example.net/", "HTTPS://Push.Example.Net", "https://push.example.net:443"} {
		if err := Verify(creds(as.jwt(t, as.claims(aud, now.Add(time.Hour)))), as.pub, origin, now); err != nil {
			t.Errorf("Verify(aud %q) = %v, want the same origin accepted", aud, err)
		}
	}
	// Exactly 24 hours ahead, as some libraries set it, is within bounds.
	if err := Verify(creds(as.jwt(t, as.claims(origin, now.Add(24*time.Hour)))), as.pub, origin, now); err != nil {
		t.Errorf("Verify(exp in 24 h) = %v", err)
	}

	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, as.claims(origin, now.Add(time.Hour))).SignedString([]byte("secret"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, as.claims(origin, now.Add(time.Hour))).SignedString(jwt.UnsafeAllowNoneSignatureType)
	bad := []struct {
		name string
		c    Credentials
	}{
		{"wrong key for the subscription", Credentials{Token: other.jwt(t, other.claims(origin, now.Add(time.Hour))), Key: other.pub}},
		{"signed by another key", Credentials{Token: other.jwt(t, other.claims(origin, now.Add(time.Hour))), Key: as.pub}},
		{"wrong aud", creds(as.jwt(t, as.claims("https://fcm.googleapis.com", now.Add(time.Hour))))},
		{"wrong port", creds(as.jwt(t, as.claims("https://push.example.net:8443", now.Add(time.Hour))))},
		{"http for https", creds(as.jwt(t, as.claims("http://push.example.net", now.Add(time.Hour))))},
		{"aud with a path", creds(as.jwt(t, as.claims("https://push.example.net/wpush/x", now.Add(time.Hour))))},
		{"aud list", creds(as.jwt(t, jwt.MapClaims{"aud": []string{origin, origin}, "exp": now.Add(time.Hour).Unix()}))},
		{"no aud", creds(as.jwt(t, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}))},
		{"expired", creds(as.jwt(t, as.claims(origin, now.Add(-time.Second))))},
		{"exp over 24 h", creds(as.jwt(t, as.claims(origin, now.Add(25*time.Hour))))},
		{"no exp", creds(as.jwt(t, jwt.MapClaims{"aud": origin}))},
		{"not yet valid", creds(as.jwt(t, jwt.MapClaims{"aud": origin, "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Minute).Unix()}))},
		{"HS256", creds(hs)},
		{"alg none", creds(none)},
		{"garbage", creds("a.b.c")},
	}
	for _, c := range bad {
		if err := Verify(c.c, as.pub, origin, now); !errors.Is(err, ErrBadVAPID) {
			t.Errorf("%s: Verify = %v, want ErrBadVAPID", c.name, err)
		}
	}
}

func TestDecodeKey(t *testing.T) {
	priv, _ := ecdh.P256().GenerateKey(rand.Reader)
	pub := priv.PublicKey().Bytes()
	for _, s := range []string{
		base64.RawURLEncoding.EncodeToString(pub), base64.URLEncoding.EncodeToString(pub),
		base64.StdEncoding.EncodeToString(pub), base64.RawStdEncoding.EncodeToString(pub),
	} {
		if got, err := DecodeKey(s); err != nil || string(got) != string(pub) {
			t.Errorf("DecodeKey(%q) = %x, %v", s, got, err)
		}
	}
	if EncodeKey(pub) != base64.RawURLEncoding.EncodeToString(pub) {
		t.Error("EncodeKey is not unpadded base64url")
	}
	for _, s := range []string{"", "AAAA", strings.Repeat("A", MaxKeyLen+1), "BBBB!"} {
		if _, err := DecodeKey(s); !errors.Is(err, ErrBadKey) {
			t.Errorf("DecodeKey(%q) = %v, want ErrBadKey", s, err)
		}
	}
}

func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://Push.Example.NET":   "https://push.example.net",
		"https://push.example.net/":  "https://push.example.net",
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"http://example.com:80":      "http://example.com",
		"https://example.com:443":    "https://example.com",
		"https://example.com:80":     "https://example.com:80",
		"http://[::1]:8080":          "http://[::1]:8080",
		"HTTP://EXAMPLE.COM:8080/":   "http://example.com:8080",
		"https://example.com:00443/": "https://example.com",
	} {
		if got, err := Origin(in); err != nil || got != want {
			t.Errorf("Origin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "example.com", "ftp://example.com", "https://example.com/x", "https://u:p@example.com", "https://example.com?q", "https://example.com#f", "https://", "https://example.com:99999"} {
		if got, err := Origin(in); err == nil {
			t.Errorf("Origin(%q) = %q, want an error", in, got)
		}
	}
}

func TestHeaders(t *testing.T) {
	const max = 30 * 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"0": 0, "60": time.Minute, "007": 7 * time.Second, "2592000": max, "2592001": max,
		"99999999999999999999999999": max,
	} {
		if got, err := ParseTTL(in, max); err != nil || got != want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseTTL("", max); !errors.Is(err, ErrNoTTL) {
		t.Errorf("ParseTTL(absent) = %v, want ErrNoTTL", err)
	}
	for _, in := range []string{"-1", "+1", "1.5", "1e3", "ten", "1 2", "0x10"} {
		if _, err := ParseTTL(in, max); !errors.Is(err, ErrBadTTL) {
			t.Errorf("ParseTTL(%q) = %v, want ErrBadTTL", in, err)
		}
	}

	for in, want := range map[string]Urgency{"": Normal, "very-low": VeryLow, "low": Low, "normal": Normal, "high": High, "HIGH": High} {
		if got, err := ParseUrgency(in); err != nil || got != want {
			t.Errorf("ParseUrgency(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"urgent", "very low", "veryLow", "1"} {
		if _, err := ParseUrgency(in); !errors.Is(err, ErrBadUrgency) {
			t.Errorf("ParseUrgency(%q) = %v, want ErrBadUrgency", in, err)
		}
	}

	if got, err := ParseTopic("", false); err != nil || got != "" {
		t.Errorf("ParseTopic(absent) = %q, %v", got, err)
	}
	for _, in := range []string{"a", "news-1_X", strings.Repeat("z", MaxTopicLen)} {
		if got, err := ParseTopic(in, true); err != nil || got != in {
			t.Errorf("ParseTopic(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", strings.Repeat("z", MaxTopicLen+1), "a b", "a/b", "a=", "ü"} {
		if _, err := ParseTopic(in, true); !errors.Is(err, ErrBadTopic) {
			t.Errorf("ParseTopic(%q) = %v, want ErrBadTopic", in, err)
		}
	}
}
