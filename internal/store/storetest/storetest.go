// Package storetest is the behaviour suite every store.Store passes
// (ARCHITECTURE.md, decision 3). A store's own test calls Run with a function
// that opens a fresh, empty instance.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Opener opens a fresh, empty store for one test and registers its cleanup
// with t (a cleanup that tolerates a store the test already closed). Reopen
// closes the store it returned (if still open) and opens the
// same data again, as a restart would.
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs the whole suite against the stores open makes.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Apps", testApps},
		{"Devices", testDevices},
		{"DirectInbox", testDirectInbox},
		{"MessageRoundTrip", testMessageRoundTrip},
		{"Fanout", testFanout},
		{"FanoutAndExplicitOnce", testFanoutAndExplicitOnce},
		{"TTLAndSchedule", testTTLAndSchedule},
		{"CollapseDirect", testCollapseDirect},
		{"CollapseFanout", testCollapseFanout},
		{"Recall", testRecall},
		{"Idempotency", testIdempotency},
		{"Limit", testLimit},
		{"LimitBytes", testLimitBytes},
		{"DeleteDevice", testDeleteDevice},
		{"Sweep", testSweep},
		{"Reopen", testReopen},
		{"ConcurrentAppendsNeverSkipped", testConcurrentAppends},
		{"ScheduleDue", testScheduleDue},
		{"ScheduleReopen", testScheduleReopen},
		{"ScheduleWithdrawn", testScheduleWithdrawn},
		{"ScheduleSweep", testScheduleSweep},
		{"Subscriptions", testSubscriptions},
		{"SubscriptionsReopen", testSubscriptionsReopen},
		{"PurgeSubscriptions", testPurgeSubscriptions},
		{"RelayQueue", testRelayQueue},
		{"RelayDoneMany", testRelayDoneMany},
		{"InboxStats", testInboxStats},
		{"Ping", testPing},
		{"ListApps", testListApps},
		{"ListDevices", testListDevices},
		{"CountDevices", testCountDevices},
		{"ListMessages", testListMessages},
		{"RelayReopen", testRelayReopen},
		{"RelayExpand", testRelayExpand},
		{"RelaySweep", testRelaySweep},
		{"RelayWaits", testRelayWaits},
		{"VendorOnlyFanout", testVendorOnlyFanout},
		{"DeactivateChannel", testDeactivateChannel},
		{"AddressTakeover", testAddressTakeover},
		{"ChannelConfig", testChannelConfig},
		{"Closed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open) })
	}
}

// epoch is a fixed clock for the suite, at millisecond precision so that
// every store keeps it exactly.
var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var ctx = context.Background()

func mustApp(t *testing.T, s store.Store, key string) push.App {
	t.Helper()
	app := push.App{Key: key, Name: "name-" + key, SecretHash: push.HashSecret("secret-" + key), CreatedAt: epoch}
	if err := s.CreateApp(ctx, app); err != nil {
		t.Fatalf("CreateApp(%s): %v", key, err)
	}
	return app
}

func mustDevice(t *testing.T, s store.Store, app, id string, p push.Platform, alias string, tags ...string) push.Device {
	t.Helper()
	slices.Sort(tags)
	d, err := s.CreateDevice(ctx, push.Device{
		ID: id, App: app, Platform: p, Alias: alias, Tags: tags,
		SecretHash: push.HashSecret("ds-" + id),
		Channel:    push.Channel{Kind: push.ChannelHerald},
		CreatedAt:  epoch, UpdatedAt: epoch,
	})
	if err != nil {
		t.Fatalf("CreateDevice(%s): %v", id, err)
	}
	return d
}

// msg builds a live message accepted at epoch with a one-hour TTL.
func msg(app, id string, aud push.Audience) *push.Message {
	return &push.Message{
		ID: id, App: app, Audience: aud,
		Notification: &push.Notification{Title: "t-" + id},
		TTL:          time.Hour, Priority: push.PriorityNormal,
		AcceptedAt: epoch, SendAt: epoch, ExpiresAt: epoch.Add(time.Hour),
	}
}

func direct(ids ...string) push.Audience { return push.Audience{RegistrationIDs: ids} }

