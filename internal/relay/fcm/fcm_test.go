package fcm_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
	"github.com/heraldpush/herald/internal/relay/fcm"
)

const (
	project = "herald-test"
	email   = "herald@herald-test.iam.gserviceaccount.com"
)

// tokenServer is a local Google OAuth 2.0 token endpoint for the JWT
// bearer grant (RFC 7523): it verifies the assertion's RS256 signature
// against the public half of the service account's key, its issuer,
// audience and scope, and issues an access token, which it records for
// the FCM server to check.
type tokenServer struct {
	srv *httptest.Server
	pub *rsa.PublicKey

	mu       sync.Mutex
	requests int
	issued   map[string]bool
	errs     []error
	// status and body, when status is set, are answered instead of a
	// token (invalid_grant, 503).
	status int
	body   string
	// hold, when set, is closed by the test to let a request through;
	// arrived is told of each request that waits for it.
	hold    chan struct{}
	arrived chan struct{}
}

func newTokenServer(t *testing.T, pub *rsa.PublicKey) *tokenServer {
	t.Helper()
	ts := &tokenServer{pub: pub, issued: map[string]bool{}}
	ts.srv = startTLS(ts.serve)
	t.Cleanup(ts.srv.Close)
	return ts
}

// startTLS starts a TLS test server that does not log the handshakes
// cut short when a test closes it.
func startTLS(h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	return srv
}

