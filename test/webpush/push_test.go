package webpush

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
)

// TestPushErrors sends every kind of bad push to an endpoint and checks
// each gets its own status and error code, and that none of them lands in
// the inbox.
func TestPushErrors(t *testing.T) {
	srv := startServer(t, t.TempDir(), "127.0.0.1:0")
	d := srv.device(t)
	key := newVAPIDKey(t)
	open := subscribe(t, d, client.WebPushOptions{})
	signed := subscribe(t, d, client.WebPushOptions{ApplicationServerKey: key.pub})
	aud := srv.URL // the origin of the endpoints
	soon := time.Now().Add(time.Hour)
	ok := []byte("ciphertext")

	cases := []struct {
		name   string
		url    string
		body   []byte
		h      []string
		status int
		code   string
	}{
		{"unknown endpoint", srv.URL + "/wpush/nosuchtoken", ok, []string{"TTL", "60"}, 404, "subscription_not_found"},
		{"missing TTL", open.Endpoint, ok, nil, 400, "missing_ttl"},
		{"negative TTL", open.Endpoint, ok, []string{"TTL", "-1"}, 400, "bad_ttl"},
		{"TTL not a number", open.Endpoint, ok, []string{"TTL", "soon"}, 400, "bad_ttl"},
		{"bad Urgency", open.Endpoint, ok, []string{"TTL", "60", "Urgency", "urgent"}, 400, "bad_urgency"},
		{"Topic too long", open.Endpoint, ok, []string{"TTL", "60", "Topic", strings.Repeat("t", 33)}, 400, "bad_topic"},
		{"Topic outside base64url", open.Endpoint, ok, []string{"TTL", "60", "Topic", "a.b"}, 400, "bad_topic"},
		{"body over 4096 bytes", open.Endpoint, make([]byte, 4097), []string{"TTL", "60"}, 413, "payload_too_large"},
		{"huge Crypto-Key", open.Endpoint, ok, []string{"TTL", "60", "Crypto-Key", strings.Repeat("k", 2000)}, 400, "bad_header"},
		{"VAPID missing", signed.Endpoint, ok, []string{"TTL", "60"}, 401, "vapid_required"},
		{"VAPID under another scheme", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", "Bearer x"}, 401, "vapid_required"},
		{"VAPID malformed", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", "vapid t=x"}, 403, "vapid_invalid"},
		{"VAPID wrong key", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", newVAPIDKey(t).auth(t, aud, soon)}, 403, "vapid_invalid"},
		{"VAPID wrong aud", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", key.auth(t, "https://fcm.googleapis.com", soon)}, 403, "vapid_invalid"},
		{"VAPID expired", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", key.auth(t, aud, time.Now().Add(-time.Minute))}, 403, "vapid_invalid"},
		{"VAPID exp over 24 h", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", key.auth(t, aud, time.Now().Add(25*time.Hour))}, 403, "vapid_invalid"},
		// The subscription and its credentials are checked before the
		// request's own headers: a stranger learns nothing else.
		{"VAPID missing and no TTL", signed.Endpoint, ok, nil, 401, "vapid_required"},
	}
	for _, c := range cases {
		got := send(t, "POST", c.url, c.body, c.h...)
		want(t, c.name, got, c.status, c.code)
		if c.status == 401 && got.header.Get("WWW-Authenticate") != "vapid" {
			t.Errorf("%s: WWW-Authenticate %q, want vapid", c.name, got.header.Get("WWW-Authenticate"))
		}
	}
	if msgs := poll(t, d); len(msgs) != 0 {
		t.Errorf("refused pushes reached the inbox: %+v", msgs)
	}

	// The same requests done right are accepted: a body of exactly 4096
	// bytes, VAPID in both the RFC 8292 and the draft form, and keys with
	// or without padding.
	tok := strings.TrimPrefix(strings.SplitN(key.auth(t, aud, soon), ",", 2)[0], "vapid t=")
	for _, c := range []struct {
		name string
		url  string
		body []byte
		h    []string
	}{
		{"4096 bytes", open.Endpoint, bytes.Repeat([]byte{7}, 4096), []string{"TTL", "60"}},
		{"empty body", open.Endpoint, nil, []string{"TTL", "60"}},
		{"VAPID", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", key.auth(t, aud, soon)}},
		{"VAPID aud with a slash", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", key.auth(t, aud+"/", soon)}},
		{"VAPID padded key", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", "vapid t=" + tok + ", k=" + key.pub + "="}},
		{"VAPID draft form", signed.Endpoint, ok, []string{"TTL", "60", "Authorization", "WebPush " + tok, "Crypto-Key", "dh=abc;p256ecdsa=" + key.pub}},
	} {
		got := send(t, "POST", c.url, c.body, c.h...)
		want(t, c.name, got, 201, "")
		if loc := got.header.Get("Location"); !strings.HasPrefix(loc, c.url+"/messages/m_") {
			t.Errorf("%s: Location %q, want a message under %s", c.name, loc, c.url)
		}
	}
	if n := len(poll(t, d)); n != 6 {
		t.Errorf("%d pushes in the inbox, want 6", n)
	}
}

// TestPushDelivery checks what a device receives, and TTL, Urgency and
// Topic as RFC 8030 defines them.
func TestPushDelivery(t *testing.T) {
	srv := startServer(t, t.TempDir(), "127.0.0.1:0")
	d := srv.device(t)
	ctx := context.Background()
	a := subscribe(t, d, client.WebPushOptions{Label: "scope-a"})
	b := subscribe(t, d, client.WebPushOptions{})

	// TTL above 30 days is lowered and the kept value echoed.
	got := send(t, "POST", a.Endpoint, []byte("one"), "TTL", "99999999", "Urgency", "high", "Content-Encoding", "aes128gcm")
	want(t, "long TTL", got, 201, "")
	if ttl := got.header.Get("TTL"); ttl != "2592000" {
		t.Errorf("TTL header %q, want the clamped 2592000", ttl)
	}
	msgs := poll(t, d)
	if len(msgs) != 1 {
		t.Fatalf("inbox %+v, want one push", msgs)
	}
	m := msgs[0]
	w := webPushes(t, msgs)[0]
	if w.Subscription != a.ID || w.Label != "scope-a" || w.Urgency != "high" || w.Headers["content-encoding"] != "aes128gcm" {
		t.Errorf("received %+v", w)
	}
	if body, err := w.Body(); err != nil || string(body) != "one" {
		t.Errorf("body %q, %v; want it unchanged", body, err)
	}
	if m.Priority != "high" {
		t.Errorf("Urgency high gave priority %q", m.Priority)
	}
	if life := m.ExpiresAt.Sub(m.SentAt); life != 30*24*time.Hour {
		t.Errorf("message lives %s, want 30 days", life)
	}
	if !strings.HasSuffix(got.header.Get("Location"), "/messages/"+m.ID) {
		t.Errorf("Location %q does not name message %s", got.header.Get("Location"), m.ID)
	}
	d.Ack(ctx, m.ID)

	// A newer push with the same Topic on the same subscription replaces
	// the one waiting; other topics, and the same topic on another
	// subscription, do not.
	for _, p := range []struct {
		url, topic, body string
	}{
		{a.Endpoint, "news", "old"}, {a.Endpoint, "sport", "sport"}, {b.Endpoint, "news", "b-news"}, {a.Endpoint, "news", "new"},
	} {
		want(t, "topic push", send(t, "POST", p.url, []byte(p.body), "TTL", "600", "Topic", p.topic), 201, "")
	}
	var bodies []string
	for _, w := range webPushes(t, poll(t, d)) {
		b, _ := w.Body()
		bodies = append(bodies, w.Topic+"="+string(b))
	}
	if got := strings.Join(bodies, " "); got != "sport=sport news=b-news news=new" {
		t.Errorf("after topic replacement the inbox holds %q, want %q", got, "sport=sport news=b-news news=new")
	}
}

// TestRecall: DELETE on a push's Location withdraws it before delivery,
// and only the subscription that sent it can.
func TestRecall(t *testing.T) {
	srv := startServer(t, t.TempDir(), "127.0.0.1:0")
	d := srv.device(t)
	a := subscribe(t, d, client.WebPushOptions{})
	b := subscribe(t, d, client.WebPushOptions{})
	first := send(t, "POST", a.Endpoint, []byte("1"), "TTL", "600").header.Get("Location")
	send(t, "POST", a.Endpoint, []byte("2"), "TTL", "600")
	msgID := first[strings.LastIndex(first, "/")+1:]

	want(t, "recall through another subscription", send(t, "DELETE", b.Endpoint+"/messages/"+msgID, nil), 404, "message_not_found")
	want(t, "recall through an unknown endpoint", send(t, "DELETE", srv.URL+"/wpush/nope/messages/"+msgID, nil), 404, "subscription_not_found")
	want(t, "recall of an unknown message", send(t, "DELETE", a.Endpoint+"/messages/m_nope", nil), 404, "message_not_found")
	want(t, "recall", send(t, "DELETE", first, nil), 204, "")
	want(t, "recall again", send(t, "DELETE", first, nil), 204, "")
	var bodies []string
	for _, w := range webPushes(t, poll(t, d)) {
		b, _ := w.Body()
		bodies = append(bodies, string(b))
	}
	if strings.Join(bodies, ",") != "2" {
		t.Errorf("inbox after recall holds %v, want only 2", bodies)
	}
}

// TestSubscriptionsSurviveRestart: a subscription, live or revoked, is the
// same after the server restarts on its data.
func TestSubscriptionsSurviveRestart(t *testing.T) {
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String() // the same port after the restart: endpoints name it
	ln.Close()
	srv := startServer(t, data, addr)
	d := srv.device(t)
	key := newVAPIDKey(t)
	live := subscribe(t, d, client.WebPushOptions{ApplicationServerKey: key.pub})
	gone := subscribe(t, d, client.WebPushOptions{})
	if err := d.DeleteWebPushSubscription(context.Background(), gone.ID); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	startServer(t, data, addr)
	h := []string{"TTL", "60", "Authorization", key.auth(t, "http://"+addr, time.Now().Add(time.Hour))}
	want(t, "push after restart", send(t, "POST", live.Endpoint, []byte("still here"), h...), 201, "")
	want(t, "push without VAPID after restart", send(t, "POST", live.Endpoint, []byte("x"), "TTL", "60"), 401, "vapid_required")
	want(t, "revoked after restart", send(t, "POST", gone.Endpoint, []byte("x"), "TTL", "60"), 410, "subscription_gone")
	ws := webPushes(t, poll(t, d))
	if len(ws) != 1 || ws[0].Subscription != live.ID {
		t.Fatalf("after restart the inbox holds %+v", ws)
	}
	if subs, err := d.WebPushSubscriptions(context.Background()); err != nil || len(subs) != 1 || subs[0].ID != live.ID {
		t.Errorf("subscriptions after restart: %+v, %v", subs, err)
	}
}