func appendOne(t *testing.T, s store.Store, m *push.Message, targets ...string) store.Accepted {
	t.Helper()
	res, err := s.Append(ctx, []store.Accept{{Msg: m, Targets: targets}})
	if err != nil {
		t.Fatalf("Append(%s): %v", m.ID, err)
	}
	if len(res) != 1 {
		t.Fatalf("Append(%s) returned %d results, want 1", m.ID, len(res))
	}
	return res[0]
}

// pendingIDs returns the IDs Pending gives d at now.
func pendingIDs(t *testing.T, s store.Store, d push.Device, now time.Time) []string {
	t.Helper()
	msgs, err := s.Pending(ctx, &d, now, 1000, 0)
	if err != nil {
		t.Fatalf("Pending(%s): %v", d.ID, err)
	}
	ids := []string{}
	for i, m := range msgs {
		ids = append(ids, m.ID)
		if i > 0 && msgs[i-1].Seq >= m.Seq {
			t.Errorf("Pending(%s): seq %d after %d: not in Seq order", d.ID, m.Seq, msgs[i-1].Seq)
		}
	}
	return ids
}

func wantPending(t *testing.T, s store.Store, d push.Device, now time.Time, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := pendingIDs(t, s, d, now); !slices.Equal(got, want) {
		t.Errorf("Pending(%s) = %v, want %v", d.ID, got, want)
	}
}

func ack(t *testing.T, s store.Store, d push.Device, ids ...string) int {
	t.Helper()
	n, err := s.Ack(ctx, &d, ids)
	if err != nil {
		t.Fatalf("Ack(%s, %v): %v", d.ID, ids, err)
	}
	return n
}

func counters(t *testing.T, s store.Store, app, id string) (push.Message, store.Counters) {
	t.Helper()
	m, c, err := s.Message(ctx, app, id)
	if err != nil {
		t.Fatalf("Message(%s): %v", id, err)
	}
	return m, c
}

// sameCounts compares the delivery counters, leaving the relay's out.
func sameCounts(a, b store.Counters) bool {
	return a.Targeted == b.Targeted && a.Delivered == b.Delivered && a.Replaced == b.Replaced
}

func testApps(t *testing.T, open Opener) {
	s, _ := open(t)
	app := mustApp(t, s, "ak1")
	got, err := s.App(ctx, "ak1")
	if err != nil {
		t.Fatalf("App: %v", err)
	}
	if got.Key != app.Key || got.Name != app.Name || !slices.Equal(got.SecretHash, app.SecretHash) || !got.CreatedAt.Equal(app.CreatedAt) {
		t.Errorf("App = %+v, want %+v", got, app)
	}
	if got, err := s.AppByName(ctx, app.Name); err != nil || got.Key != app.Key {
		t.Errorf("AppByName = %+v, %v; want key %s", got, err, app.Key)
	}
	if err := s.CreateApp(ctx, app); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateApp(same key) = %v, want ErrExists", err)
	}
	if err := s.CreateApp(ctx, push.App{Key: "ak2", Name: app.Name, CreatedAt: epoch}); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateApp(same name) = %v, want ErrExists", err)
	}
	if _, err := s.App(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("App(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.AppByName(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppByName(unknown) = %v, want ErrNotFound", err)
	}
}