func (ts *tokenServer) uri() string { return ts.srv.URL + "/token" }

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	hold, arrived := ts.hold, ts.arrived
	ts.mu.Unlock()
	if hold != nil {
		arrived <- struct{}{}
		<-hold
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.requests++
	fail := func(err error) {
		ts.errs = append(ts.errs, err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%q}`, err.Error())
	}
	if r.Method != "POST" || r.URL.Path != "/token" {
		fail(fmt.Errorf("%s %s", r.Method, r.URL.Path))
		return
	}
	if g := r.PostFormValue("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail(fmt.Errorf("grant_type %q", g))
		return
	}
	tok, err := jwt.Parse(r.PostFormValue("assertion"), func(*jwt.Token) (any, error) { return ts.pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(email), jwt.WithAudience(ts.uri()),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		fail(fmt.Errorf("assertion: %v", err))
		return
	}
	scope, _ := tok.Claims.(jwt.MapClaims)["scope"].(string)
	if !strings.Contains(" "+scope+" ", " https://www.googleapis.com/auth/firebase.messaging ") {
		fail(fmt.Errorf("scope %q", scope))
		return
	}
	if ts.status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ts.status)
		io.WriteString(w, ts.body)
		return
	}
	access := fmt.Sprintf("ya29.access-%d", ts.requests)
	ts.issued[access] = true
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, access)
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests
}

func (ts *tokenServer) valid(access string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued[access]
}

// fcmServer is a local FCM HTTP v1 send endpoint: it takes a request only
// with an access token the token server issued, at the project's
// messages:send, and records the decoded body; answer, when set, decides
// what it says instead of 200.
type fcmServer struct {
	srv    *httptest.Server
	tokens *tokenServer

	mu       sync.Mutex
	requests int
	received []map[string]any
	bearers  []string
	errs     []error
	answer   func(n int, bearer string) (status int, header http.Header, body string)
}

func newFCMServer(t *testing.T, tokens *tokenServer) *fcmServer {
	t.Helper()
	fs := &fcmServer{tokens: tokens}
	fs.srv = startTLS(fs.serve)
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fcmServer) serve(w http.ResponseWriter, r *http.Request) {
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	issued := ok && fs.tokens.valid(bearer)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.requests++
	fail := func(status int, err error) {
		fs.errs = append(fs.errs, err)
		http.Error(w, err.Error(), status)
	}
	if !issued {
		fail(http.StatusUnauthorized, fmt.Errorf("bearer %q was never issued", bearer))
		return
	}
	if want := "/v1/projects/" + project + "/messages:send"; r.Method != "POST" || r.URL.Path != want {
		fail(http.StatusNotFound, fmt.Errorf("%s %s, want POST %s", r.Method, r.URL.Path, want))
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	fs.bearers = append(fs.bearers, bearer)
	fs.received = append(fs.received, body)
	if fs.answer != nil {
		status, header, answer := fs.answer(fs.requests, bearer)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
		return
	}
	fmt.Fprintf(w, `{"name":"projects/%s/messages/%d"}`, project, fs.requests)
}

func (fs *fcmServer) count() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.requests
}

func (fs *fcmServer) last(t *testing.T) map[string]any {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.received) == 0 {
		t.Fatalf("FCM received nothing (errors %v)", fs.errs)
	}
	msg, _ := fs.received[len(fs.received)-1]["message"].(map[string]any)
	return msg
}

// serviceAccount is a Google service account key for key, whose token_uri
// is tokenURI.
func serviceAccount(t *testing.T, key *rsa.PrivateKey, tokenURI string) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": project, "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "client_id": "1234567890",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

var (
	keyOnce sync.Once
	keys    [2]*rsa.PrivateKey
)

// rsaKeys are two RSA 2048 keys, made once for the whole run (making one
// takes a while, and -count=20 makes many fixtures).
func rsaKeys(t *testing.T) [2]*rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
	})
	return keys
}

type fixture struct {
	tokens *tokenServer
	fcm    *fcmServer
	sender *fcm.Sender
	client *http.Client
	key    []byte // the service account key
}

// clock is a settable Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().Truncate(time.Second).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newFixture(t *testing.T, now func() time.Time) *fixture {
	t.Helper()
	k := rsaKeys(t)[0]
	f := &fixture{tokens: newTokenServer(t, &k.PublicKey)}
	f.fcm = newFCMServer(t, f.tokens)
	// Both test servers share httptest's certificate; trust both anyway.
	roots := x509.NewCertPool()
	roots.AddCert(f.tokens.srv.Certificate())
	roots.AddCert(f.fcm.srv.Certificate())
	f.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(f.client.CloseIdleConnections)
	f.key = serviceAccount(t, k, f.tokens.uri())
	s, err := fcm.New(fcm.Options{ServiceAccount: f.key, Endpoint: f.fcm.srv.URL, Client: f.client, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	f.sender = s
	return f
}

func message(id string) *push.Message {
	now := time.Now().UTC().Truncate(time.Second)
	badge := 3
	return &push.Message{ID: id, App: "ak",
		Notification: &push.Notification{Title: "Hello", Body: "from Herald", Badge: &badge, Sound: "chime.caf",
			Extras: json.RawMessage(`{"deep_link":"app://orders/42"}`)},
		TTL: time.Hour, Priority: push.PriorityHigh, CollapseID: "score",
		AcceptedAt: now, SendAt: now, ExpiresAt: now.Add(time.Hour)}
}

func android(token string) relay.Target { return relay.Target{Token: token, Platform: push.Android} }

// get walks a decoded JSON object along path.
func get(v any, path ...string) any {
	for _, p := range path {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[p]
	}
	return v
}

// TestNotificationToAndroid: a notification reaches FCM with the project's
// path and an issued access token, as notification, data (all strings, the
// id always) and the android block.
func TestNotificationToAndroid(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.sender.Send(context.Background(), android("tok-android"), message("m_1")); err != nil {
		t.Fatalf("Send: %v (token server %v, FCM %v)", err, f.tokens.errs, f.fcm.errs)
	}
	msg := f.fcm.last(t)
	for path, want := range map[string]any{
		"token": "tok-android", "notification.title": "Hello", "notification.body": "from Herald",
		"data.id": "m_1", "data.extras": `{"deep_link":"app://orders/42"}`,
		"android.ttl": "3600s", "android.priority": "HIGH", "android.collapse_key": "score",
		"android.notification.sound": "chime.caf",
	} {
		if got := get(msg, strings.Split(path, ".")...); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	data, _ := msg["data"].(map[string]any)
	for k, v := range data {
		if _, ok := v.(string); !ok {
			t.Errorf("data.%s is %T; FCM takes strings only", k, v)
		}
	}
	if _, ok := data["message"]; ok {
		t.Errorf("data.message is set for a message without pass-through data: %v", data)
	}
	if msg["apns"] != nil || msg["webpush"] != nil {
		t.Errorf("an Android target got an apns or webpush block: %v", msg)
	}

	// No TTL: FCM gets "0s", delivered now or never.
	m := message("m_0")
	m.TTL = 0
	if err := f.sender.Send(context.Background(), android("tok-android"), m); err != nil {
		t.Fatal(err)
	}
	if got := get(f.fcm.last(t), "android", "ttl"); got != "0s" {
		t.Errorf("TTL 0: android.ttl %v, want 0s", got)
	}
}

// TestPassThroughMessage: pass-through data is handed over as its JSON
// text in data.message; normal priority is NORMAL, and so is no priority
// without a notification, while a notification of no priority is HIGH.
func TestPassThroughMessage(t *testing.T) {
	f := newFixture(t, nil)
	m := message("m_2")
	m.Notification, m.Priority, m.CollapseID = nil, push.PriorityNormal, ""
	m.Data = json.RawMessage(`{"order":42,"items":["a","b"],"paid":true}`)
	if err := f.sender.Send(context.Background(), android("tok"), m); err != nil {
		t.Fatal(err)
	}
	msg := f.fcm.last(t)
	if got := get(msg, "data", "message"); got != string(m.Data) {
		t.Errorf("data.message = %#v, want the JSON text %s", got, m.Data)
	}
	if got := get(msg, "android", "priority"); got != "NORMAL" {
		t.Errorf("normal priority: android.priority %v, want NORMAL", got)
	}
	if msg["notification"] != nil || get(msg, "android", "collapse_key") != nil {
		t.Errorf("a data message got a notification or a collapse key: %v", msg)
	}
	for _, c := range []struct {
		notify bool
		want   string
	}{{false, "NORMAL"}, {true, "HIGH"}} {
		m := message("m_p")
		m.Priority = ""
		if !c.notify {
			m.Notification = nil
		}
		if err := f.sender.Send(context.Background(), android("tok"), m); err != nil {
			t.Fatal(err)
		}
		if got := get(f.fcm.last(t), "android", "priority"); got != c.want {
			t.Errorf("no priority, notification %v: %v, want %s", c.notify, got, c.want)
		}
	}
}

// TestPlatformBlocks: an iOS target gets the apns block (headers and aps)
// for an alert and for a background push; a web target gets the webpush
// headers, with relay/webpush's topic.
func TestPlatformBlocks(t *testing.T) {
	f := newFixture(t, nil)
	ios := relay.Target{Token: "tok-ios", Platform: push.IOS}
	m := message("m_3")
	if err := f.sender.Send(context.Background(), ios, m); err != nil {
		t.Fatal(err)
	}
	msg := f.fcm.last(t)
	for path, want := range map[string]any{
		"apns.headers.apns-priority": "10", "apns.headers.apns-push-type": "alert",
		"apns.headers.apns-expiration":  strconv.FormatInt(m.ExpiresAt.Unix(), 10),
		"apns.headers.apns-collapse-id": "score",
		"apns.payload.aps.badge":        3.0, "apns.payload.aps.sound": "chime.caf",
		"apns.payload.aps.mutable-content": 1.0, "notification.title": "Hello", "data.id": "m_3",
	} {
		if got := get(msg, strings.Split(path, ".")...); got != want {
			t.Errorf("iOS alert: %s = %#v, want %#v", path, got, want)
		}
	}
	if get(msg, "apns", "payload", "aps", "content-available") != nil || msg["android"] != nil {
		t.Errorf("iOS alert: content-available or an android block: %v", msg)
	}

	// Data only, high priority asked: a background push, which APNs
	// takes at priority 5; no TTL: expiration 0; a long collapse ID is
	// hashed to 64 bytes, the same each time.
	m = message("m_4")
	m.Notification, m.TTL, m.Data = nil, 0, json.RawMessage(`{"sync":true}`)
	m.ExpiresAt = m.SendAt
	m.CollapseID = strings.Repeat("c", 100)
	if err := f.sender.Send(context.Background(), ios, m); err != nil {
		t.Fatal(err)
	}
	msg = f.fcm.last(t)
	for path, want := range map[string]any{
		"apns.headers.apns-priority": "5", "apns.headers.apns-push-type": "background",
		"apns.headers.apns-expiration": "0", "apns.payload.aps.content-available": 1.0,
		"apns.headers.apns-collapse-id": relay.APNsCollapseID(m.CollapseID), "data.message": `{"sync":true}`,
	} {
		if got := get(msg, strings.Split(path, ".")...); got != want {
			t.Errorf("iOS background: %s = %#v, want %#v", path, got, want)
		}
	}
	if aps, _ := get(msg, "apns", "payload", "aps").(map[string]any); len(aps) != 1 {
		t.Errorf("iOS background: aps %v, want content-available alone", aps)
	}
	if id := relay.APNsCollapseID(m.CollapseID); len(id) != 64 || id != relay.APNsCollapseID(strings.Repeat("c", 100)) || id == relay.APNsCollapseID(strings.Repeat("c", 99)+"d") {
		t.Errorf("CollapseID of 100 bytes = %q: not 64 bytes, not stable or not distinct", id)
	}

	web := relay.Target{Token: "tok-web", Platform: push.Web}
	m = message("m_5")
	m.TTL, m.Priority = 90*time.Second, push.PriorityNormal
	if err := f.sender.Send(context.Background(), web, m); err != nil {
		t.Fatal(err)
	}
	msg = f.fcm.last(t)
	for path, want := range map[string]any{
		"webpush.headers.TTL": "90", "webpush.headers.Urgency": "normal",
		"webpush.headers.Topic": relay.WebPushTopic("score"), "notification.title": "Hello", "data.id": "m_5",
	} {
		if got := get(msg, strings.Split(path, ".")...); got != want {
			t.Errorf("web: %s = %#v, want %#v", path, got, want)
		}
	}
	if msg["android"] != nil || msg["apns"] != nil {
		t.Errorf("web: an android or apns block: %v", msg)
	}
}

// TestAccessTokenIsReused: one token exchange serves many sends, 100 at
// once included; once the token nears its expiry a new one is exchanged.
func TestAccessTokenIsReused(t *testing.T) {
	clk := newClock()
	f := newFixture(t, clk.now)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() { errs <- f.sender.Send(context.Background(), android("tok"), message(fmt.Sprint("m_", i))) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent send: %v (FCM %v)", err, f.fcm.errs)
		}
	}
	for range 10 {
		if err := f.sender.Send(context.Background(), android("tok"), message("m_seq")); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.tokens.count(); n != 1 {
		t.Errorf("110 sends made %d token exchanges, want 1", n)
	}
	if n := f.fcm.count(); n != 110 {
		t.Errorf("FCM received %d sends, want 110", n)
	}
	// 58 minutes into its hour the token is still used; at 59 it is
	// replaced.
	clk.advance(58 * time.Minute)
	f.sender.Send(context.Background(), android("tok"), message("m_58"))
	if n := f.tokens.count(); n != 1 {
		t.Errorf("at 58 minutes: %d token exchanges, want 1", n)
	}
	clk.advance(time.Minute + time.Second)
	if err := f.sender.Send(context.Background(), android("tok"), message("m_59")); err != nil {
		t.Fatal(err)
	}
	if n := f.tokens.count(); n != 2 {
		t.Errorf("at 59 minutes: %d token exchanges, want 2", n)
	}
	if b := f.fcm.bearers; b[len(b)-1] == b[0] {
		t.Errorf("the send after expiry used the old token %q", b[0])
	}
}

// fcmAnswer is Google's error body with an FcmError detail (and field
// violations, when given).
func fcmAnswer(code int, status, message, errorCode string, fields ...string) string {
	var details []any
	if errorCode != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode})
	}
	if len(fields) > 0 {
		var v []any
		for _, f := range fields {
			v = append(v, map[string]string{"field": f, "description": "Invalid registration token"})
		}
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": v})
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": message, "status": status, "details": details}})
	return string(b)
}

// TestAnswers: every answer FCM documents maps onto the relay's errors,
// naming FCM's status and error code, Retry-After (seconds or a date)
// included.
func TestAnswers(t *testing.T) {
	clk := newClock()
	f := newFixture(t, clk.now)
	date := clk.now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	retry := errors.New("retry")
	for _, c := range []struct {
		name       string
		status     int
		retryAfter string
		body       string
		want       error
		after      time.Duration
		mention    string
	}{
		{"ok", 200, "", `{"name":"projects/herald-test/messages/1"}`, nil, 0, ""},
		{"unregistered", 404, "", fcmAnswer(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"), relay.ErrGone, 0, "404 NOT_FOUND UNREGISTERED"},
		{"404 bare", 404, "", "Not Found", relay.ErrGone, 0, "404"},
		{"unregistered on 400", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "Requested entity was not found.", "UNREGISTERED"), relay.ErrGone, 0, "UNREGISTERED"},
		{"bad token field", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "Invalid value", "INVALID_ARGUMENT", "message.token"), relay.ErrGone, 0, "400 INVALID_ARGUMENT"},
		{"bad token message", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", ""), relay.ErrGone, 0, "registration token"},
		{"bad ttl", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "INVALID_ARGUMENT", "message.android.ttl"), relay.ErrRejected, 0, "message.android.ttl"},
		{"too big", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT"), relay.ErrRejected, 0, "too big"},
		{"not json", 400, "", "<html>bad request</html>", relay.ErrRejected, 0, "bad request"},
		{"sender id mismatch", 403, "", fcmAnswer(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"), relay.ErrCredentials, 0, "SENDER_ID_MISMATCH"},
		{"permission denied", 403, "", fcmAnswer(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied", ""), relay.ErrCredentials, 0, "PERMISSION_DENIED"},
		{"third party auth 401", 401, "", fcmAnswer(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"), relay.ErrCredentials, 0, "THIRD_PARTY_AUTH_ERROR"},
		{"third party auth 400", 400, "", fcmAnswer(400, "INVALID_ARGUMENT", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"), relay.ErrCredentials, 0, "THIRD_PARTY_AUTH_ERROR"},
		{"quota", 429, "7", fcmAnswer(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED"), retry, 7 * time.Second, "429 RESOURCE_EXHAUSTED QUOTA_EXCEEDED"},
		{"quota with a date", 429, date, fcmAnswer(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED"), retry, 2 * time.Minute, "QUOTA_EXCEEDED"},
		{"internal", 500, "", fcmAnswer(500, "INTERNAL", "Internal error encountered.", "INTERNAL"), retry, 0, "500 INTERNAL"},
		{"unavailable", 503, "30", fcmAnswer(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"), retry, 30 * time.Second, "503 UNAVAILABLE"},
		{"bad gateway", 502, "", "<html>502</html>", retry, 0, "502"},
	} {
		f.fcm.mu.Lock()
		before := f.fcm.requests
		f.fcm.answer = func(int, string) (int, http.Header, string) {
			h := http.Header{}
			if c.retryAfter != "" {
				h.Set("Retry-After", c.retryAfter)
			}
			return c.status, h, c.body
		}
		f.fcm.mu.Unlock()
		err := f.sender.Send(context.Background(), android("tok"), message("m"))
		var re *relay.RetryError
		switch {
		case c.want == nil:
			if err != nil {
				t.Errorf("%s: %v, want nil", c.name, err)
			}
		case c.want == retry:
			if !errors.As(err, &re) || re.After != c.after {
				t.Errorf("%s: %v, want a RetryError after %s", c.name, err, c.after)
			}
		case !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %q does not name %q", c.name, err, c.mention)
		}
		if n := f.fcm.count() - before; n != 1 {
			t.Errorf("%s: FCM was asked %d times, want once", c.name, n)
		}
	}
	if n := f.tokens.count(); n != 1 {
		t.Errorf("%d token exchanges, want 1: only UNAUTHENTICATED drops the token", n)
	}
	// An FCM that cannot be reached is retried.
	f.fcm.srv.Close()
	var re *relay.RetryError
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); !errors.As(err, &re) {
		t.Errorf("an unreachable FCM: %v, want a RetryError", err)
	}
}

// TestUnauthenticatedRefreshes: a 401 drops the access token, a fresh one
// is exchanged and the send made once more; a second 401 means the
// credentials are refused.
func TestUnauthenticatedRefreshes(t *testing.T) {
	unauth := fcmAnswer(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.", "")
	f := newFixture(t, nil)
	if err := f.sender.Send(context.Background(), android("tok"), message("m_a")); err != nil {
		t.Fatal(err)
	}
	first := f.fcm.bearers[0]
	// FCM stops taking the first token (revoked, or expired early).
	f.fcm.mu.Lock()
	f.fcm.answer = func(_ int, bearer string) (int, http.Header, string) {
		if bearer == first {
			return 401, nil, unauth
		}
		return 200, nil, `{"name":"projects/herald-test/messages/2"}`
	}
	f.fcm.mu.Unlock()
	if err := f.sender.Send(context.Background(), android("tok"), message("m_b")); err != nil {
		t.Fatalf("a send after the token was revoked: %v", err)
	}
	if n, m := f.tokens.count(), f.fcm.count(); n != 2 || m != 3 {
		t.Errorf("%d token exchanges and %d sends, want 2 and 3", n, m)
	}
	if b := f.fcm.bearers; b[2] == first {
		t.Errorf("the retry used the revoked token")
	}
	// The fresh token is kept.
	if err := f.sender.Send(context.Background(), android("tok"), message("m_c")); err != nil || f.tokens.count() != 2 {
		t.Errorf("the next send: %v, %d token exchanges, want 2", err, f.tokens.count())
	}

	// FCM refuses every token: one retry, then ErrCredentials.
	f.fcm.mu.Lock()
	f.fcm.answer = func(int, string) (int, http.Header, string) { return 401, nil, unauth }
	f.fcm.mu.Unlock()
	tokens, sends := f.tokens.count(), f.fcm.count()
	err := f.sender.Send(context.Background(), android("tok"), message("m_d"))
	if !errors.Is(err, relay.ErrCredentials) || !strings.Contains(err.Error(), "401 UNAUTHENTICATED") {
		t.Errorf("401 twice: %v, want ErrCredentials naming 401 UNAUTHENTICATED", err)
	}
	if n, m := f.tokens.count()-tokens, f.fcm.count()-sends; n != 1 || m != 2 {
		t.Errorf("401 twice: %d token exchanges and %d sends, want 1 and 2", n, m)
	}
}

// TestTokenEndpointFailures: a key the token endpoint refuses (signed
// with another key than the service account's, or answered invalid_grant)
// is ErrCredentials, with nothing sent to FCM; a token endpoint that is
// down or answers 503 is retried.
func TestTokenEndpointFailures(t *testing.T) {
	f := newFixture(t, nil)
	// A key whose private half is not the one Google knows.
	other := serviceAccount(t, rsaKeys(t)[1], f.tokens.uri())
	s, err := fcm.New(fcm.Options{ServiceAccount: other, Endpoint: f.fcm.srv.URL, Client: f.client})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), android("tok"), message("m"))
	if !errors.Is(err, relay.ErrCredentials) || !strings.Contains(err.Error(), "invalid_grant") || len(f.tokens.errs) != 1 {
		t.Errorf("an assertion signed with another key: %v (token server %v), want ErrCredentials naming invalid_grant", err, f.tokens.errs)
	}

	f.tokens.mu.Lock()
	f.tokens.status, f.tokens.body = 400, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`
	f.tokens.mu.Unlock()
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); !errors.Is(err, relay.ErrCredentials) || !strings.Contains(err.Error(), "400 invalid_grant") {
		t.Errorf("invalid_grant: %v, want ErrCredentials", err)
	}
	f.tokens.mu.Lock()
	f.tokens.status, f.tokens.body = 401, `{"error":"invalid_client","error_description":"The OAuth client was not found."}`
	f.tokens.mu.Unlock()
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); !errors.Is(err, relay.ErrCredentials) || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("invalid_client: %v, want ErrCredentials", err)
	}
	f.tokens.mu.Lock()
	f.tokens.status, f.tokens.body = 503, `{"error":"temporarily_unavailable"}`
	f.tokens.mu.Unlock()
	var re *relay.RetryError
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); !errors.As(err, &re) || errors.Is(err, relay.ErrCredentials) {
		t.Errorf("token endpoint 503: %v, want a RetryError", err)
	}
	if n := f.fcm.count(); n != 0 {
		t.Errorf("FCM was asked %d times without an access token", n)
	}
	// Once the endpoint answers again, sends go.
	f.tokens.mu.Lock()
	f.tokens.status = 0
	f.tokens.mu.Unlock()
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); err != nil {
		t.Errorf("after the token endpoint recovered: %v", err)
	}

	g := newFixture(t, nil)
	g.tokens.srv.Close()
	if err := g.sender.Send(context.Background(), android("tok"), message("m")); !errors.As(err, &re) {
		t.Errorf("token endpoint down: %v, want a RetryError", err)
	}
	if n := g.fcm.count(); n != 0 {
		t.Errorf("FCM was asked %d times without an access token", n)
	}
}

