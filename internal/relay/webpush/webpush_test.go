package webpush_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
	relaywp "github.com/heraldpush/herald/internal/relay/webpush"
	"github.com/heraldpush/herald/internal/webpush"
)

// pushService is a local Web Push service as RFC 8030 and RFC 8292 define
// one: it checks each push's VAPID credentials against the application
// server key the subscription was made with, decrypts the body with the
// subscription's private key (the browser's half, client.WebPushKeys, an
// implementation of its own), and answers with status.
type pushService struct {
	srv    *httptest.Server
	keys   *client.WebPushKeys
	appKey []byte // the application server key the subscription names

	mu       sync.Mutex
	status   int
	header   http.Header // extra answer headers
	received []received
	errs     []error
}

type received struct {
	plain  []byte
	header http.Header
}

func newPushService(t *testing.T, appKey []byte) *pushService {
	t.Helper()
	keys, err := client.NewWebPushKeys()
	if err != nil {
		t.Fatal(err)
	}
	ps := &pushService{keys: keys, appKey: appKey, status: http.StatusCreated}
	ps.srv = httptest.NewTLSServer(http.HandlerFunc(ps.serve))
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *pushService) serve(w http.ResponseWriter, r *http.Request) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	fail := func(err error) {
		ps.errs = append(ps.errs, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
	creds, err := webpush.ParseVAPID(r.Header.Get("Authorization"), r.Header.Get("Crypto-Key"))
	if err != nil {
		fail(err)
		return
	}
	if err := webpush.Verify(creds, ps.appKey, ps.srv.URL, time.Now()); err != nil {
		fail(err)
		return
	}
	if r.Header.Get("Content-Encoding") != "aes128gcm" {
		fail(errors.New("content encoding " + r.Header.Get("Content-Encoding")))
		return
	}
	body, _ := io.ReadAll(r.Body)
	plain, err := ps.keys.Decrypt(body)
	if err != nil {
		fail(err)
		return
	}
	ps.received = append(ps.received, received{plain, r.Header.Clone()})
	for k, v := range ps.header {
		w.Header()[k] = v
	}
	w.WriteHeader(ps.status)
}

func (ps *pushService) subscription() *push.WebPushSubscription {
	return &push.WebPushSubscription{Endpoint: ps.srv.URL + "/push/abc", P256DH: ps.keys.P256DH(), Auth: ps.keys.AuthSecret()}
}

func vapidKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return k, pub.Bytes()
}

func message(id string) *push.Message {
	now := time.Now().UTC()
	return &push.Message{ID: id, App: "ak", Notification: &push.Notification{Title: "Hello", Body: "from Herald"},
		Data: json.RawMessage(`{"order":42}`), TTL: 90 * time.Second, Priority: push.PriorityHigh,
		CollapseID: "score", SendAt: now, ExpiresAt: now.Add(90 * time.Second)}
}