func testDevices(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "alice", "news", "sport")
	mustDevice(t, s, "a", "d2", push.IOS, "alice")
	mustDevice(t, s, "a", "d3", push.Web, "bob")
	mustDevice(t, s, "b", "d4", push.Web, "alice")

	if _, err := s.CreateDevice(ctx, push.Device{ID: "d1", App: "a", Platform: push.Other}); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateDevice(taken id) = %v, want ErrExists", err)
	}
	if _, err := s.CreateDevice(ctx, push.Device{ID: "d9", App: "nope", Platform: push.Other}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateDevice(unknown app) = %v, want ErrNotFound", err)
	}

	got, err := s.Device(ctx, "d1")
	if err != nil {
		t.Fatalf("Device: %v", err)
	}
	if got.App != "a" || got.Platform != push.Android || got.Alias != "alice" || !slices.Equal(got.Tags, []string{"news", "sport"}) ||
		!slices.Equal(got.SecretHash, d1.SecretHash) || got.Channel.Kind != push.ChannelHerald || !got.CreatedAt.Equal(epoch) {
		t.Errorf("Device = %+v", got)
	}

	many, err := s.Devices(ctx, []string{"d3", "nope", "d1", "d4", "d1"})
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	if len(many) != 3 || many["d1"].Alias != "alice" || !slices.Equal(many["d1"].Tags, []string{"news", "sport"}) ||
		many["d3"].Platform != push.Web || many["d4"].App != "b" {
		t.Errorf("Devices(d3, nope, d1, d4, d1) = %+v, want d1, d3 and d4", many)
	}
	for _, ids := range [][]string{nil, {"nope"}} {
		if none, err := s.Devices(ctx, ids); err != nil || len(none) != 0 {
			t.Errorf("Devices(%v) = %v, %v; want none", ids, none, err)
		}
	}
	if one, err := s.Devices(ctx, []string{"d3"}); err != nil || len(one) != 1 || one["d3"].Alias != "bob" {
		t.Errorf("Devices(d3) = %v, %v", one, err)
	}

	byAlias := func(app, alias string) []string {
		ds, err := s.DevicesByAlias(ctx, app, alias)
		if err != nil {
			t.Fatalf("DevicesByAlias: %v", err)
		}
		var ids []string
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if ids := byAlias("a", "alice"); !slices.Equal(ids, []string{"d1", "d2"}) {
		t.Errorf("DevicesByAlias(a, alice) = %v, want [d1 d2]", ids)
	}

	got.Alias = "carol"
	got.Tags = []string{"weather"}
	got.Platform = push.Other
	got.Channel = push.Channel{Kind: push.ChannelFCM, Token: "fcm-token"}
	got.UpdatedAt = epoch.Add(time.Minute)
	if err := s.UpdateDevice(ctx, got); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	again, _ := s.Device(ctx, "d1")
	if again.Alias != "carol" || !slices.Equal(again.Tags, []string{"weather"}) || again.Platform != push.Other ||
		again.Channel.Token != "fcm-token" || !again.UpdatedAt.Equal(got.UpdatedAt) || again.FirstSeq != d1.FirstSeq {
		t.Errorf("after UpdateDevice, Device = %+v", again)
	}
	if ids := byAlias("a", "alice"); !slices.Equal(ids, []string{"d2"}) {
		t.Errorf("after alias change, DevicesByAlias(a, alice) = %v, want [d2]", ids)
	}
	if ids := byAlias("a", "carol"); !slices.Equal(ids, []string{"d1"}) {
		t.Errorf("DevicesByAlias(a, carol) = %v, want [d1]", ids)
	}
	if err := s.UpdateDevice(ctx, push.Device{ID: "zz", App: "a"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateDevice(unknown) = %v, want ErrNotFound", err)
	}

	var seen []string
	if err := s.EachDevice(ctx, "a", func(d *push.Device) bool { seen = append(seen, d.ID); return true }); err != nil {
		t.Fatalf("EachDevice: %v", err)
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"d1", "d2", "d3"}) {
		t.Errorf("EachDevice(a) = %v, want [d1 d2 d3]", seen)
	}
	n := 0
	s.EachDevice(ctx, "a", func(*push.Device) bool { n++; return false })
	if n != 1 {
		t.Errorf("EachDevice kept calling after false: %d calls", n)
	}

	if err := s.DeleteDevice(ctx, "d2"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if _, err := s.Device(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(deleted) = %v, want ErrNotFound", err)
	}
	if ids := byAlias("a", "alice"); len(ids) != 0 {
		t.Errorf("after delete, DevicesByAlias(a, alice) = %v, want none", ids)
	}
	if err := s.DeleteDevice(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteDevice(again) = %v, want ErrNotFound", err)
	}
}

func testDirectInbox(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "")
	d2 := mustDevice(t, s, "a", "d2", push.Android, "")

	r1 := appendOne(t, s, msg("a", "m1", direct("d1", "d2")), "d1", "d2")
	r2 := appendOne(t, s, msg("a", "m2", direct("d1")), "d1")
	if r1.ID != "m1" || r2.ID != "m2" || r1.Duplicate || r2.Seq <= r1.Seq {
		t.Fatalf("Append results %+v, %+v: want m1 then m2 with increasing Seq", r1, r2)
	}
	now := epoch.Add(time.Second)
	wantPending(t, s, d1, now, "m1", "m2")
	wantPending(t, s, d2, now, "m1")

	// Un-acked messages stay; acks are counted once and only for the device's own messages.
	wantPending(t, s, d1, now, "m1", "m2")
	if n := ack(t, s, d1, "m1", "unknown"); n != 1 {
		t.Errorf("Ack(d1, m1, unknown) = %d, want 1", n)
	}
	if n := ack(t, s, d1, "m1"); n != 0 {
		t.Errorf("Ack(d1, m1) again = %d, want 0", n)
	}
	if n := ack(t, s, d2, "m2"); n != 0 {
		t.Errorf("Ack(d2, m2) of a message not for d2 = %d, want 0", n)
	}
	wantPending(t, s, d1, now, "m2")
	wantPending(t, s, d2, now, "m1")

	if _, c := counters(t, s, "a", "m1"); !sameCounts(c, store.Counters{Targeted: 2, Delivered: 1}) {
		t.Errorf("m1 counters = %+v, want targeted 2 delivered 1", c)
	}
	ack(t, s, d2, "m1")
	if _, c := counters(t, s, "a", "m1"); c.Delivered != 2 {
		t.Errorf("m1 delivered = %d, want 2", c.Delivered)
	}
	if _, _, err := s.Message(ctx, "b", "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(other app) = %v, want ErrNotFound", err)
	}
}

