package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// sub builds a subscription of device dev in app "a" whose token is token.
func sub(id, dev, token string, key []byte) store.Subscription {
	return store.Subscription{
		ID: id, TokenHash: push.HashSecret(token), Device: dev, App: "a",
		AppServerKey: key, Label: "label-" + id, CreatedAt: epoch,
	}
}

func equalSub(a, b store.Subscription) bool {
	return a.ID == b.ID && bytes.Equal(a.TokenHash, b.TokenHash) && a.Device == b.Device && a.App == b.App &&
		bytes.Equal(a.AppServerKey, b.AppServerKey) && a.Label == b.Label &&
		a.CreatedAt.Equal(b.CreatedAt) && a.RevokedAt.Equal(b.RevokedAt)
}

func mustSubscribe(t *testing.T, s store.Store, sb store.Subscription) {
	t.Helper()
	if err := s.CreateSubscription(ctx, sb); err != nil {
		t.Fatalf("CreateSubscription(%s): %v", sb.ID, err)
	}
}

func wantSub(t *testing.T, s store.Store, token string, want store.Subscription) {
	t.Helper()
	got, err := s.Subscription(ctx, push.HashSecret(token))
	if err != nil {
		t.Fatalf("Subscription(%s): %v", token, err)
	}
	if !equalSub(got, want) {
		t.Errorf("Subscription(%s) = %+v, want %+v", token, got, want)
	}
}

func subIDs(t *testing.T, s store.Store, dev string) []string {
	t.Helper()
	subs, err := s.Subscriptions(ctx, dev)
	if err != nil {
		t.Fatalf("Subscriptions(%s): %v", dev, err)
	}
	ids := []string{}
	for _, sb := range subs {
		ids = append(ids, sb.ID)
	}
	return ids
}

// testSubscriptions: push subscriptions are found by token hash, listed per
// device while live, revoked for good, and refused for unknown devices or
// taken keys.
func testSubscriptions(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustDevice(t, s, "a", "d1", push.Web, "")
	mustDevice(t, s, "a", "d2", push.Web, "")
	key := bytes.Repeat([]byte{4}, 65)
	s1 := sub("s1", "d1", "tok1", key)
	s2 := sub("s2", "d1", "tok2", nil)
	s3 := sub("s3", "d2", "tok3", nil)
	for _, sb := range []store.Subscription{s2, s1, s3} {
		mustSubscribe(t, s, sb)
	}
	wantSub(t, s, "tok1", s1)
	wantSub(t, s, "tok2", s2)
	if got := subIDs(t, s, "d1"); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("Subscriptions(d1) = %v, want [s1 s2]", got)
	}
	if got := subIDs(t, s, "nobody"); len(got) != 0 {
		t.Errorf("Subscriptions(nobody) = %v, want none", got)
	}
	if _, err := s.Subscription(ctx, push.HashSecret("nope")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Subscription(unknown) = %v, want ErrNotFound", err)
	}

	if err := s.CreateSubscription(ctx, sub("s9", "d2", "tok1", nil)); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSubscription with a taken token hash = %v, want ErrExists", err)
	}
	if err := s.CreateSubscription(ctx, sub("s1", "d1", "tok9", nil)); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSubscription with a taken ID = %v, want ErrExists", err)
	}
	if err := s.CreateSubscription(ctx, sub("s9", "ghost", "tok9", nil)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateSubscription for no device = %v, want ErrNotFound", err)
	}
	if _, err := s.Subscription(ctx, push.HashSecret("tok9")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused subscription was stored: %v", err)
	}

	at := epoch.Add(time.Minute)
	if err := s.RevokeSubscription(ctx, "d1", "s1", at); err != nil {
		t.Fatalf("RevokeSubscription: %v", err)
	}
	// Revoking again keeps the first time.
	if err := s.RevokeSubscription(ctx, "d1", "s1", at.Add(time.Hour)); err != nil {
		t.Fatalf("RevokeSubscription again: %v", err)
	}
	s1.RevokedAt = at
	wantSub(t, s, "tok1", s1)
	wantSub(t, s, "tok2", s2)
	if got := subIDs(t, s, "d1"); !slices.Equal(got, []string{"s2"}) {
		t.Errorf("Subscriptions(d1) after revoking s1 = %v, want only the live [s2]", got)
	}
	// A revoked subscription keeps its ID: it cannot be created again.
	if err := s.CreateSubscription(ctx, sub("s1", "d1", "tok8", nil)); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSubscription with a revoked subscription's ID = %v, want ErrExists", err)
	}
	// A device can revoke only its own subscriptions.
	for _, c := range [][2]string{{"d2", "s1"}, {"d1", "s3"}, {"d1", "zz"}} {
		if err := s.RevokeSubscription(ctx, c[0], c[1], at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RevokeSubscription(%s, %s) = %v, want ErrNotFound", c[0], c[1], err)
		}
	}
	wantSub(t, s, "tok3", s3)
}

