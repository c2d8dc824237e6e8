package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// scheduledMsg is msg sent at epoch+at with a one-hour TTL from then.
func scheduledMsg(app, id string, aud push.Audience, at time.Duration) *push.Message {
	m := msg(app, id, aud)
	m.SendAt, m.ExpiresAt = epoch.Add(at), epoch.Add(at+time.Hour)
	return m
}

func due(t *testing.T, s store.Store, now time.Time, limit int) ([]store.Scheduled, time.Time) {
	t.Helper()
	d, next, err := s.Due(ctx, now, limit)
	if err != nil {
		t.Fatalf("Due(%v, %d): %v", now.Sub(epoch), limit, err)
	}
	for i := 1; i < len(d); i++ {
		a, b := d[i-1], d[i]
		if b.SendAt.Before(a.SendAt) || (b.SendAt.Equal(a.SendAt) && b.Seq <= a.Seq) {
			t.Errorf("Due: %s (%v, seq %d) after %s (%v, seq %d): not in due order", b.ID, b.SendAt, b.Seq, a.ID, a.SendAt, a.Seq)
		}
	}
	return d, next
}

func dueIDs(d []store.Scheduled) string {
	ids := make([]string, len(d))
	for i, sc := range d {
		ids[i] = sc.ID
	}
	return strings.Join(ids, ",")
}

// wantDue checks the IDs Due lists at now (every one, in due order) and
// the next due time it gives (zero: none).
func wantDue(t *testing.T, s store.Store, now time.Time, next time.Time, ids ...string) []store.Scheduled {
	t.Helper()
	d, gotNext := due(t, s, now, 1000)
	if got, want := dueIDs(d), strings.Join(ids, ","); got != want {
		t.Errorf("Due at +%v = [%s], want [%s]", now.Sub(epoch), got, want)
	}
	if !gotNext.Equal(next) {
		t.Errorf("Due at +%v: next = %v, want %v", now.Sub(epoch), gotNext, next)
	}
	return d
}

// testScheduleDue: only scheduled messages are listed, in due order
// whatever order they were accepted in, with who they are for, a page at
// a time, and the time of the next one.
func testScheduleDue(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	mustDevice(t, s, "a", "d1", push.Android, "")
	mustDevice(t, s, "a", "d2", push.Android, "")
	appendOne(t, s, msg("a", "now", push.Audience{All: true})) // not scheduled: never listed
	late := appendOne(t, s, scheduledMsg("a", "late", direct("d2", "d1"), 3*time.Minute), "d2", "d1")
	early := appendOne(t, s, scheduledMsg("a", "early", push.Audience{Tags: []string{"x"}}, time.Minute))
	res, err := s.Append(ctx, []store.Accept{
		{Msg: scheduledMsg("b", "mid", push.Audience{All: true, RegistrationIDs: []string{"d1"}}, 2*time.Minute)},
		{Msg: scheduledMsg("a", "tie", direct("d1"), 2*time.Minute), Targets: []string{"d1"}},
	})
	if err != nil {
		t.Fatal(err)
	}

	wantDue(t, s, epoch, epoch.Add(time.Minute))
	wantDue(t, s, epoch.Add(time.Minute-time.Millisecond), epoch.Add(time.Minute))
	d := wantDue(t, s, epoch.Add(time.Minute), epoch.Add(2*time.Minute), "early")
	if len(d) == 1 {
		want := store.Scheduled{Seq: early.Seq, ID: "early", App: "a", SendAt: epoch.Add(time.Minute), Fanout: true}
		if got := d[0]; got.Seq != want.Seq || got.ID != want.ID || got.App != want.App || !got.SendAt.Equal(want.SendAt) ||
			got.Fanout != want.Fanout || len(got.Targets) != 0 {
			t.Errorf("Due = %+v, want %+v", got, want)
		}
	}
	// Equal due times come in Seq order.
	wantDue(t, s, epoch.Add(2*time.Minute+time.Second), epoch.Add(3*time.Minute), "early", "mid", "tie")
	d = wantDue(t, s, epoch.Add(time.Hour), time.Time{}, "early", "mid", "tie", "late")
	if len(d) == 4 {
		if l := d[3]; l.Seq != late.Seq || l.Fanout || !slices.Equal(l.Targets, []string{"d1", "d2"}) {
			t.Errorf("Due(late) = %+v, want seq %d, targets [d1 d2], not fan-out", l, late.Seq)
		}
		if m := d[1]; m.App != "b" || !m.Fanout || len(m.Targets) != 0 || m.Seq != res[0].Seq {
			t.Errorf("Due(mid) = %+v, want app b, fan-out, no targets (none given)", m)
		}
	}

	// A full page: the next time is one already passed, so the caller
	// knows to come back at once.
	d, next := due(t, s, epoch.Add(time.Hour), 2)
	if dueIDs(d) != "early,mid" || !next.Equal(epoch.Add(2*time.Minute)) {
		t.Errorf("Due(limit 2) = [%s], next %v; want [early,mid], next %v", dueIDs(d), next, epoch.Add(2*time.Minute))
	}

	if err := s.Fired(ctx, d); err != nil {
		t.Fatalf("Fired: %v", err)
	}
	wantDue(t, s, epoch.Add(time.Hour), time.Time{}, "tie", "late")
	// Firing again, or what is not scheduled, changes nothing.
	if err := s.Fired(ctx, append(d, store.Scheduled{Seq: 999999, ID: "nope", App: "a", SendAt: epoch})); err != nil {
		t.Fatalf("Fired(again): %v", err)
	}
	if err := s.Fired(ctx, nil); err != nil {
		t.Fatalf("Fired(nil): %v", err)
	}
	wantDue(t, s, epoch.Add(2*time.Minute+time.Second), epoch.Add(3*time.Minute), "tie")
	// The messages themselves are untouched by firing.
	if m, _ := counters(t, s, "a", "early"); !m.SendAt.Equal(epoch.Add(time.Minute)) || m.Recalled {
		t.Errorf("Message(early) after Fired = %+v", m)
	}
}