func testMessageRoundTrip(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.IOS, "al")
	badge := 7
	m := &push.Message{
		ID: "m1", App: "a",
		Audience:       push.Audience{RegistrationIDs: []string{"d1"}, Aliases: []string{"al"}},
		Platforms:      []push.Platform{push.IOS, push.Web},
		Notification:   &push.Notification{Title: "Hi", Body: "there", Badge: &badge, Sound: "ding", Extras: json.RawMessage(`{"k":"v"}`)},
		Data:           json.RawMessage(`{"order":42,"items":["a","b"]}`),
		TTL:            90 * time.Second,
		Priority:       push.PriorityHigh,
		CollapseID:     "c1",
		IdempotencyKey: "idem-1",
		AcceptedAt:     epoch,
		SendAt:         epoch.Add(time.Second),
		ExpiresAt:      epoch.Add(91 * time.Second),
	}
	res := appendOne(t, s, m, "d1")
	got, _ := counters(t, s, "a", "m1")
	check := func(label string, got push.Message) {
		t.Helper()
		if got.ID != m.ID || got.App != m.App || got.Seq != res.Seq || got.TTL != m.TTL || got.Priority != m.Priority ||
			got.CollapseID != m.CollapseID || got.IdempotencyKey != m.IdempotencyKey ||
			!got.AcceptedAt.Equal(m.AcceptedAt) || !got.SendAt.Equal(m.SendAt) || !got.ExpiresAt.Equal(m.ExpiresAt) ||
			!slices.Equal(got.Platforms, m.Platforms) || !slices.Equal(got.Audience.RegistrationIDs, m.Audience.RegistrationIDs) ||
			!slices.Equal(got.Audience.Aliases, m.Audience.Aliases) || got.Recalled || got.Replaced {
			t.Errorf("%s: message = %+v\nwant %+v", label, got, *m)
		}
		if got.Notification == nil || got.Notification.Title != "Hi" || got.Notification.Body != "there" || got.Notification.Badge == nil ||
			*got.Notification.Badge != 7 || got.Notification.Sound != "ding" || !jsonEqual(got.Notification.Extras, m.Notification.Extras) {
			t.Errorf("%s: notification = %+v", label, got.Notification)
		}
		if !jsonEqual(got.Data, m.Data) {
			t.Errorf("%s: data = %s, want %s", label, got.Data, m.Data)
		}
	}
	check("Message", got)
	msgs, err := s.Pending(ctx, &d, epoch.Add(2*time.Second), 10, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Pending = %v, %v; want one message", msgs, err)
	}
	check("Pending", msgs[0])

	// A broadcast keeps its audience form too.
	appendOne(t, s, msg("a", "m2", push.Audience{All: true}))
	appendOne(t, s, msg("a", "m3", push.Audience{Tags: []string{"x"}, TagAnd: []string{"y"}, TagNot: []string{"z"}}))
	if m2, _ := counters(t, s, "a", "m2"); !m2.Audience.All || !m2.Fanout() {
		t.Errorf("broadcast audience = %+v", m2.Audience)
	}
	if m3, _ := counters(t, s, "a", "m3"); !slices.Equal(m3.Audience.Tags, []string{"x"}) || !slices.Equal(m3.Audience.TagAnd, []string{"y"}) || !slices.Equal(m3.Audience.TagNot, []string{"z"}) {
		t.Errorf("tag audience = %+v", m3.Audience)
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

func testFanout(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	news := mustDevice(t, s, "a", "news", push.Android, "", "news")
	both := mustDevice(t, s, "a", "both", push.IOS, "", "news", "sport")
	plain := mustDevice(t, s, "a", "plain", push.Web, "")
	other := mustDevice(t, s, "b", "other", push.Android, "", "news")

	appendOne(t, s, msg("a", "all", push.Audience{All: true}))
	appendOne(t, s, msg("a", "tag-news", push.Audience{Tags: []string{"news", "nothing"}}))
	appendOne(t, s, msg("a", "tag-and", push.Audience{TagAnd: []string{"news", "sport"}}))
	appendOne(t, s, msg("a", "tag-not", push.Audience{TagNot: []string{"sport"}}))
	ios := msg("a", "ios-only", push.Audience{All: true})
	ios.Platforms = []push.Platform{push.IOS}
	appendOne(t, s, ios)
	late := mustDevice(t, s, "a", "late", push.Android, "", "news")
	appendOne(t, s, msg("a", "after-late", push.Audience{Tags: []string{"news"}}))

	now := epoch.Add(time.Second)
	wantPending(t, s, news, now, "all", "tag-news", "tag-not", "after-late")
	wantPending(t, s, both, now, "all", "tag-news", "tag-and", "ios-only", "after-late")
	wantPending(t, s, plain, now, "all", "tag-not")
	wantPending(t, s, other, now)
	wantPending(t, s, late, now, "after-late")

	if n := ack(t, s, news, "all", "tag-news"); n != 2 {
		t.Errorf("Ack(news, all, tag-news) = %d, want 2", n)
	}
	if n := ack(t, s, news, "all", "tag-and"); n != 0 {
		t.Errorf("Ack(news, all again, tag-and not for it) = %d, want 0", n)
	}
	if n := ack(t, s, other, "all"); n != 0 {
		t.Errorf("Ack from another app's device = %d, want 0", n)
	}
	wantPending(t, s, news, now, "tag-not", "after-late")
	wantPending(t, s, both, now, "all", "tag-news", "tag-and", "ios-only", "after-late")
	ack(t, s, plain, "all")
	if _, c := counters(t, s, "a", "all"); c.Delivered != 2 || c.Targeted != 0 {
		t.Errorf("broadcast counters = %+v, want delivered 2 and no explicit targets", c)
	}
}

func testFanoutAndExplicitOnce(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "", "news")
	m := msg("a", "m1", push.Audience{RegistrationIDs: []string{"d1"}, Tags: []string{"news"}})
	appendOne(t, s, m, "d1")
	now := epoch.Add(time.Second)
	wantPending(t, s, d, now, "m1")
	if n := ack(t, s, d, "m1"); n != 1 {
		t.Errorf("Ack = %d, want 1 (one delivery, whichever way it reached the device)", n)
	}
	wantPending(t, s, d, now)
	if _, c := counters(t, s, "a", "m1"); c.Delivered != 1 {
		t.Errorf("delivered = %d, want 1", c.Delivered)
	}
}