// TestSendHonoursContext: a Send waiting for a slow token exchange gives
// up when its ctx ends, and a later Send still gets the token.
func TestSendHonoursContext(t *testing.T) {
	f := newFixture(t, nil)
	hold, arrived := make(chan struct{}), make(chan struct{}, 1)
	f.tokens.mu.Lock()
	f.tokens.hold, f.tokens.arrived = hold, arrived
	f.tokens.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.sender.Send(ctx, android("tok"), message("m")) }()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled Send: %v, want context.Canceled", err)
	}
	f.tokens.mu.Lock()
	f.tokens.hold = nil
	f.tokens.mu.Unlock()
	close(hold)
	if err := f.sender.Send(context.Background(), android("tok"), message("m")); err != nil {
		t.Fatal(err)
	}
	if n, m := f.tokens.count(), f.fcm.count(); n != 1 || m != 1 {
		t.Errorf("%d token exchanges, %d sends; want 1 and 1", n, m)
	}
}

// TestTooLargeIsRefusedBeforeSending: data of more than MaxData bytes
// (keys and values) is refused without a token exchange or a request;
// exactly MaxData goes.
func TestTooLargeIsRefusedBeforeSending(t *testing.T) {
	f := newFixture(t, nil)
	m := message("m_big")
	m.Notification = nil
	// id + m_big + message + {"p":"..."}
	fit := fcm.MaxData - len("id") - len("m_big") - len("message") - len(`{"p":""}`)
	for _, c := range []struct {
		pad int
		ok  bool
	}{{fit + 1, false}, {fit, true}} {
		m.Data = json.RawMessage(`{"p":"` + strings.Repeat("x", c.pad) + `"}`)
		before := f.fcm.count()
		err := f.sender.Send(context.Background(), android("tok"), m)
		if c.ok && err != nil {
			t.Errorf("data of exactly %d bytes: %v", fcm.MaxData, err)
		}
		if !c.ok {
			if !errors.Is(err, relay.ErrRejected) || f.fcm.count() != before || f.tokens.count() != 0 {
				t.Errorf("data of %d bytes: %v, %d sends, %d token exchanges; want ErrRejected and nothing sent", fcm.MaxData+1, err, f.fcm.count()-before, f.tokens.count())
			}
		}
	}
	// The extras count too.
	m = message("m_x")
	m.Notification.Extras = json.RawMessage(`"` + strings.Repeat("y", fcm.MaxData) + `"`)
	if _, err := fcm.Body(android("tok"), m, project); !errors.Is(err, relay.ErrRejected) {
		t.Errorf("extras of %d bytes: %v, want ErrRejected", fcm.MaxData, err)
	}
	if _, err := fcm.Body(relay.Target{Platform: push.Android}, message("m"), project); !errors.Is(err, relay.ErrRejected) {
		t.Errorf("no token: %v, want ErrRejected", err)
	}
}

