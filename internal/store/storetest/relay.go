package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

func relayDue(t *testing.T, s store.Store, now time.Time, limit int) ([]store.RelayJob, time.Time) {
	t.Helper()
	jobs, next, err := s.RelayDue(ctx, now, limit)
	if err != nil {
		t.Fatalf("RelayDue(+%v): %v", now.Sub(epoch), err)
	}
	for i := 1; i < len(jobs); i++ {
		if jobs[i].Due.Before(jobs[i-1].Due) {
			t.Errorf("RelayDue: %s/%s due %v after %s/%s due %v", jobs[i].MsgID, jobs[i].Device, jobs[i].Due, jobs[i-1].MsgID, jobs[i-1].Device, jobs[i-1].Due)
		}
	}
	return jobs, next
}

func jobNames(jobs []store.RelayJob) string {
	l := make([]string, len(jobs))
	for i, j := range jobs {
		l[i] = j.MsgID + "/" + j.Device
	}
	return strings.Join(l, ",")
}

func wantJobs(t *testing.T, s store.Store, now, next time.Time, want string) []store.RelayJob {
	t.Helper()
	jobs, gotNext := relayDue(t, s, now, 100)
	if got := jobNames(jobs); got != want {
		t.Errorf("RelayDue(+%v) = [%s], want [%s]", now.Sub(epoch), got, want)
	}
	if !gotNext.Equal(next) {
		t.Errorf("RelayDue(+%v): next = %v, want %v", now.Sub(epoch), gotNext, next)
	}
	return jobs
}

func apnsDevice(t *testing.T, s store.Store, app, id, token string) push.Device {
	t.Helper()
	d, err := s.CreateDevice(ctx, push.Device{
		ID: id, App: app, Platform: push.IOS, SecretHash: push.HashSecret("ds-" + id),
		Channel:   push.Channel{Kind: push.ChannelAPNs, Token: token, Since: epoch},
		CreatedAt: epoch, UpdatedAt: epoch,
	})
	if err != nil {
		t.Fatalf("CreateDevice(%s): %v", id, err)
	}
	return d
}

func relayCounts(t *testing.T, s store.Store, id string, ch push.ChannelKind) store.RelayCounts {
	t.Helper()
	_, c := counters(t, s, "a", id)
	if rc := c.Relay[ch]; rc != nil {
		return *rc
	}
	return store.RelayCounts{}
}