// testSubscriptionsReopen: subscriptions, live and revoked, survive a
// restart.
func testSubscriptionsReopen(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustDevice(t, s, "a", "d1", push.Web, "")
	s1 := sub("s1", "d1", "tok1", bytes.Repeat([]byte{4}, 65))
	s2 := sub("s2", "d1", "tok2", nil)
	mustSubscribe(t, s, s1)
	mustSubscribe(t, s, s2)
	at := epoch.Add(time.Second)
	if err := s.RevokeSubscription(ctx, "d1", "s2", at); err != nil {
		t.Fatalf("RevokeSubscription: %v", err)
	}
	s2.RevokedAt = at

	s = reopen()
	wantSub(t, s, "tok1", s1)
	wantSub(t, s, "tok2", s2)
	if got := subIDs(t, s, "d1"); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("Subscriptions(d1) after reopen = %v, want the live [s1]", got)
	}
	// Revoking again after the restart keeps the first time.
	if err := s.RevokeSubscription(ctx, "d1", "s2", at.Add(time.Hour)); err != nil {
		t.Fatalf("RevokeSubscription after reopen: %v", err)
	}
	wantSub(t, s, "tok2", s2)
}

// testPurgeSubscriptions: subscriptions revoked before the cutoff are
// deleted (a push then finds no such token); live ones, and those revoked
// since, stay. Many revocations (more than one purge step) all go.
func testPurgeSubscriptions(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustDevice(t, s, "a", "d1", push.Web, "")
	mustDevice(t, s, "a", "d2", push.Web, "")
	live := sub("live", "d1", "tok-live", nil)
	old := sub("old", "d1", "tok-old", nil)
	recent := sub("recent", "d2", "tok-recent", nil)
	for _, sb := range []store.Subscription{live, old, recent} {
		mustSubscribe(t, s, sb)
	}
	const many = 600
	for i := range many {
		mustSubscribe(t, s, sub(fmt.Sprintf("m%03d", i), "d2", fmt.Sprintf("tok-m%03d", i), nil))
		if err := s.RevokeSubscription(ctx, "d2", fmt.Sprintf("m%03d", i), epoch.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeSubscription(ctx, "d1", "old", epoch); err != nil {
		t.Fatal(err)
	}
	cutoff := epoch.Add(time.Hour)
	if err := s.RevokeSubscription(ctx, "d2", "recent", cutoff); err != nil {
		t.Fatal(err)
	}

	n, err := s.PurgeSubscriptions(ctx, cutoff)
	if err != nil {
		t.Fatalf("PurgeSubscriptions: %v", err)
	}
	if n != many+1 {
		t.Errorf("PurgeSubscriptions purged %d, want %d (revoked before the cutoff)", n, many+1)
	}
	for _, tok := range []string{"tok-old", "tok-m000", fmt.Sprintf("tok-m%03d", many-1)} {
		if _, err := s.Subscription(ctx, push.HashSecret(tok)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Subscription(%s) after the purge = %v, want ErrNotFound", tok, err)
		}
	}
	wantSub(t, s, "tok-live", live)
	recent.RevokedAt = cutoff
	wantSub(t, s, "tok-recent", recent)
	if got := subIDs(t, s, "d1"); !slices.Equal(got, []string{"live"}) {
		t.Errorf("Subscriptions(d1) = %v, want [live]", got)
	}
	// A purged subscription is gone for good: its device's revoke of it is
	// ErrNotFound, and its ID may be used again.
	if err := s.RevokeSubscription(ctx, "d1", "old", cutoff); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeSubscription of a purged one = %v, want ErrNotFound", err)
	}
	if n, err := s.PurgeSubscriptions(ctx, cutoff); err != nil || n != 0 {
		t.Errorf("a second purge: %d, %v; want nothing left", n, err)
	}
	s = reopen()
	if _, err := s.Subscription(ctx, push.HashSecret("tok-old")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the purge did not last a restart: %v", err)
	}
	if n, err := s.PurgeSubscriptions(ctx, cutoff.Add(time.Millisecond)); err != nil || n != 1 {
		t.Errorf("purging past the last revocation: %d, %v; want 1", n, err)
	}
	mustSubscribe(t, s, sub("old", "d1", "tok-old-2", nil))
}