func testTTLAndSchedule(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	short := msg("a", "short", direct("d1"))
	short.TTL, short.ExpiresAt = 10*time.Second, epoch.Add(10*time.Second)
	appendOne(t, s, short, "d1")
	zero := msg("a", "zero", push.Audience{All: true})
	zero.TTL, zero.ExpiresAt = 0, epoch
	appendOne(t, s, zero)
	later := msg("a", "later", direct("d1"))
	later.SendAt, later.ExpiresAt = epoch.Add(time.Minute), epoch.Add(time.Minute+time.Hour)
	appendOne(t, s, later, "d1")
	bcast := msg("a", "bcast", push.Audience{All: true})
	bcast.TTL, bcast.ExpiresAt = 20*time.Second, epoch.Add(20*time.Second)
	appendOne(t, s, bcast)

	wantPending(t, s, d, epoch.Add(time.Second), "short", "bcast")
	wantPending(t, s, d, epoch.Add(10*time.Second), "bcast")
	wantPending(t, s, d, epoch.Add(30*time.Second))
	wantPending(t, s, d, epoch.Add(time.Minute), "later")
	wantPending(t, s, d, epoch.Add(2*time.Hour))
}

func testCollapseDirect(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "")
	d2 := mustDevice(t, s, "a", "d2", push.Android, "")
	old := msg("a", "old", direct("d1", "d2"))
	old.CollapseID = "score"
	appendOne(t, s, old, "d1", "d2")
	ack(t, s, d2, "old")
	other := msg("a", "other", direct("d1"))
	other.CollapseID = "weather"
	appendOne(t, s, other, "d1")
	newer := msg("a", "new", direct("d1", "d2"))
	newer.CollapseID = "score"
	appendOne(t, s, newer, "d1", "d2")

	now := epoch.Add(time.Second)
	wantPending(t, s, d1, now, "other", "new")
	wantPending(t, s, d2, now, "new")
	if _, c := counters(t, s, "a", "old"); !sameCounts(c, store.Counters{Targeted: 2, Delivered: 1, Replaced: 1}) {
		t.Errorf("replaced message counters = %+v, want targeted 2, delivered 1, replaced 1", c)
	}
}