// testRelayQueue: jobs written with their message come due in due order;
// a retry moves one and counts it waiting; done removes it and counts its
// outcome, once.
func testRelayQueue(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	apnsDevice(t, s, "a", "d1", strings.Repeat("ab", 32))
	apnsDevice(t, s, "a", "d2", strings.Repeat("cd", 32))
	res, err := s.Append(ctx, []store.Accept{{
		Msg: msg("a", "m1", direct("d1", "d2")), Targets: []string{"d1", "d2"},
		Relays: []store.RelayJob{
			{Device: "d1", Channel: push.ChannelAPNs, Due: epoch},
			{Device: "d2", Channel: push.ChannelAPNs, Due: epoch.Add(30 * time.Second)},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(-time.Second), epoch, "")
	jobs := wantJobs(t, s, epoch, epoch.Add(30*time.Second), "m1/d1")
	if j := jobs[0]; j.Seq != res[0].Seq || j.App != "a" || j.Channel != push.ChannelAPNs || j.Attempt != 0 {
		t.Errorf("job = %+v, want seq %d, app a, apns, attempt 0", j, res[0].Seq)
	}
	wantJobs(t, s, epoch.Add(time.Minute), time.Time{}, "m1/d1,m1/d2")
	if jobs, next := relayDue(t, s, epoch.Add(time.Minute), 1); len(jobs) != 1 || !next.Equal(epoch.Add(30*time.Second)) {
		t.Errorf("RelayDue(limit 1) = %d jobs, next %v; want 1, the second job's due", len(jobs), next)
	}

	// d1's first send failed: it waits 10 s.
	j := jobs[0]
	j.Attempt = 1
	if err := s.RelayRetry(ctx, j, epoch.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(5*time.Second), epoch.Add(10*time.Second), "")
	if c := relayCounts(t, s, "m1", push.ChannelAPNs); c.Waiting != 1 {
		t.Errorf("after a retry: %+v, want waiting 1", c)
	}
	jobs = wantJobs(t, s, epoch.Add(10*time.Second), epoch.Add(30*time.Second), "m1/d1")
	if jobs[0].Attempt != 1 {
		t.Errorf("retried job attempt = %d, want 1", jobs[0].Attempt)
	}
	// A second retry does not count it waiting twice.
	jobs[0].Attempt = 2
	if err := s.RelayRetry(ctx, jobs[0], epoch.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	jobs = wantJobs(t, s, epoch.Add(20*time.Second), epoch.Add(30*time.Second), "m1/d1")
	sent := store.RelayOutcome{Channel: push.ChannelAPNs, Result: store.RelaySent}
	if err := s.RelayDone(ctx, store.RelayEnd{Job: jobs[0], Outcome: sent}); err != nil {
		t.Fatal(err)
	}
	if err := s.RelayDone(ctx, store.RelayEnd{Job: jobs[0], Outcome: sent}); err != nil { // again: ignored
		t.Fatal(err)
	}
	if c := relayCounts(t, s, "m1", push.ChannelAPNs); c.Sent != 1 || c.Waiting != 0 {
		t.Errorf("after done: %+v, want sent 1, waiting 0", c)
	}
	jobs = wantJobs(t, s, epoch.Add(time.Minute), time.Time{}, "m1/d2")
	failed := store.RelayOutcome{Channel: push.ChannelAPNs, Result: store.RelayFailed, Reason: "PayloadTooLarge"}
	if err := s.RelayDone(ctx, store.RelayEnd{Job: jobs[0], Outcome: failed}); err != nil {
		t.Fatal(err)
	}
	c := relayCounts(t, s, "m1", push.ChannelAPNs)
	if c.Sent != 1 || c.Failed["PayloadTooLarge"] != 1 || len(c.Failed) != 1 {
		t.Errorf("counts = %+v, want sent 1, failed PayloadTooLarge 1", c)
	}
	wantJobs(t, s, epoch.Add(time.Hour), time.Time{}, "")
	// A retry of a job that is done is ignored, not resurrected.
	if err := s.RelayRetry(ctx, jobs[0], epoch); err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(time.Hour), time.Time{}, "")
	// A message without relays has no relay counts.
	appendOne(t, s, msg("a", "plain", direct("d1")), "d1")
	if _, c := counters(t, s, "a", "plain"); c.Relay != nil {
		t.Errorf("plain message relay counts = %v, want nil", c.Relay)
	}
}

// testRelayDoneMany: ends written in one call count as they would one by
// one: each job once, even when it is named twice, and a retried job
// leaves the waiting count.
func testRelayDoneMany(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	var relays []store.RelayJob
	var targets []string
	for i := range 4 {
		id := fmt.Sprintf("d%d", i)
		apnsDevice(t, s, "a", id, strings.Repeat(fmt.Sprintf("%02x", i), 32))
		targets = append(targets, id)
		relays = append(relays, store.RelayJob{Device: id, Channel: push.ChannelAPNs, Due: epoch})
	}
	if _, err := s.Append(ctx, []store.Accept{{Msg: msg("a", "m1", direct(targets...)), Targets: targets, Relays: relays}}); err != nil {
		t.Fatal(err)
	}
	jobs := wantJobs(t, s, epoch, time.Time{}, "m1/d0,m1/d1,m1/d2,m1/d3")
	retried := jobs[3]
	retried.Attempt = 1
	if err := s.RelayRetry(ctx, retried, epoch); err != nil {
		t.Fatal(err)
	}
	jobs = wantJobs(t, s, epoch, time.Time{}, "m1/d0,m1/d1,m1/d2,m1/d3")
	sent := store.RelayOutcome{Channel: push.ChannelAPNs, Result: store.RelaySent}
	gone := store.RelayOutcome{Channel: push.ChannelAPNs, Result: store.RelayGone, Reason: "Unregistered"}
	err := s.RelayDone(ctx,
		store.RelayEnd{Job: jobs[0], Outcome: sent},
		store.RelayEnd{Job: jobs[0], Outcome: sent}, // named twice: counted once
		store.RelayEnd{Job: jobs[1], Outcome: sent},
		store.RelayEnd{Job: jobs[2], Outcome: gone},
		store.RelayEnd{Job: jobs[3], Outcome: sent},
	)
	if err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(time.Hour), time.Time{}, "")
	if c := relayCounts(t, s, "m1", push.ChannelAPNs); c.Sent != 3 || c.Gone != 1 || c.Waiting != 0 || len(c.Failed) != 0 {
		t.Errorf("counts = %+v, want sent 3, gone 1, none waiting or failed", c)
	}
	if err := s.RelayDone(ctx); err != nil {
		t.Errorf("RelayDone of nothing: %v", err)
	}
}

// testRelayReopen: jobs and counts survive a restart.
func testRelayReopen(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	apnsDevice(t, s, "a", "d1", strings.Repeat("ab", 32))
	_, err := s.Append(ctx, []store.Accept{{
		Msg: msg("a", "m1", direct("d1")), Targets: []string{"d1"},
		Relays: []store.RelayJob{{Device: "d1", Channel: push.ChannelAPNs, Due: epoch}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	jobs := wantJobs(t, s, epoch, time.Time{}, "m1/d1")
	jobs[0].Attempt = 1
	if err := s.RelayRetry(ctx, jobs[0], epoch.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	jobs = wantJobs(t, s, epoch.Add(time.Second), time.Time{}, "m1/d1")
	if jobs[0].Attempt != 1 {
		t.Errorf("attempt after reopen = %d, want 1", jobs[0].Attempt)
	}
	if c := relayCounts(t, s, "m1", push.ChannelAPNs); c.Waiting != 1 {
		t.Errorf("after reopen: %+v, want waiting 1", c)
	}
}

// testRelayExpand: a fan-out job is replaced by its devices' jobs; a job
// that exists already is kept as it is; a fan-out job expanded already is
// not expanded again.
func testRelayExpand(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	m := msg("a", "b1", push.Audience{All: true})
	_, err := s.Append(ctx, []store.Accept{{Msg: m, Relays: []store.RelayJob{{Due: epoch, Wait: 7 * time.Second}}}})
	if err != nil {
		t.Fatal(err)
	}
	fan := wantJobs(t, s, epoch, time.Time{}, "b1/")[0]
	if fan.Wait != 7*time.Second {
		t.Errorf("fan-out job wait = %v, want 7s", fan.Wait)
	}
	if err := s.RelayExpand(ctx, fan, []store.RelayJob{{Device: "d1", Channel: push.ChannelAPNs, Due: epoch}}, false); err != nil {
		t.Fatal(err)
	}
	jobs := wantJobs(t, s, epoch, time.Time{}, "b1/,b1/d1")
	d1 := jobs[1]
	if d1.App != "a" || d1.Seq != fan.Seq || d1.MsgID != "b1" {
		t.Errorf("expanded job = %+v, want the fan-out job's message", d1)
	}
	d1.Attempt = 1
	if err := s.RelayRetry(ctx, d1, epoch.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The expansion runs again (a restart): d1's job keeps its attempt.
	s = reopen()
	err = s.RelayExpand(ctx, fan, []store.RelayJob{
		{Device: "d1", Channel: push.ChannelAPNs, Due: epoch},
		{Device: "d2", Channel: push.ChannelFCM, Due: epoch},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	jobs = wantJobs(t, s, epoch.Add(time.Second), time.Time{}, "b1/d2,b1/d1")
	if jobs[1].Attempt != 1 {
		t.Errorf("d1's job after a second expansion: attempt %d, want 1", jobs[1].Attempt)
	}
	if err := s.RelayExpand(ctx, fan, []store.RelayJob{{Device: "d3", Channel: push.ChannelAPNs, Due: epoch}}, true); err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(time.Second), time.Time{}, "b1/d2,b1/d1")
}

// testRelaySweep: purging a message drops its jobs and counts.
func testRelaySweep(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	apnsDevice(t, s, "a", "d1", strings.Repeat("ab", 32))
	_, err := s.Append(ctx, []store.Accept{{
		Msg: msg("a", "m1", direct("d1")), Targets: []string{"d1"},
		Relays: []store.RelayJob{{Device: "d1", Channel: push.ChannelAPNs, Due: epoch.Add(2 * time.Hour)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(ctx, epoch.Add(3*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	wantJobs(t, s, epoch.Add(3*time.Hour), time.Time{}, "")
}

// testRelayWaits: Waits follows the inbox entry of an explicit target and
// the acknowledgement of a fan-out message.
func testRelayWaits(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.IOS, "")
	d2 := mustDevice(t, s, "a", "d2", push.Android, "", "news")
	m1 := msg("a", "m1", direct("d1"))
	appendOne(t, s, m1, "d1")
	b1 := msg("a", "b1", push.Audience{Tags: []string{"news"}})
	appendOne(t, s, b1)
	waits := func(d push.Device, m *push.Message, want bool) {
		t.Helper()
		got, err := s.Waits(ctx, &d, m)
		if err != nil || got != want {
			t.Errorf("Waits(%s, %s) = %v, %v; want %v", d.ID, m.ID, got, err, want)
		}
	}
	waits(d1, m1, true)
	waits(d2, b1, true)
	waits(d1, b1, false) // not for d1
	waits(d2, m1, false)
	ack(t, s, d1, "m1")
	ack(t, s, d2, "b1")
	waits(d1, m1, false)
	waits(d2, b1, false)
}

// testVendorOnlyFanout: a vendor_only fan-out message is not for the own
// connection of a device with an active vendor channel, and is for one
// without (or whose channel was deactivated).
func testVendorOnlyFanout(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	own := mustDevice(t, s, "a", "own", push.IOS, "")
	vendor := apnsDevice(t, s, "a", "vendor", strings.Repeat("ab", 32))
	m := msg("a", "b1", push.Audience{All: true})
	m.Channel = push.VendorOnly
	appendOne(t, s, m)
	got, _ := counters(t, s, "a", "b1")
	if got.Channel != push.VendorOnly {
		t.Errorf("stored channel policy = %q, want vendor_only", got.Channel)
	}
	now := epoch.Add(time.Second)
	wantPending(t, s, own, now, "b1")
	wantPending(t, s, vendor, now)
	if _, err := s.DeactivateChannel(ctx, "vendor", vendor.Channel, "Unregistered", epoch); err != nil {
		t.Fatal(err)
	}
	vendor, _ = s.Device(ctx, "vendor")
	wantPending(t, s, vendor, now, "b1")
}

// testDeactivateChannel: only the channel the vendor answered about is
// deactivated, and the device shows why.
func testDeactivateChannel(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	old := apnsDevice(t, s, "a", "d1", strings.Repeat("ab", 32))
	rotated := old
	rotated.Channel = push.Channel{Kind: push.ChannelAPNs, Token: strings.Repeat("ef", 32), Since: epoch.Add(time.Minute)}
	if err := s.UpdateDevice(ctx, rotated); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.DeactivateChannel(ctx, "d1", old.Channel, "Unregistered", epoch.Add(2*time.Minute)); err != nil || ok {
		t.Errorf("DeactivateChannel(old token) = %v, %v; want false: the token was rotated", ok, err)
	}
	if ok, err := s.DeactivateChannel(ctx, "d1", rotated.Channel, "BadDeviceToken", epoch.Add(3*time.Minute)); err != nil || !ok {
		t.Errorf("DeactivateChannel(current token) = %v, %v; want true", ok, err)
	}
	s = reopen()
	d, err := s.Device(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	ch := d.Channel
	if ch.Token != rotated.Channel.Token || ch.Inactive != "BadDeviceToken" || !ch.InactiveAt.Equal(epoch.Add(3*time.Minute)) || !ch.Since.Equal(epoch.Add(time.Minute)) || ch.Vendor() {
		t.Errorf("channel = %+v, want the rotated token, inactive BadDeviceToken at +3m, since +1m", ch)
	}
	if _, err := s.DeactivateChannel(ctx, "nobody", ch, "x", epoch); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeactivateChannel(no device) = %v, want ErrNotFound", err)
	}
}

// testAddressTakeover: two devices of an app never share a vendor address;
// the newer registration takes it. Other apps are not touched.
func testAddressTakeover(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	tok := strings.Repeat("ab", 32)
	apnsDevice(t, s, "a", "d1", tok)
	apnsDevice(t, s, "b", "other-app", tok)
	apnsDevice(t, s, "a", "d2", tok)
	kind := func(id string) push.ChannelKind {
		t.Helper()
		d, err := s.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.Channel.Kind
	}
	if k := kind("d1"); k != push.ChannelHerald {
		t.Errorf("d1's channel after d2 registered its token: %q, want herald", k)
	}
	if k := kind("d2"); k != push.ChannelAPNs {
		t.Errorf("d2's channel = %q, want apns", k)
	}
	if k := kind("other-app"); k != push.ChannelAPNs {
		t.Errorf("the other app's device lost its token: %q", k)
	}
	// d1 takes it back by PATCH.
	d1, _ := s.Device(ctx, "d1")
	d1.Channel = push.Channel{Kind: push.ChannelAPNs, Token: tok, Since: epoch}
	if err := s.UpdateDevice(ctx, d1); err != nil {
		t.Fatal(err)
	}
	if k := kind("d2"); k != push.ChannelHerald {
		t.Errorf("d2 after d1 took the token back: %q, want herald", k)
	}
	// d1 moves to a new token: d3 may register the old one without
	// touching d1; and a deleted device frees its token.
	d1.Channel.Token = strings.Repeat("cd", 32)
	if err := s.UpdateDevice(ctx, d1); err != nil {
		t.Fatal(err)
	}
	apnsDevice(t, s, "a", "d3", tok)
	if k := kind("d1"); k != push.ChannelAPNs {
		t.Errorf("d1 lost its new token to d3's old one: %q", k)
	}
	if err := s.DeleteDevice(ctx, "d3"); err != nil {
		t.Fatal(err)
	}
	apnsDevice(t, s, "a", "d4", tok)
	// Web Push subscriptions are one address per endpoint.
	sub := &push.WebPushSubscription{Endpoint: "https://push.example/x", P256DH: "p", Auth: "a"}
	for _, id := range []string{"w1", "w2"} {
		if _, err := s.CreateDevice(ctx, push.Device{
			ID: id, App: "a", Platform: push.Web, SecretHash: push.HashSecret("x"),
			Channel: push.Channel{Kind: push.ChannelWebPush, WebPush: sub}, CreatedAt: epoch, UpdatedAt: epoch,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if k := kind("w1"); k != push.ChannelHerald {
		t.Errorf("w1 after w2 registered its endpoint: %q, want herald", k)
	}
}

// testChannelConfig: an app's sealed settings per kind are kept, replaced
// and deleted, and survive a restart.
func testChannelConfig(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	if err := s.PutChannelConfig(ctx, "nope", "apns", []byte("x")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PutChannelConfig(no app) = %v, want ErrNotFound", err)
	}
	if _, err := s.ChannelConfig(ctx, "a", "apns"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ChannelConfig(none) = %v, want ErrNotFound", err)
	}
	for _, v := range []string{"one", "two"} {
		if err := s.PutChannelConfig(ctx, "a", "apns", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutChannelConfig(ctx, "a", "fcm", []byte("f")); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	if v, err := s.ChannelConfig(ctx, "a", "apns"); err != nil || string(v) != "two" {
		t.Errorf("ChannelConfig(apns) = %q, %v; want two", v, err)
	}
	if err := s.DeleteChannelConfig(ctx, "a", "apns"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteChannelConfig(ctx, "a", "apns"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteChannelConfig again = %v, want ErrNotFound", err)
	}
	if v, err := s.ChannelConfig(ctx, "a", "fcm"); err != nil || string(v) != "f" {
		t.Errorf("ChannelConfig(fcm) = %q, %v; want f", v, err)
	}
}

// testInboxStats: the waiting inbox entries and the oldest one's
// acceptance; an ack takes its entry out, a broadcast adds none.
func testInboxStats(t *testing.T, open Opener) {
	s, _ := open(t)
	stats := func() store.InboxStats {
		t.Helper()
		st, err := s.InboxStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stats(); st.Entries != 0 || !st.Oldest.IsZero() {
		t.Errorf("empty store: %+v", st)
	}
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "")
	mustDevice(t, s, "a", "d2", push.Android, "")
	first := msg("a", "m1", direct("d1", "d2"))
	appendOne(t, s, first, "d1", "d2")
	second := msg("a", "m2", direct("d1"))
	second.AcceptedAt = epoch.Add(time.Minute)
	appendOne(t, s, second, "d1")
	appendOne(t, s, msg("a", "all", push.Audience{All: true}))
	if st := stats(); st.Entries != 3 || !st.Oldest.Equal(epoch) {
		t.Errorf("after 3 entries: %+v, want 3 entries, the oldest at %v", st, epoch)
	}
	if _, err := s.Ack(ctx, &d1, []string{"m1"}); err != nil {
		t.Fatal(err)
	}
	if st := stats(); st.Entries != 2 || !st.Oldest.Equal(epoch) {
		t.Errorf("after d1 acked m1: %+v, want 2 entries, the oldest (d2's m1) at %v", st, epoch)
	}
}

// testPing: an open store answers, a closed one says so.
func testPing(t *testing.T, open Opener) {
	s, _ := open(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping of an open store: %v", err)
	}
	s.Close()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping of a closed store answered nil")
	}
}