// testScheduleReopen: the schedule is durable, and so is firing.
func testScheduleReopen(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustDevice(t, s, "a", "d1", push.Android, "")
	var batch []store.Accept
	for i := range 5 {
		// Accepted latest-due first, so that Seq order is not due order.
		m := scheduledMsg("a", fmt.Sprintf("m%d", i), direct("d1"), time.Duration(5-i)*time.Minute)
		batch = append(batch, store.Accept{Msg: m, Targets: []string{"d1"}})
	}
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	d := wantDue(t, s, epoch.Add(2*time.Minute), epoch.Add(3*time.Minute), "m4", "m3")
	if err := s.Fired(ctx, d); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	wantDue(t, s, epoch.Add(10*time.Minute), time.Time{}, "m2", "m1", "m0")
	d, _ = due(t, s, epoch.Add(10*time.Minute), 1)
	if len(d) != 1 || !slices.Equal(d[0].Targets, []string{"d1"}) {
		t.Errorf("Due after reopen = %+v, want m2 for d1", d)
	}
}

// testScheduleWithdrawn: a recalled message, and a fan-out one replaced by
// a collapse, leave the schedule at once; a direct collapse leaves the
// older message scheduled for the targets it still waits for.
func testScheduleWithdrawn(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "")
	mustDevice(t, s, "a", "d2", push.Android, "")
	appendOne(t, s, scheduledMsg("a", "recalled", direct("d1"), time.Minute), "d1")
	old := scheduledMsg("a", "oldfan", push.Audience{All: true}, 2*time.Minute)
	old.CollapseID = "c"
	appendOne(t, s, old)
	olddirect := scheduledMsg("a", "olddirect", direct("d1", "d2"), 3*time.Minute)
	olddirect.CollapseID = "c"
	appendOne(t, s, olddirect, "d1", "d2")
	appendOne(t, s, scheduledMsg("a", "acked", direct("d1", "d2"), 4*time.Minute), "d1", "d2")
	wantDue(t, s, epoch.Add(time.Hour), time.Time{}, "recalled", "oldfan", "olddirect", "acked")

	if err := s.Recall(ctx, "a", "recalled"); err != nil {
		t.Fatal(err)
	}
	newfan := scheduledMsg("a", "newfan", push.Audience{All: true}, 5*time.Minute)
	newfan.CollapseID = "c"
	appendOne(t, s, newfan)
	newdirect := msg("a", "newdirect", direct("d2")) // sent at once, replaces d2's entry
	newdirect.CollapseID = "c"
	appendOne(t, s, newdirect, "d2")
	// An acknowledgement of a message not yet due is ignored or counted,
	// but the device is no longer waiting for it either way.
	ack(t, s, d1, "acked")
	d := wantDue(t, s, epoch.Add(time.Hour), time.Time{}, "olddirect", "acked", "newfan")
	if len(d) == 3 {
		if !slices.Equal(d[0].Targets, []string{"d1"}) {
			t.Errorf("olddirect targets after a collapse for d2 = %v, want [d1]", d[0].Targets)
		}
		if !slices.Equal(d[1].Targets, []string{"d2"}) {
			t.Errorf("acked targets after d1 acknowledged = %v, want [d2]", d[1].Targets)
		}
	}
	if err := s.DeleteDevice(ctx, "d2"); err != nil {
		t.Fatal(err)
	}
	d = wantDue(t, s, epoch.Add(time.Hour), time.Time{}, "olddirect", "acked", "newfan")
	if len(d) == 3 && len(d[1].Targets) != 0 {
		t.Errorf("acked targets after d2 was deleted = %v, want none", d[1].Targets)
	}
	if err := s.Recall(ctx, "a", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Recall(unknown) = %v, want ErrNotFound", err)
	}
}

// testScheduleSweep: a scheduled message that expired without firing (the
// node was down; or a TTL of 0, which expires the instant it is due) stays
// listed after a sweep retires it, so the scheduler decides; purging it
// takes it off. A sweep leaves the messages not yet due alone.
func testScheduleSweep(t *testing.T, open Opener) {
	s, _ := open(t)
	mustApp(t, s, "a")
	d := mustDevice(t, s, "a", "d1", push.Android, "")
	zero := scheduledMsg("a", "zero", push.Audience{All: true}, time.Minute)
	zero.TTL, zero.ExpiresAt = 0, zero.SendAt
	appendOne(t, s, zero)
	appendOne(t, s, scheduledMsg("a", "soon", direct("d1"), 2*time.Minute), "d1")
	appendOne(t, s, scheduledMsg("a", "later", direct("d1"), 48*time.Hour), "d1")

	if _, err := s.Sweep(ctx, epoch.Add(90*time.Second), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	wantDue(t, s, epoch.Add(90*time.Second), epoch.Add(2*time.Minute), "zero")
	wantPending(t, s, d, epoch.Add(3*time.Minute), "soon")

	// Past retention of both: purged, and off the schedule with them.
	if n, err := s.Sweep(ctx, epoch.Add(5*time.Hour), time.Hour); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 purged", n, err)
	}
	wantDue(t, s, epoch.Add(5*time.Hour), epoch.Add(48*time.Hour))
	wantDue(t, s, epoch.Add(48*time.Hour), time.Time{}, "later")
	wantPending(t, s, d, epoch.Add(48*time.Hour), "later")
}