func testCollapseFanout(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	old := msg("a", "old", push.Audience{All: true})
	old.CollapseID = "score"
	appendOne(t, s, old)
	elsewhere := msg("b", "elsewhere", push.Audience{All: true})
	elsewhere.CollapseID = "score"
	appendOne(t, s, elsewhere)
	wantPending(t, s, d, epoch.Add(time.Second), "old")
	newer := msg("a", "new", push.Audience{All: true})
	newer.CollapseID = "score"
	appendOne(t, s, newer)
	wantPending(t, s, d, epoch.Add(time.Second), "new")
	if m, _ := counters(t, s, "a", "old"); !m.Replaced {
		t.Errorf("old fan-out message not marked Replaced")
	}
	if m, _ := counters(t, s, "b", "elsewhere"); m.Replaced {
		t.Errorf("another app's message with the same collapse ID was replaced")
	}
}

func testRecall(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	appendOne(t, s, msg("a", "m1", direct("d1")), "d1")
	appendOne(t, s, msg("a", "m2", push.Audience{All: true}))
	appendOne(t, s, msg("a", "m3", direct("d1")), "d1")
	if err := s.Recall(ctx, "a", "m1"); err != nil {
		t.Fatalf("Recall(m1): %v", err)
	}
	if err := s.Recall(ctx, "a", "m2"); err != nil {
		t.Fatalf("Recall(m2): %v", err)
	}
	if err := s.Recall(ctx, "b", "m3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Recall(other app) = %v, want ErrNotFound", err)
	}
	wantPending(t, s, d, epoch.Add(time.Second), "m3")
	if m, _ := counters(t, s, "a", "m1"); !m.Recalled {
		t.Errorf("m1 not marked Recalled")
	}
}

