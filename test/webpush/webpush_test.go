// Package webpush tests Herald as an RFC 8030 push service from the
// outside: the real herald binary, devices through the Go client, and
// application servers that are raw HTTP requests (these tests) or the npm
// web-push library (interop_test.go).
package webpush

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// server is a `herald serve` process (test/heraldtest).
type server struct{ *heraldtest.Server }

// startServer runs `herald serve` on dataDir, listening on addr
// ("127.0.0.1:0" for any port), and waits for its banner.
func startServer(t *testing.T, dataDir, addr string) *server {
	return &server{heraldtest.Start(t, dataDir, "--http", addr)}
}

// stop ends the server as an operator does, with SIGTERM.
func (s *server) stop() { s.Stop() }

// device is a registered device: its credentials and its client.
type device struct {
	reg client.Registration
	*client.Device
}

// device registers a web device.
func (s *server) device(t *testing.T) *device {
	t.Helper()
	reg, err := client.Register(context.Background(), nil, s.URL, client.RegisterRequest{AppKey: s.AppKey, Platform: "web"})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return &device{reg: *reg, Device: client.NewDevice(*reg, nil)}
}

func subscribe(t *testing.T, d *device, o client.WebPushOptions) *client.WebPushSubscription {
	t.Helper()
	sub, err := d.CreateWebPushSubscription(context.Background(), o)
	if err != nil {
		t.Fatalf("CreateWebPushSubscription: %v", err)
	}
	if sub.Endpoint == "" || sub.Token == "" || !strings.HasSuffix(sub.Endpoint, "/wpush/"+sub.Token) {
		t.Fatalf("subscription without a proper endpoint: %+v", sub)
	}
	return sub
}

// answer is a response to a push.
type answer struct {
	status int
	code   string // the error code, for an error
	header http.Header
}

// send makes one request with headers h (name, value, name, value...).
func send(t *testing.T, method, url string, body []byte, h ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode >= 300 {
		var env struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(raw, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			t.Errorf("%s %s: %d with a body that is not an error object: %q", method, url, resp.StatusCode, raw)
		}
		a.code = env.Error.Code
	}
	return a
}

func want(t *testing.T, what string, got answer, status int, code string) {
	t.Helper()
	if got.status != status || got.code != code {
		t.Errorf("%s: %d %q, want %d %q", what, got.status, got.code, status, code)
	}
}

// poll returns what waits in d's inbox, waiting up to a second for it.
func poll(t *testing.T, d *device) []client.Message {
	t.Helper()
	msgs, err := d.Poll(context.Background(), time.Second)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return msgs
}

// webPushes returns the Web Push parts of msgs, failing on any other.
func webPushes(t *testing.T, msgs []client.Message) []*client.WebPushMessage {
	t.Helper()
	var out []*client.WebPushMessage
	for _, m := range msgs {
		w, ok := m.WebPush()
		if !ok {
			t.Fatalf("message %s is not a web push: %s", m.ID, m.Message)
		}
		out = append(out, w)
	}
	return out
}

// vapidKey is an application server's key pair, signing VAPID JWTs.
type vapidKey struct {
	priv *ecdsa.PrivateKey
	pub  string // base64url, unpadded
}

func newVAPIDKey(t *testing.T) vapidKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := priv.PublicKey.Bytes()
	return vapidKey{priv: priv, pub: base64.RawURLEncoding.EncodeToString(pub)}
}

// auth returns an Authorization value for aud expiring at exp.
func (k vapidKey) auth(t *testing.T, aud string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": aud, "exp": exp.Unix(), "sub": "mailto:ops@example.com",
	}).SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return "vapid t=" + tok + ", k=" + k.pub
}