// TestNewRefusesKeys: New takes only a service account key with its
// project, client email, RSA private key and an https token_uri.
func TestNewRefusesKeys(t *testing.T) {
	good := map[string]string{}
	if err := json.Unmarshal(serviceAccount(t, rsaKeys(t)[0], "https://oauth2.example.com/token"), &good); err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) []byte {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		j, _ := json.Marshal(m)
		return j
	}
	if _, err := fcm.New(fcm.Options{ServiceAccount: with("", "")}); err != nil {
		t.Fatalf("a good key: %v", err)
	}
	for _, c := range []struct {
		name    string
		key     []byte
		mention string
	}{
		{"not JSON", []byte("-----BEGIN PRIVATE KEY-----"), "not JSON"},
		{"nothing", nil, "not JSON"},
		{"authorized user", with("type", "authorized_user"), "authorized_user"},
		{"no type", with("type", ""), "type"},
		{"no project", with("project_id", ""), "project_id"},
		{"no email", with("client_email", ""), "client_email"},
		{"no private key", with("private_key", ""), "private_key"},
		{"no token uri", with("token_uri", ""), "token_uri"},
		{"http token uri", with("token_uri", "http://oauth2.example.com/token"), "token_uri"},
		{"key not PEM", with("private_key", "MIIEvQIBADANBg"), "private_key"},
		{"key not RSA", with("private_key", ed25519PEM(t)), "RSA"},
	} {
		if _, err := fcm.New(fcm.Options{ServiceAccount: c.key}); err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.mention)
		}
	}
	if _, err := fcm.New(fcm.Options{ServiceAccount: with("", ""), Endpoint: "fcm.googleapis.com"}); err == nil {
		t.Error("an endpoint that is not a URL was taken")
	}
}

func ed25519PEM(t *testing.T) string {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// TestBody is the send request as FCM gets it, for the documentation.
func TestBody(t *testing.T) {
	m := message("m_doc")
	m.Notification.Extras, m.Notification.Badge = nil, nil
	b, err := fcm.Body(android("tok-1"), m, project)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"message":{"token":"tok-1","notification":{"title":"Hello","body":"from Herald"},"data":{"id":"m_doc"},` +
		`"android":{"collapse_key":"score","priority":"HIGH","ttl":"3600s","notification":{"sound":"chime.caf"}}}}`
	if string(b) != want {
		t.Errorf("Body:\n%s\nwant\n%s", b, want)
	}
}
