package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
	"github.com/heraldpush/herald/internal/relay/apns"
)

const (
	keyID  = "KEY1234567"
	teamID = "TEAM123456"
	topic  = "com.example.herald"
	device = "4f2a9c0b7e3d4a1f8b6c5d2e9f0a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"
)

var uuidForm = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// fakeAPNs is a local APNs as Apple documents it, over HTTP/2 and TLS: it
// verifies each push's provider token against the public half of the
// app's .p8 key (ES256, kid, iss, iat), checks the apns-* headers and the
// path, records what it received, and answers with status and Apple's
// JSON body of reason and timestamp. A provider token listed in expired,
// or any when expireAll is set, is answered 403 ExpiredProviderToken.
type fakeAPNs struct {
	srv *httptest.Server
	pub *ecdsa.PublicKey

	mu         sync.Mutex
	conns      int // TCP connections accepted
	requests   int // requests, refused ones included
	status     int
	reason     string
	timestamp  int64
	retryAfter string
	expired    map[string]bool
	expireAll  bool
	received   []received
	errs       []error
}

type received struct {
	status  int    // what the fake answered
	token   string // the device token in the path
	jwt     string
	iat     int64
	header  http.Header
	raw     []byte
	payload map[string]any
}

func newFakeAPNs(t *testing.T, pub *ecdsa.PublicKey) *fakeAPNs {
	t.Helper()
	f := &fakeAPNs{pub: pub, status: http.StatusOK, expired: map[string]bool{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
		}
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPNs) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	fail := func(err error) {
		f.errs = append(f.errs, err)
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"reason":%q}`, "Fake: "+err.Error())
	}
	if r.ProtoMajor != 2 {
		fail(fmt.Errorf("a request over %s, not HTTP/2", r.Proto))
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != "POST" || !ok || token == "" {
		fail(fmt.Errorf("%s %s", r.Method, r.URL.Path))
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
	if !ok {
		fail(fmt.Errorf("authorization %q", r.Header.Get("Authorization")))
		return
	}
	tok, err := jwt.Parse(bearer, func(*jwt.Token) (any, error) { return f.pub, nil }, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil {
		fail(err)
		return
	}
	claims := tok.Claims.(jwt.MapClaims)
	iat, isNum := claims["iat"].(float64)
	if tok.Header["alg"] != "ES256" || tok.Header["kid"] != keyID || claims["iss"] != teamID || !isNum {
		fail(fmt.Errorf("provider token header %v claims %v", tok.Header, claims))
		return
	}
	h := r.Header
	pt, prio := h.Get("Apns-Push-Type"), h.Get("Apns-Priority")
	switch {
	case h.Get("Apns-Topic") != topic:
		fail(fmt.Errorf("apns-topic %q", h.Get("Apns-Topic")))
		return
	case pt != "alert" && pt != "background":
		fail(fmt.Errorf("apns-push-type %q", pt))
		return
	case prio != "10" && prio != "5", pt == "background" && prio != "5":
		fail(fmt.Errorf("apns-priority %q for a %s push", prio, pt))
		return
	case !uuidForm.MatchString(h.Get("Apns-Id")):
		fail(fmt.Errorf("apns-id %q", h.Get("Apns-Id")))
		return
	case len(h.Get("Apns-Collapse-Id")) > 64:
		fail(fmt.Errorf("apns-collapse-id of %d bytes", len(h.Get("Apns-Collapse-Id"))))
		return
	}
	if _, err := strconv.ParseInt(h.Get("Apns-Expiration"), 10, 64); err != nil {
		fail(fmt.Errorf("apns-expiration %q", h.Get("Apns-Expiration")))
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil || len(raw) > 4096 {
		fail(fmt.Errorf("payload of %d bytes: %v", len(raw), err))
		return
	}
	status, reason, ts := f.status, f.reason, f.timestamp
	if f.expireAll || f.expired[bearer] {
		status, reason, ts = http.StatusForbidden, "ExpiredProviderToken", 0
	}
	f.received = append(f.received, received{status, token, bearer, int64(iat), h.Clone(), raw, payload})
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	w.Header().Set("Apns-Id", h.Get("Apns-Id"))
	w.WriteHeader(status)
	if reason != "" {
		body := map[string]any{"reason": reason}
		if ts != 0 {
			body["timestamp"] = ts
		}
		json.NewEncoder(w).Encode(body)
	}
}

// answer sets what the fake answers from now on.
func (f *fakeAPNs) answer(status int, reason string, timestamp int64, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.reason, f.timestamp, f.retryAfter = status, reason, timestamp, retryAfter
}

// last returns the last push received and any check that failed.
func (f *fakeAPNs) last(t *testing.T) received {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) > 0 {
		t.Fatalf("the fake APNs refused: %v", f.errs)
	}
	if len(f.received) == 0 {
		t.Fatal("the fake APNs received nothing")
	}
	return f.received[len(f.received)-1]
}

func (f *fakeAPNs) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.received)
}

// clock is a Now that the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)} }

// p8 makes an APNs authentication key as Apple hands it out: a P-256 key,
// PKCS#8, in a PEM "PRIVATE KEY" block.
func p8(t *testing.T) ([]byte, *ecdsa.PublicKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), &k.PublicKey
}

// setup returns a fake APNs and a Sender for it on the clock c (time.Now
// when nil).
func setup(t *testing.T, c *clock) (*fakeAPNs, *apns.Sender) {
	t.Helper()
	key, pub := p8(t)
	f := newFakeAPNs(t, pub)
	o := apns.Options{KeyP8: key, KeyID: keyID, TeamID: teamID, Topic: topic, Endpoint: f.srv.URL, Client: f.srv.Client()}
	if c != nil {
		o.Now = c.Now
	}
	s, err := apns.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return f, s
}

func message(id string) *push.Message {
	now := time.Now().UTC().Truncate(time.Second)
	badge := 3
	return &push.Message{ID: id, App: "ak",
		Notification: &push.Notification{Title: "Hello", Body: "from Herald", Badge: &badge, Sound: "default", Extras: json.RawMessage(`{"deep": "link"}`)},
		Data:         json.RawMessage(`{"order":42}`), TTL: 90 * time.Second, Priority: push.PriorityHigh,
		CollapseID: "score", SendAt: now, ExpiresAt: now.Add(90 * time.Second)}
}

var target = relay.Target{Token: device, Platform: push.IOS}

// TestAlert: a message with a notification is an alert push, its
// notification in aps (mutable-content set for the app's extension), the
// Herald ID, extras and message beside it; the headers carry its topic,
// priority, expiry, collapse ID and an apns-id derived from its ID.
func TestAlert(t *testing.T) {
	f, s := setup(t, nil)
	m := message("m_1")
	if err := s.Send(context.Background(), target, m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := f.last(t)
	want := `{"aps":{"alert":{"title":"Hello","body":"from Herald"},"badge":3,"sound":"default","mutable-content":1},"id":"m_1","extras":{"deep":"link"},"message":{"order":42}}`
	if string(got.raw) != want {
		t.Errorf("payload\n%s\nwant\n%s", got.raw, want)
	}
	if p, _ := apns.Payload(m); string(p) != want {
		t.Errorf("Payload returned %s, and APNs received %s", p, got.raw)
	}
	h := got.header
	if got.token != device || h.Get("Apns-Push-Type") != "alert" || h.Get("Apns-Priority") != "10" ||
		h.Get("Apns-Expiration") != strconv.FormatInt(m.ExpiresAt.Unix(), 10) || h.Get("Apns-Collapse-Id") != "score" {
		t.Errorf("token %q, headers %v", got.token, h)
	}
	id := h.Get("Apns-Id")
	if id != apns.ID("m_1") || !uuidForm.MatchString(id) || id[14] != '8' || !strings.ContainsRune("89ab", rune(id[19])) {
		t.Errorf("apns-id %q: not apns.ID(m_1) %q, or not a version 8 RFC 9562 UUID", id, apns.ID("m_1"))
	}

	// Sent again, the message carries the same apns-id; another has its own.
	if err := s.Send(context.Background(), target, m); err != nil {
		t.Fatal(err)
	}
	if again := f.last(t).header.Get("Apns-Id"); again != id {
		t.Errorf("a resend's apns-id %q, the first %q", again, id)
	}
	if apns.ID("m_2") == id {
		t.Error("two messages share an apns-id")
	}

	// Normal priority is 5; no priority is high.
	for p, want := range map[push.Priority]string{push.PriorityNormal: "5", "": "10", push.PriorityHigh: "10"} {
		m.Priority = p
		if err := s.Send(context.Background(), target, m); err != nil {
			t.Fatal(err)
		}
		if got := f.last(t).header.Get("Apns-Priority"); got != want {
			t.Errorf("priority %q: apns-priority %q, want %q", p, got, want)
		}
	}
}

// TestBackground: a message of data alone is a background push at
// priority 5, whatever its priority, with content-available and the
// message.
func TestBackground(t *testing.T) {
	f, s := setup(t, nil)
	m := message("m_2")
	m.Notification, m.CollapseID = nil, ""
	if err := s.Send(context.Background(), target, m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := f.last(t)
	if want := `{"aps":{"content-available":1},"id":"m_2","message":{"order":42}}`; string(got.raw) != want {
		t.Errorf("payload %s, want %s", got.raw, want)
	}
	if h := got.header; h.Get("Apns-Push-Type") != "background" || h.Get("Apns-Priority") != "5" || h.Values("Apns-Collapse-Id") != nil {
		t.Errorf("headers %v", h)
	}
}

// TestTTLZero: a message without a TTL is sent now or never.
func TestTTLZero(t *testing.T) {
	f, s := setup(t, nil)
	m := message("m_3")
	m.TTL, m.ExpiresAt = 0, m.SendAt
	if err := s.Send(context.Background(), target, m); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t).header.Get("Apns-Expiration"); got != "0" {
		t.Errorf("apns-expiration %q, want 0", got)
	}
}

// TestLongCollapseID: a collapse ID over 64 bytes is hashed to 64, the
// same each time; one of 64 goes as it is.
func TestLongCollapseID(t *testing.T) {
	f, s := setup(t, nil)
	long := strings.Repeat("é", 40) // 80 bytes
	var seen []string
	for range 2 {
		m := message("m_4")
		m.CollapseID = long
		if err := s.Send(context.Background(), target, m); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, f.last(t).header.Get("Apns-Collapse-Id"))
	}
	if len(seen[0]) == 0 || len(seen[0]) > 64 || seen[0] != seen[1] || seen[0] != relay.APNsCollapseID(long) {
		t.Errorf("apns-collapse-id %q for an 80-byte collapse ID: not 1 to 64 bytes, or not stable", seen)
	}
	if relay.APNsCollapseID(long+"x") == seen[0] {
		t.Error("two long collapse IDs share an apns-collapse-id")
	}
	exact := strings.Repeat("c", 64)
	if got := relay.APNsCollapseID(exact); got != exact {
		t.Errorf("a 64-byte collapse ID became %q", got)
	}
}

// TestAnswers: every answer Apple documents maps onto the relay's errors,
// the reason named in the error, Retry-After read; a 410 deactivates the
// token only when APNs learnt it was invalid after the device registered
// it.
func TestAnswers(t *testing.T) {
	f, s := setup(t, nil)
	since := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	after, before := since.Add(time.Minute).UnixMilli(), since.Add(-time.Minute).UnixMilli()
	retry := errors.New("retry")
	for _, c := range []struct {
		status     int
		reason     string
		timestamp  int64
		since      time.Time
		retryAfter string
		want       error
		after      time.Duration
	}{
		{200, "", 0, since, "", nil, 0},
		{400, "BadDeviceToken", 0, since, "", relay.ErrGone, 0},
		{400, "DeviceTokenNotForTopic", 0, since, "", relay.ErrGone, 0},
		{410, "Unregistered", after, since, "", relay.ErrGone, 0},
		{410, "Unregistered", before, since, "", relay.ErrRejected, 0},
		{410, "Unregistered", since.UnixMilli(), since, "", relay.ErrRejected, 0},
		{410, "ExpiredToken", after, since, "", relay.ErrGone, 0},
		{410, "ExpiredToken", before, since, "", relay.ErrRejected, 0},
		{410, "Unregistered", before, time.Time{}, "", relay.ErrGone, 0},
		{410, "Unregistered", 0, since, "", relay.ErrGone, 0},
		{403, "InvalidProviderToken", 0, since, "", relay.ErrCredentials, 0},
		{403, "MissingProviderToken", 0, since, "", relay.ErrCredentials, 0},
		{403, "BadCertificate", 0, since, "", relay.ErrCredentials, 0},
		{403, "BadCertificateEnvironment", 0, since, "", relay.ErrCredentials, 0},
		{403, "Forbidden", 0, since, "", relay.ErrCredentials, 0},
		{403, "UnrelatedKeyIdInToken", 0, since, "", relay.ErrCredentials, 0},
		{403, "BadEnvironmentKeyIdInToken", 0, since, "", relay.ErrCredentials, 0},
		{403, "TooManyProviderTokenUpdates", 0, since, "", retry, 0},
		{429, "TooManyProviderTokenUpdates", 0, since, "", retry, 0},
		{413, "PayloadTooLarge", 0, since, "", relay.ErrRejected, 0},
		{429, "TooManyRequests", 0, since, "7", retry, 7 * time.Second},
		{429, "TooManyRequests", 0, since, "", retry, 0},
		{500, "InternalServerError", 0, since, "", retry, 0},
		{503, "ServiceUnavailable", 0, since, "30", retry, 30 * time.Second},
		{503, "Shutdown", 0, since, "", retry, 0},
		{400, "IdleTimeout", 0, since, "", retry, 0},
		{400, "BadTopic", 0, since, "", relay.ErrRejected, 0},
		{400, "TopicDisallowed", 0, since, "", relay.ErrRejected, 0},
		{400, "BadExpirationDate", 0, since, "", relay.ErrRejected, 0},
		{400, "BadPriority", 0, since, "", relay.ErrRejected, 0},
		{400, "BadCollapseId", 0, since, "", relay.ErrRejected, 0},
		{400, "BadMessageId", 0, since, "", relay.ErrRejected, 0},
		{400, "MissingTopic", 0, since, "", relay.ErrRejected, 0},
		{400, "MissingDeviceToken", 0, since, "", relay.ErrRejected, 0},
		{400, "PayloadEmpty", 0, since, "", relay.ErrRejected, 0},
		{400, "InvalidPushType", 0, since, "", relay.ErrRejected, 0},
		{400, "DuplicateHeaders", 0, since, "", relay.ErrRejected, 0},
		{404, "BadPath", 0, since, "", relay.ErrRejected, 0},
		{405, "MethodNotAllowed", 0, since, "", relay.ErrRejected, 0},
	} {
		f.answer(c.status, c.reason, c.timestamp, c.retryAfter)
		to := target
		to.Since = c.since
		err := s.Send(context.Background(), to, message("m_5"))
		name := fmt.Sprintf("%d %s (timestamp %d, since %s)", c.status, c.reason, c.timestamp, c.since.Format(time.RFC3339))
		var re *relay.RetryError
		switch {
		case c.want == nil:
			if err != nil {
				t.Errorf("%s: %v, want nil", name, err)
			}
			continue
		case c.want == retry:
			if !errors.As(err, &re) || re.After != c.after {
				t.Errorf("%s: %v, want a RetryError after %s", name, err, c.after)
			}
		case !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: the error %q does not name the reason", name, err)
		}
		for _, other := range []error{relay.ErrGone, relay.ErrRejected, relay.ErrCredentials} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%s: %v is also %v", name, err, other)
			}
		}
	}
	f.last(t) // no check of the fake failed
}

// TestExpiredProviderToken: APNs calling the provider token expired makes
// the sender replace it and send once more, when the token is 20 minutes
// old; when it is younger, the send is retried once it may be replaced,
// and the token is kept. A new token called expired as well is not sent a
// third time.
func TestExpiredProviderToken(t *testing.T) {
	c := newClock()
	f, s := setup(t, c)
	start := c.Now()
	if err := s.Send(context.Background(), target, message("m_6")); err != nil {
		t.Fatal(err)
	}
	first := f.last(t).jwt

	// 21 minutes later APNs calls the first token expired: a new one,
	// issued now, and the push goes.
	f.mu.Lock()
	f.expired[first] = true
	f.mu.Unlock()
	c.advance(21 * time.Minute)
	n := f.count()
	if err := s.Send(context.Background(), target, message("m_7")); err != nil {
		t.Fatalf("Send after ExpiredProviderToken: %v", err)
	}
	f.mu.Lock()
	tries := append([]received(nil), f.received[n:]...)
	f.mu.Unlock()
	if len(tries) != 2 || tries[0].jwt != first || tries[0].status != 403 || tries[1].jwt == first ||
		tries[1].status != 200 || tries[1].iat != start.Add(21*time.Minute).Unix() {
		t.Fatalf("%d requests for one send; want the expired token refused, then a new one issued now accepted", len(tries))
	}
	second := tries[1].jwt
	if tries[0].header.Get("Apns-Id") != tries[1].header.Get("Apns-Id") {
		t.Error("the retried push has another apns-id")
	}

	// Five minutes later APNs calls the second expired too: it may not be
	// replaced for another 15 minutes, so the send is retried then.
	f.mu.Lock()
	f.expired[second] = true
	f.mu.Unlock()
	c.advance(5 * time.Minute)
	n = f.count()
	var re *relay.RetryError
	err := s.Send(context.Background(), target, message("m_8"))
	if !errors.As(err, &re) || re.After != 15*time.Minute {
		t.Fatalf("ExpiredProviderToken for a 5-minute-old token: %v, want a RetryError after 15m", err)
	}
	if f.count() != n+1 {
		t.Errorf("%d requests, want the one", f.count()-n)
	}
	f.mu.Lock()
	delete(f.expired, second)
	f.mu.Unlock()
	if err := s.Send(context.Background(), target, message("m_9")); err != nil || f.last(t).jwt != second {
		t.Errorf("the next send: %v; want it to go with the token kept", err)
	}

	// When APNs calls every token expired (the clock is off), the new
	// token is sent once, not again.
	f.mu.Lock()
	f.expireAll = true
	f.mu.Unlock()
	c.advance(20 * time.Minute)
	n = f.count()
	err = s.Send(context.Background(), target, message("m_10"))
	if !errors.As(err, &re) || re.After != 20*time.Minute || !strings.Contains(err.Error(), "ExpiredProviderToken") {
		t.Errorf("a new token expired as well: %v, want a RetryError after 20m", err)
	}
	if f.count() != n+2 {
		t.Errorf("%d requests, want 2", f.count()-n)
	}
}

// TestExpiredProviderTokenConcurrent: when sends at once meet
// ExpiredProviderToken, one replaces the token and the others send again
// with its replacement, rather than being told to wait.
func TestExpiredProviderTokenConcurrent(t *testing.T) {
	c := newClock()
	f, s := setup(t, c)
	if err := s.Send(context.Background(), target, message("m_0")); err != nil {
		t.Fatal(err)
	}
	first := f.last(t).jwt
	f.mu.Lock()
	f.expired[first] = true
	f.mu.Unlock()
	c.advance(30 * time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() { errs <- s.Send(context.Background(), target, message(fmt.Sprint("m_", i))) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f.last(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	tokens := map[string]int{}
	for _, r := range f.received[1:] {
		if r.status == 200 {
			tokens[r.jwt]++
		}
	}
	if len(tokens) != 1 || tokens[first] != 0 {
		t.Errorf("accepted with %d provider tokens, want one new one", len(tokens))
	}
}

// TestTokenReused: one provider token serves every send for 50 minutes;
// then it is replaced, issued at that time.
func TestTokenReused(t *testing.T) {
	c := newClock()
	f, s := setup(t, c)
	start := c.Now()
	var first string
	for i := range 50 {
		if err := s.Send(context.Background(), target, message(fmt.Sprint("m_", i))); err != nil {
			t.Fatal(err)
		}
		got := f.last(t)
		if i == 0 {
			first = got.jwt
			if got.iat != start.Unix() {
				t.Errorf("iat %d, want %d", got.iat, start.Unix())
			}
		} else if got.jwt != first {
			t.Fatalf("after %s, a new provider token", c.Now().Sub(start))
		}
		c.advance(time.Minute - time.Second) // the last send is at 48m51s
	}
	c.set(start.Add(50*time.Minute - time.Nanosecond))
	if err := s.Send(context.Background(), target, message("m_a")); err != nil || f.last(t).jwt != first {
		t.Fatalf("just under 50 minutes: %v, or a new token", err)
	}
	c.advance(time.Nanosecond)
	if err := s.Send(context.Background(), target, message("m_b")); err != nil {
		t.Fatal(err)
	}
	got := f.last(t)
	if got.jwt == first || got.iat != start.Add(50*time.Minute).Unix() {
		t.Fatalf("at 50 minutes: the same token, or not issued then (iat %d)", got.iat)
	}
	c.advance(10 * time.Minute)
	if err := s.Send(context.Background(), target, message("m_c")); err != nil || f.last(t).jwt != got.jwt {
		t.Errorf("10 minutes after: %v, or yet another token", err)
	}
}

// TestConcurrent: 200 sends at once all go, over one HTTP/2 connection and
// with one provider token, though the Sender is new and has no connection
// when they start.
func TestConcurrent(t *testing.T) {
	f, s := setup(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() { errs <- s.Send(context.Background(), target, message(fmt.Sprint("m_", i))) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f.last(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.received) != 200 || f.conns != 1 {
		t.Errorf("%d pushes over %d connections, want 200 over 1", len(f.received), f.conns)
	}
	for _, r := range f.received {
		if r.jwt != f.received[0].jwt {
			t.Fatal("the sends used more than one provider token")
		}
	}
}

// TestTooLargeIsRefusedBeforeSending: a payload over 4,096 bytes is
// refused without a request; one of exactly 4,096 goes.
func TestTooLargeIsRefusedBeforeSending(t *testing.T) {
	f, s := setup(t, nil)
	m := message("m_big")
	m.Data = json.RawMessage(`{"p":""}`)
	base, err := apns.Payload(m)
	if err != nil {
		t.Fatal(err)
	}
	fit := apns.MaxPayload - len(base)
	for _, c := range []struct {
		pad int
		ok  bool
	}{{fit, true}, {fit + 1, false}} {
		m.Data = json.RawMessage(`{"p":"` + strings.Repeat("x", c.pad) + `"}`)
		f.mu.Lock()
		before := f.requests
		f.mu.Unlock()
		err := s.Send(context.Background(), target, m)
		if c.ok && (err != nil || len(f.last(t).raw) != 4096) {
			t.Errorf("a payload of exactly 4,096 bytes: %v", err)
		}
		f.mu.Lock()
		sent := f.requests - before
		f.mu.Unlock()
		if !c.ok && (!errors.Is(err, relay.ErrRejected) || sent != 0) {
			t.Errorf("a payload of 4,097 bytes: %v, %d requests", err, sent)
		}
	}
}

// TestUnreachable: a closed service is retried; a cancelled send answers
// its context's error.
func TestUnreachable(t *testing.T) {
	f, s := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, target, message("m_x")); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled send: %v", err)
	}
	f.srv.Close()
	var re *relay.RetryError
	if err := s.Send(context.Background(), target, message("m_y")); !errors.As(err, &re) || re.After != 0 {
		t.Errorf("an unreachable APNs: %v, want a RetryError", err)
	}
}

// roundTrip answers every request 200 and records its URL.
type roundTrip struct{ urls []string }

func (rt *roundTrip) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.urls = append(rt.urls, r.URL.String())
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// TestNew: a key must be PEM, PKCS#8 and P-256, and the key ID, team and
// topic given; the environment picks Apple's endpoint.
func TestNew(t *testing.T) {
	key, _ := p8(t)
	o := apns.Options{KeyP8: key, KeyID: keyID, TeamID: teamID, Topic: topic}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	derEd, _ := x509.MarshalPKCS8PrivateKey(ed)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	for name, bad := range map[string]func(*apns.Options){
		"no key":       func(o *apns.Options) { o.KeyP8 = nil },
		"not PEM":      func(o *apns.Options) { o.KeyP8 = []byte("MIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg") },
		"SEC1, not p8": func(o *apns.Options) { o.KeyP8 = pemOf("EC PRIVATE KEY", sec1) },
		"P-384":        func(o *apns.Options) { o.KeyP8 = pemOf("PRIVATE KEY", der384) },
		"Ed25519":      func(o *apns.Options) { o.KeyP8 = pemOf("PRIVATE KEY", derEd) },
		"no key ID":    func(o *apns.Options) { o.KeyID = "" },
		"no team":      func(o *apns.Options) { o.TeamID = "" },
		"no topic":     func(o *apns.Options) { o.Topic = "" },
		"environment":  func(o *apns.Options) { o.Environment = "staging" },
		"endpoint":     func(o *apns.Options) { o.Endpoint = "api.push.apple.com" },
	} {
		o := o
		bad(&o)
		if _, err := apns.New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	for env, want := range map[string]string{"": apns.Production, "production": apns.Production, "sandbox": apns.Sandbox} {
		rt := &roundTrip{}
		o := o
		o.Environment, o.Client = env, &http.Client{Transport: rt}
		s, err := apns.New(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(context.Background(), target, message("m_n")); err != nil {
			t.Fatal(err)
		}
		if len(rt.urls) != 1 || rt.urls[0] != want+"/3/device/"+device {
			t.Errorf("environment %q: posted to %v, want %s", env, rt.urls, want)
		}
	}
}