func testIdempotency(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	first := msg("a", "m1", direct("d1"))
	first.IdempotencyKey = "k"
	appendOne(t, s, first, "d1")
	retry := msg("a", "m2", direct("d1"))
	retry.IdempotencyKey = "k"
	if r := appendOne(t, s, retry, "d1"); r.ID != "m1" || !r.Duplicate {
		t.Errorf("retry = %+v, want duplicate of m1", r)
	}
	otherApp := msg("b", "m3", push.Audience{All: true})
	otherApp.IdempotencyKey = "k"
	if r := appendOne(t, s, otherApp); r.ID != "m3" || r.Duplicate {
		t.Errorf("same key in another app = %+v, want a new message", r)
	}
	x, y := msg("a", "x", direct("d1")), msg("a", "y", direct("d1"))
	x.IdempotencyKey, y.IdempotencyKey = "batch", "batch"
	res, err := s.Append(ctx, []store.Accept{{Msg: x, Targets: []string{"d1"}}, {Msg: y, Targets: []string{"d1"}}})
	if err != nil {
		t.Fatalf("Append(batch): %v", err)
	}
	if len(res) != 2 || res[0].ID != "x" || res[0].Duplicate || res[1].ID != "x" || !res[1].Duplicate {
		t.Errorf("batch with a repeated key = %+v, want x then a duplicate of x", res)
	}
	wantPending(t, s, d, epoch.Add(time.Second), "m1", "x")
	if _, _, err := s.Message(ctx, "a", "m2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the duplicate was stored: Message(m2) = %v", err)
	}
}

func testLimit(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	var batch []store.Accept
	for i := range 10 {
		if i%2 == 0 {
			batch = append(batch, store.Accept{Msg: msg("a", fmt.Sprintf("m%d", i), direct("d1")), Targets: []string{"d1"}})
		} else {
			batch = append(batch, store.Accept{Msg: msg("a", fmt.Sprintf("m%d", i), push.Audience{All: true})})
		}
	}
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.Pending(ctx, &d, epoch.Add(time.Second), 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"m0", "m1", "m2"}) {
		t.Errorf("Pending(limit 3) = %v, want [m0 m1 m2]", ids)
	}
}

// testLimitBytes: a byte bound stops Pending at the message that reaches
// it, over inbox and fan-out messages alike, so that it never returns
// nothing when something waits.
func testLimitBytes(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	var batch []store.Accept
	for i := range 6 {
		m := msg("a", fmt.Sprintf("m%d", i), direct("d1"))
		m.Data = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, make([]byte, 1000)))
		targets := []string{"d1"}
		if i%2 == 1 {
			m.Audience, targets = push.Audience{All: true}, nil
		}
		batch = append(batch, store.Accept{Msg: m, Targets: targets})
	}
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	one := batch[0].Msg.Size()
	for _, c := range []struct{ maxBytes, want int }{
		{1, 1}, {one, 1}, {one + 1, 2}, {2 * one, 2}, {3*one + 10, 4}, {100 * one, 6}, {0, 6},
	} {
		msgs, err := s.Pending(ctx, &d, epoch.Add(time.Second), 10, c.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != c.want {
			t.Errorf("Pending(maxBytes %d, messages of %d) returned %d messages, want %d", c.maxBytes, one, len(msgs), c.want)
		}
		for i, m := range msgs {
			if want := fmt.Sprintf("m%d", i); m.ID != want {
				t.Errorf("Pending(maxBytes %d)[%d] = %s, want %s", c.maxBytes, i, m.ID, want)
			}
		}
	}
}