// TestSubscriptions: a device creates, lists and revokes its push
// subscriptions; bad requests get their own error codes.
func TestSubscriptions(t *testing.T) {
	srv := startServer(t, t.TempDir(), "127.0.0.1:0")
	d := srv.device(t)
	ctx := context.Background()
	key := newVAPIDKey(t)
	raw, _ := base64.RawURLEncoding.DecodeString(key.pub)

	a := subscribe(t, d, client.WebPushOptions{ApplicationServerKey: base64.URLEncoding.EncodeToString(raw), Label: "sw-a"})
	if a.ApplicationServerKey != key.pub || a.Label != "sw-a" {
		t.Errorf("created %+v: want the key in unpadded base64url and the label", a)
	}
	b := subscribe(t, d, client.WebPushOptions{})
	c := subscribe(t, d, client.WebPushOptions{})
	if a.Token == b.Token || strings.Contains(a.Endpoint, d.reg.RegistrationID) {
		t.Errorf("tokens must be distinct and unlinkable to the registration ID: %q %q", a.Endpoint, b.Endpoint)
	}
	subs, err := d.WebPushSubscriptions(ctx)
	if err != nil || len(subs) != 3 || subs[0].ID != a.ID || subs[1].ID != b.ID || subs[0].Endpoint != "" || subs[0].ApplicationServerKey != key.pub {
		t.Errorf("WebPushSubscriptions = %+v, %v: want a, b, c, oldest first, without endpoints", subs, err)
	}

	// Revoke b by ID and c by token; both then answer 410.
	if err := d.DeleteWebPushSubscription(ctx, b.ID); err != nil {
		t.Fatalf("delete by ID: %v", err)
	}
	if err := d.DeleteWebPushSubscription(ctx, c.Token); err != nil {
		t.Fatalf("delete by token: %v", err)
	}
	for _, s := range []*client.WebPushSubscription{b, c} {
		want(t, "push to a revoked subscription", send(t, "POST", s.Endpoint, []byte("x"), "TTL", "60"), 410, "subscription_gone")
	}
	if subs, _ := d.WebPushSubscriptions(ctx); len(subs) != 1 || subs[0].ID != a.ID {
		t.Errorf("after revoking b and c: %+v, want only a", subs)
	}
	// Another device can neither see nor revoke a's subscription.
	other := srv.device(t)
	for _, ref := range []string{a.ID, a.Token, "sub_nope"} {
		var e *client.Error
		if err := other.DeleteWebPushSubscription(ctx, ref); !asErr(err, &e) || e.Status != 404 || e.Code != "subscription_not_found" {
			t.Errorf("another device revoking %q: %v, want 404 subscription_not_found", ref, err)
		}
	}
	if subs, _ := other.WebPushSubscriptions(ctx); len(subs) != 0 {
		t.Errorf("another device lists %+v", subs)
	}

	base := srv.URL + "/v1/webpush/subscriptions"
	for _, c := range []struct {
		name, body, code string
		status           int
	}{
		{"bad key", `{"application_server_key":"AAAA"}`, "bad_application_server_key", 400},
		{"key off the curve", `{"application_server_key":"` + base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)) + `"}`, "bad_application_server_key", 400},
		{"unknown field", `{"applicationServerKey":"x"}`, "bad_json", 400},
		{"label with a control character", `{"label":"a\u0001"}`, "bad_name", 400},
		{"not JSON", `{`, "bad_json", 400},
	} {
		got := sendAs(t, d, "POST", base, c.body)
		want(t, c.name, got, c.status, c.code)
	}
	want(t, "no credentials", send(t, "POST", base, nil), 401, "unauthorized")
	want(t, "no credentials to list", send(t, "GET", base, nil), 401, "unauthorized")
}

// sendAs makes a JSON request with d's credentials.
func sendAs(t *testing.T, d *device, method, url, body string) answer {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(d.reg.RegistrationID + ":" + d.reg.DeviceSecret))
	return send(t, method, url, []byte(body), "Authorization", "Basic "+auth, "Content-Type", "application/json")
}

func asErr(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*target = e
	}
	return ok
}
