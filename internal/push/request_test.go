package push

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func build(t *testing.T, body string) (*Message, error) {
	t.Helper()
	r, err := DecodeRequest([]byte(body))
	if err != nil {
		return nil, err
	}
	return r.Build(now, DefaultLimits())
}

func TestBuildDefaults(t *testing.T) {
	m, err := build(t, `{"audience":{"registration_id":["a","b"]},"notification":{"title":"hi"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if m.TTL != 24*time.Hour || !m.ExpiresAt.Equal(now.Add(24*time.Hour)) || !m.SendAt.Equal(now) || m.Priority != PriorityNormal {
		t.Errorf("defaults: %+v", m)
	}
	if m.Fanout() || !m.Audience.Explicit() {
		t.Errorf("explicit audience classified as fan-out")
	}
}

func TestBuildOptions(t *testing.T) {
	at := now.Add(time.Hour).Format(time.RFC3339)
	m, err := build(t, `{"audience":"all","platform":["ios"],"message":{"k":1},"options":{"ttl":60,"collapse_id":"c","priority":"high","send_at":"`+at+`","idempotency_key":"i"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Audience.All || !m.Fanout() || m.TTL != time.Minute || m.CollapseID != "c" || m.Priority != PriorityHigh ||
		!m.SendAt.Equal(now.Add(time.Hour)) || !m.ExpiresAt.Equal(now.Add(time.Hour+time.Minute)) || m.IdempotencyKey != "i" ||
		len(m.Platforms) != 1 || m.Platforms[0] != IOS || string(m.Data) != `{"k":1}` {
		t.Errorf("options not applied: %+v", m)
	}
	m, err = build(t, `{"audience":"all","message":1,"options":{"ttl":99999999999999}}`)
	if err != nil || m.TTL != 30*24*time.Hour {
		t.Errorf("huge ttl: %v, %v; want clamped to 30 days", m, err)
	}
	m, err = build(t, `{"audience":"all","message":1,"options":{"ttl":0}}`)
	if err != nil || m.TTL != 0 || !m.ExpiresAt.Equal(now) {
		t.Errorf("ttl 0: %+v, %v", m, err)
	}
}

func TestBuildRejects(t *testing.T) {
	ids := make([]string, 1001)
	for i := range ids {
		ids[i] = "id"
	}
	many, _ := json.Marshal(ids)
	cases := []struct {
		name, body string
		want       error
	}{
		{"malformed", `{"audience":`, ErrBadJSON},
		{"not an object", `[1]`, ErrBadJSON},
		{"trailing data", `{"audience":"all","message":1} {}`, ErrBadJSON},
		{"unknown field", `{"audience":"all","message":1,"colour":"red"}`, ErrBadJSON},
		{"wrong type", `{"audience":"all","message":1,"options":{"ttl":"soon"}}`, ErrBadJSON},
		{"unknown audience key", `{"audience":{"device":["a"]},"message":1}`, ErrBadAudience},
		{"audience string", `{"audience":"everyone","message":1}`, ErrBadAudience},
		{"audience number", `{"audience":5,"message":1}`, ErrBadAudience},
		{"audience list of numbers", `{"audience":{"tag":[1]},"message":1}`, ErrBadAudience},
		{"missing audience", `{"message":1}`, ErrEmptyAudience},
		{"empty audience", `{"audience":{},"message":1}`, ErrEmptyAudience},
		{"empty lists", `{"audience":{"registration_id":[]},"message":1}`, ErrEmptyAudience},
		{"too many ids", `{"audience":{"registration_id":` + string(many) + `},"message":1}`, ErrTooManyIDs},
		{"no content", `{"audience":"all"}`, ErrEmptyMessage},
		{"payload too large", `{"audience":"all","message":"` + strings.Repeat("x", 4096) + `"}`, ErrPayloadTooLarge},
		{"negative ttl", `{"audience":"all","message":1,"options":{"ttl":-1}}`, ErrBadTTL},
		{"fractional ttl", `{"audience":"all","message":1,"options":{"ttl":1.5}}`, ErrBadJSON},
		{"bad priority", `{"audience":"all","message":1,"options":{"priority":"urgent"}}`, ErrBadOption},
		{"bad platform", `{"audience":"all","platform":"symbian","message":1}`, ErrBadPlatform},
		{"empty tag", `{"audience":{"tag":[""]},"message":1}`, ErrBadTag},
		{"control char", `{"audience":{"alias":["a\u0001"]},"message":1}`, ErrBadTag},
		{"audience twice: would be a broadcast", `{"audience":{"registration_id":["nobody"]},"audience":"all","message":1}`, ErrDuplicateKey},
		{"audience in another case", `{"audience":{"registration_id":["nobody"]},"Audience":"all","message":1}`, ErrDuplicateKey},
		{"audience key twice", `{"audience":{"tag":["a"],"TAG":["b"]},"message":1}`, ErrDuplicateKey},
		{"option twice", `{"audience":"all","message":1,"options":{"ttl":1,"ttl":2}}`, ErrDuplicateKey},
		{"escaped duplicate", `{"audience":"all","message":1,"\u006dessage":2}`, ErrDuplicateKey},
		{"duplicate in the data", `{"audience":"all","message":{"k":1,"k":2}}`, ErrDuplicateKey},
		{"duplicate in extras", `{"audience":"all","notification":{"extras":{"k":1,"k":2}}}`, ErrDuplicateKey},
		{"send_at too far", `{"audience":"all","message":1,"options":{"send_at":"2099-01-01T00:00:00Z"}}`, ErrBadOption},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := build(t, c.body)
			if !errors.Is(err, c.want) {
				t.Errorf("error = %v, want %v", err, c.want)
			}
		})
	}
}

// The provider's own data is compared exactly: keys that differ in case
// are two keys.
func TestDataKeysCompareExactly(t *testing.T) {
	m, err := build(t, `{"audience":"all","message":{"id":1,"ID":2},"notification":{"extras":{"a":1,"A":2}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"id":1,"ID":2}` || string(m.Notification.Extras) != `{"a":1,"A":2}` {
		t.Errorf("data %s, extras %s", m.Data, m.Notification.Extras)
	}
}

func TestAudienceMatches(t *testing.T) {
	d := &Device{Tags: []string{"a", "b"}}
	cases := []struct {
		aud  Audience
		want bool
	}{
		{Audience{All: true}, true},
		{Audience{Tags: []string{"x", "a"}}, true},
		{Audience{Tags: []string{"x"}}, false},
		{Audience{TagAnd: []string{"a", "b"}}, true},
		{Audience{TagAnd: []string{"a", "c"}}, false},
		{Audience{TagNot: []string{"c"}}, true},
		{Audience{TagNot: []string{"b"}}, false},
		{Audience{Tags: []string{"a"}, TagNot: []string{"b"}}, false},
		{Audience{RegistrationIDs: []string{"x"}}, false},
	}
	for _, c := range cases {
		if got := c.aud.Matches(d); got != c.want {
			t.Errorf("%+v.Matches(tags a,b) = %v, want %v", c.aud, got, c.want)
		}
	}
}

func TestSecrets(t *testing.T) {
	s := NewSecret()
	if len(s) < 43 || !SecretMatches(s, HashSecret(s)) || SecretMatches(s+"x", HashSecret(s)) || SecretMatches(s, nil) {
		t.Errorf("secret %q does not round-trip", s)
	}
	if id := NewRegistrationID(); len(id) != 24 || strings.ContainsAny(id, "+/=") {
		t.Errorf("registration ID %q is not 24 URL-safe characters", id)
	}
}

// FuzzDecodeRequest: no input may panic the decoder or the validation, and
// what decodes must survive encode and decode unchanged.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"audience":"all","notification":{"title":"t","body":"b"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeRequest(body)
		if err != nil {
			return
		}
		m, err := r.Build(now, DefaultLimits())
		if err == nil && (m.Audience.Empty() || m.TTL < 0 || m.ExpiresAt.Before(m.SendAt)) {
			t.Fatalf("accepted an invalid message: %+v", m)
		}
		enc1, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		r2, err := DecodeRequest(enc1)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc1, err)
		}
		enc2, _ := json.Marshal(r2)
		if string(enc1) != string(enc2) {
			t.Fatalf("round trip changed the request:\n%s\n%s", enc1, enc2)
		}
	})
}