// TestSendIsDecryptedAndVerified: what the push service receives decrypts
// with the subscription's keys to the message as devices see it, VAPID
// signed for the service's origin, with TTL, Urgency and Topic.
func TestSendIsDecryptedAndVerified(t *testing.T) {
	key, pub := vapidKey(t)
	ps := newPushService(t, pub)
	s, err := relaywp.New(relaywp.Options{Key: key, Subject: "mailto:ops@example.com", Client: ps.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	m := message("m_1")
	if err := s.Send(context.Background(), relay.Target{WebPush: ps.subscription()}, m); err != nil {
		t.Fatalf("Send: %v (push service: %v)", err, ps.errs)
	}
	if len(ps.received) != 1 {
		t.Fatalf("the push service received %d pushes (errors %v)", len(ps.received), ps.errs)
	}
	got := ps.received[0]
	want, _ := json.Marshal(m.Delivered())
	if string(got.plain) != string(want) {
		t.Errorf("decrypted %s, want %s", got.plain, want)
	}
	if h := got.header; h.Get("TTL") != "90" || h.Get("Urgency") != "high" || h.Get("Topic") != relay.WebPushTopic("score") {
		t.Errorf("headers TTL %q Urgency %q Topic %q", h.Get("TTL"), h.Get("Urgency"), h.Get("Topic"))
	}
}

// TestSendRefusedByWrongKey: a push service that expects another
// application server key refuses the VAPID signature; so does a body that
// was not encrypted for its keys. Both show the checks are real.
func TestSendRefusedByWrongKey(t *testing.T) {
	key, _ := vapidKey(t)
	_, other := vapidKey(t)
	ps := newPushService(t, other)
	s, _ := relaywp.New(relaywp.Options{Key: key, Client: ps.srv.Client()})
	err := s.Send(context.Background(), relay.Target{WebPush: ps.subscription()}, message("m_2"))
	if !errors.Is(err, relay.ErrRejected) || len(ps.errs) != 1 || len(ps.received) != 0 {
		t.Fatalf("a push signed with another key: %v (service errors %v)", err, ps.errs)
	}

	key2, pub2 := vapidKey(t)
	ps = newPushService(t, pub2)
	s, _ = relaywp.New(relaywp.Options{Key: key2, Client: ps.srv.Client()})
	sub := ps.subscription()
	wrong, _ := client.NewWebPushKeys()
	sub.P256DH = wrong.P256DH() // encrypted for someone else
	if err := s.Send(context.Background(), relay.Target{WebPush: sub}, message("m_3")); !errors.Is(err, relay.ErrRejected) || len(ps.received) != 0 {
		t.Fatalf("a body encrypted for other keys: %v, %d received; want it refused", err, len(ps.received))
	}
}

// TestAnswers: every documented answer of a push service maps onto the
// relay's errors, Retry-After included.
func TestAnswers(t *testing.T) {
	key, pub := vapidKey(t)
	ps := newPushService(t, pub)
	s, _ := relaywp.New(relaywp.Options{Key: key, Client: ps.srv.Client()})
	for _, c := range []struct {
		status     int
		retryAfter string
		want       error
		after      time.Duration
	}{
		{201, "", nil, 0},
		{404, "", relay.ErrGone, 0},
		{410, "", relay.ErrGone, 0},
		{401, "", relay.ErrCredentials, 0},
		{403, "", relay.ErrCredentials, 0},
		{413, "", relay.ErrRejected, 0},
		{400, "", relay.ErrRejected, 0},
		{429, "7", nil, 7 * time.Second},
		{503, "", nil, 0},
		{500, "", nil, 0},
	} {
		ps.mu.Lock()
		ps.status, ps.header = c.status, http.Header{}
		if c.retryAfter != "" {
			ps.header.Set("Retry-After", c.retryAfter)
		}
		ps.mu.Unlock()
		err := s.Send(context.Background(), relay.Target{WebPush: ps.subscription()}, message("m"))
		var re *relay.RetryError
		switch {
		case c.status == 201:
			if err != nil {
				t.Errorf("%d: %v, want nil", c.status, err)
			}
		case c.status == 429 || c.status >= 500:
			if !errors.As(err, &re) || re.After != c.after {
				t.Errorf("%d: %v, want a RetryError after %s", c.status, err, c.after)
			}
		case !errors.Is(err, c.want):
			t.Errorf("%d: %v, want %v", c.status, err, c.want)
		}
	}
	// A push service that cannot be reached is retried.
	ps.srv.Close()
	var re *relay.RetryError
	if err := s.Send(context.Background(), relay.Target{WebPush: ps.subscription()}, message("m")); !errors.As(err, &re) {
		t.Errorf("an unreachable push service: %v, want a RetryError", err)
	}
}

// TestTooLargeIsRefusedBeforeSending: a message whose encrypted body would
// pass 4,096 bytes is refused without a request; one just under goes.
func TestTooLargeIsRefusedBeforeSending(t *testing.T) {
	key, pub := vapidKey(t)
	ps := newPushService(t, pub)
	s, _ := relaywp.New(relaywp.Options{Key: key, Client: ps.srv.Client()})
	m := message("m_big")
	m.Notification = nil
	base, _ := json.Marshal(m.Delivered())
	fit := 3993 - len(base) - len(`{"p":""}`) + len(`{"order":42}`)
	for _, c := range []struct {
		pad int
		ok  bool
	}{{fit, true}, {fit + 1, false}} {
		m.Data = json.RawMessage(`{"p":"` + strings.Repeat("x", c.pad) + `"}`)
		before := len(ps.received)
		err := s.Send(context.Background(), relay.Target{WebPush: ps.subscription()}, m)
		if c.ok && err != nil {
			t.Errorf("a body of exactly 4,096 bytes: %v", err)
		}
		if !c.ok && (!errors.Is(err, relay.ErrRejected) || len(ps.received) != before) {
			t.Errorf("a body of 4,097 bytes: %v, %d pushes received", err, len(ps.received)-before)
		}
	}
}

func TestTopic(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	for _, id := range []string{"a", "score", strings.Repeat("é", 64)} {
		if tp := relay.WebPushTopic(id); !valid.MatchString(tp) || tp != relay.WebPushTopic(id) {
			t.Errorf("Topic(%q) = %q: not 1 to 32 base64url characters, or not stable", id, tp)
		}
	}
	if relay.WebPushTopic("a") == relay.WebPushTopic("b") {
		t.Error("two collapse IDs share a topic")
	}
}

// TestEncryptForBadKeys: a subscription whose keys cannot be used is gone.
func TestEncryptForBadKeys(t *testing.T) {
	good, _ := client.NewWebPushKeys()
	for _, sub := range []push.WebPushSubscription{
		{P256DH: "not-a-key", Auth: good.AuthSecret()},
		{P256DH: good.P256DH(), Auth: "c2hvcnQ"},
	} {
		if _, err := relaywp.Encrypt([]byte("x"), &sub); !errors.Is(err, relay.ErrGone) {
			t.Errorf("Encrypt for %+v: %v, want ErrGone", sub, err)
		}
	}
}