func testDeleteDevice(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	appendOne(t, s, msg("a", "m1", direct("d1")), "d1")
	if err := s.DeleteDevice(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	// A new registration never inherits anything of a deleted one.
	d2 := mustDevice(t, s, "a", "d1", push.Android, "")
	if d2.FirstSeq < d.FirstSeq {
		t.Errorf("FirstSeq went back: %d < %d", d2.FirstSeq, d.FirstSeq)
	}
	wantPending(t, s, d2, epoch.Add(time.Second))
}

func testSweep(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	short := msg("a", "short", direct("d1"))
	short.ExpiresAt = epoch.Add(time.Minute)
	appendOne(t, s, short, "d1")
	bshort := msg("a", "bshort", push.Audience{All: true})
	bshort.ExpiresAt = epoch.Add(time.Minute)
	appendOne(t, s, bshort)
	appendOne(t, s, msg("a", "long", direct("d1")), "d1")
	ack(t, s, d, "bshort")

	// Before the retention runs out the report of an expired message stays.
	if _, err := s.Sweep(ctx, epoch.Add(2*time.Minute), 10*time.Minute); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if _, c := counters(t, s, "a", "bshort"); c.Delivered != 1 {
		t.Errorf("report of an expired message within retention: delivered %d, want 1", c.Delivered)
	}
	wantPending(t, s, d, epoch.Add(2*time.Minute), "long")

	n, err := s.Sweep(ctx, epoch.Add(30*time.Minute), 10*time.Minute)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if n != 2 {
		t.Errorf("Sweep purged %d messages, want 2", n)
	}
	for _, id := range []string{"short", "bshort"} {
		if _, _, err := s.Message(ctx, "a", id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Message(%s) after purge = %v, want ErrNotFound", id, err)
		}
	}
	wantPending(t, s, d, epoch.Add(30*time.Minute), "long")
	if _, c := counters(t, s, "a", "long"); c.Targeted != 1 {
		t.Errorf("a live message lost its counters: %+v", c)
	}
}

func testReopen(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "al", "news")
	d2 := mustDevice(t, s, "a", "d2", push.Android, "")
	r1 := appendOne(t, s, msg("a", "m1", direct("d1")), "d1")
	appendOne(t, s, msg("a", "m2", push.Audience{Tags: []string{"news"}}))
	appendOne(t, s, msg("a", "m3", push.Audience{All: true}))
	ack(t, s, d1, "m3")
	ack(t, s, d2, "m3")

	s = reopen()
	if _, err := s.App(ctx, "a"); err != nil {
		t.Fatalf("App after reopen: %v", err)
	}
	got, err := s.Device(ctx, "d1")
	if err != nil || got.Alias != "al" || !slices.Equal(got.Tags, []string{"news"}) || got.FirstSeq != d1.FirstSeq {
		t.Fatalf("Device after reopen = %+v, %v", got, err)
	}
	now := epoch.Add(time.Second)
	wantPending(t, s, d1, now, "m1", "m2")
	wantPending(t, s, d2, now)
	if _, c := counters(t, s, "a", "m3"); c.Delivered != 2 {
		t.Errorf("delivered after reopen = %d, want 2", c.Delivered)
	}
	r4 := appendOne(t, s, msg("a", "m4", direct("d2")), "d2")
	if r4.Seq <= r1.Seq+2 {
		t.Errorf("Seq after reopen = %d, want above %d", r4.Seq, r1.Seq+2)
	}
	d3 := mustDevice(t, s, "a", "d3", push.Android, "")
	if d3.FirstSeq < r4.Seq {
		t.Errorf("a device registered after m4 has FirstSeq %d < %d", d3.FirstSeq, r4.Seq)
	}
	wantPending(t, s, d3, now)
}

// testConcurrentAppends appends fan-out messages from many goroutines while a
// device reads and acknowledges whatever it is given; every message must
// reach it exactly once, whatever order the appends commit in.
func testConcurrentAppends(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := msg("a", fmt.Sprintf("w%d-%d", w, i), push.Audience{All: true})
				if i%3 == 0 {
					m.Audience = direct("d1")
					if _, err := s.Append(ctx, []store.Accept{{Msg: m, Targets: []string{"d1"}}}); err != nil {
						errs <- err
						return
					}
					continue
				}
				if _, err := s.Append(ctx, []store.Accept{{Msg: m}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	seen := map[string]int{}
	drain := func() {
		msgs, err := s.Pending(ctx, &d, epoch.Add(time.Second), 50, 0)
		if err != nil {
			t.Fatalf("Pending: %v", err)
		}
		var ids []string
		for _, m := range msgs {
			seen[m.ID]++
			ids = append(ids, m.ID)
		}
		if len(ids) > 0 {
			if _, err := s.Ack(ctx, &d, ids); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			drain()
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	for range 3 {
		drain()
	}
	if len(seen) != writers*each {
		t.Errorf("device received %d distinct messages, want %d", len(seen), writers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %s delivered %d times after being acknowledged", id, n)
		}
	}
}

func testClosed(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.App(ctx, "a"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("App after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Append(ctx, []store.Accept{{Msg: msg("a", "m", push.Audience{All: true})}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
}
