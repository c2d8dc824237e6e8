package storetest

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

func testListApps(t *testing.T, open Opener) {
	s, reopen := open(t)
	if apps, err := s.ListApps(ctx); err != nil || len(apps) != 0 {
		t.Fatalf("ListApps of an empty store = %v, %v; want none", apps, err)
	}
	for _, k := range []string{"ak-b", "ak-c", "ak-a"} {
		mustApp(t, s, k)
	}
	want := func(s store.Store) {
		t.Helper()
		apps, err := s.ListApps(ctx)
		if err != nil {
			t.Fatalf("ListApps: %v", err)
		}
		var got []string
		for _, a := range apps {
			got = append(got, a.Key+"/"+a.Name)
			if !a.CreatedAt.Equal(epoch) || len(a.SecretHash) == 0 {
				t.Errorf("ListApps gives %+v", a)
			}
		}
		if w := []string{"ak-a/name-ak-a", "ak-b/name-ak-b", "ak-c/name-ak-c"}; !slices.Equal(got, w) {
			t.Errorf("ListApps = %v, want %v", got, w)
		}
	}
	want(s)
	want(reopen())
}

// listIDs pages through ListDevices with pages of size, checking that the
// pages join up, and returns every ID.
func listIDs(t *testing.T, s store.Store, app, tag string, size int) []string {
	t.Helper()
	var all []string
	after := ""
	for range 100 {
		ds, err := s.ListDevices(ctx, app, store.DeviceQuery{Tag: tag, After: after, Limit: size})
		if err != nil {
			t.Fatalf("ListDevices(%s, %q, after %q): %v", app, tag, after, err)
		}
		if len(ds) > size {
			t.Fatalf("ListDevices gave %d devices for a limit of %d", len(ds), size)
		}
		for _, d := range ds {
			if d.App != app || (tag != "" && !d.HasTag(tag)) {
				t.Errorf("ListDevices(%s, %q) gives %+v", app, tag, d)
			}
			all = append(all, d.ID)
		}
		if len(ds) < size {
			return all
		}
		after = ds[len(ds)-1].ID
	}
	t.Fatal("ListDevices never ends")
	return nil
}

func testListDevices(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	mustDevice(t, s, "a", "d3", push.Android, "", "news")
	mustDevice(t, s, "a", "d1", push.IOS, "", "news", "sport")
	mustDevice(t, s, "a", "d2", push.Web, "")
	mustDevice(t, s, "a", "d10", push.Web, "", "sport")
	mustDevice(t, s, "b", "d4", push.Web, "", "news")

	check := func(s store.Store, tag string, want ...string) {
		t.Helper()
		for _, size := range []int{1, 2, 10} {
			if got := listIDs(t, s, "a", tag, size); !slices.Equal(got, want) {
				t.Errorf("ListDevices(a, tag %q) in pages of %d = %v, want %v", tag, size, got, want)
			}
		}
	}
	check(s, "", "d1", "d10", "d2", "d3")
	check(s, "news", "d1", "d3")
	check(s, "sport", "d1", "d10")
	check(s, "none")
	if got := listIDs(t, s, "b", "news", 10); !slices.Equal(got, []string{"d4"}) {
		t.Errorf("ListDevices(b, news) = %v, want [d4]", got)
	}
	if got := listIDs(t, s, "nope", "", 10); len(got) != 0 {
		t.Errorf("ListDevices(unknown app) = %v, want none", got)
	}
	// A cursor that names no device still pages from where it sorts.
	if ds, err := s.ListDevices(ctx, "a", store.DeviceQuery{After: "d15", Limit: 10}); err != nil || len(ds) != 2 || ds[0].ID != "d2" {
		t.Errorf("ListDevices(after d15) = %v, %v; want d2, d3", ds, err)
	}

	// Tags follow updates and deletions.
	d1, _ := s.Device(ctx, "d1")
	d1.Tags = []string{"sport", "weather"}
	if err := s.UpdateDevice(ctx, d1); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	if err := s.DeleteDevice(ctx, "d10"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	check(s, "news", "d3")
	check(s, "sport", "d1")
	check(s, "weather", "d1")
	check(s, "", "d1", "d2", "d3")
	s = reopen()
	check(s, "news", "d3")
	check(s, "weather", "d1")
}

func testCountDevices(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	count := func(s store.Store, app string) map[push.Platform]int {
		t.Helper()
		c, err := s.CountDevices(ctx, app)
		if err != nil {
			t.Fatalf("CountDevices: %v", err)
		}
		return c
	}
	if c := count(s, "a"); len(c) != 0 {
		t.Errorf("CountDevices of an app without devices = %v", c)
	}
	mustDevice(t, s, "a", "d1", push.Android, "")
	mustDevice(t, s, "a", "d2", push.Android, "")
	d3 := mustDevice(t, s, "a", "d3", push.IOS, "")
	mustDevice(t, s, "a", "d4", push.Web, "")
	mustDevice(t, s, "b", "d5", push.Web, "")
	want := map[push.Platform]int{push.Android: 2, push.IOS: 1, push.Web: 1}
	if c := count(s, "a"); !maps.Equal(c, want) {
		t.Errorf("CountDevices(a) = %v, want %v", c, want)
	}
	d3.Platform = push.Other
	if err := s.UpdateDevice(ctx, d3); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	if err := s.DeleteDevice(ctx, "d1"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	want = map[push.Platform]int{push.Android: 1, push.Other: 1, push.Web: 1}
	if c := count(reopen(), "a"); !maps.Equal(c, want) {
		t.Errorf("CountDevices(a) after an update, a deletion and a restart = %v, want %v", c, want)
	}
}

// listedIDs returns the IDs ListMessages gives, in its order.
func listedIDs(t *testing.T, s store.Store, app, before string, limit int) []string {
	t.Helper()
	ls, err := s.ListMessages(ctx, app, before, limit)
	if err != nil {
		t.Fatalf("ListMessages(%s, before %q, %d): %v", app, before, limit, err)
	}
	var ids []string
	for _, l := range ls {
		if l.Msg.App != app {
			t.Errorf("ListMessages(%s) gives a message of %s", app, l.Msg.App)
		}
		ids = append(ids, l.Msg.ID)
	}
	return ids
}

func testListMessages(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustApp(t, s, "a")
	mustApp(t, s, "b")
	d1 := mustDevice(t, s, "a", "d1", push.Android, "")
	mustDevice(t, s, "a", "d2", push.Android, "")
	mustDevice(t, s, "b", "d3", push.Android, "")
	if ids := listedIDs(t, s, "a", "", 10); len(ids) != 0 {
		t.Errorf("ListMessages of an app without messages = %v", ids)
	}
	appendOne(t, s, msg("a", "m1", direct("d1", "d2")), "d1", "d2")
	appendOne(t, s, msg("b", "x1", direct("d3")), "d3")
	appendOne(t, s, msg("a", "m2", push.Audience{All: true}))
	short := msg("a", "m3", direct("d1"))
	short.ExpiresAt = epoch.Add(time.Minute)
	appendOne(t, s, short, "d1")
	appendOne(t, s, msg("b", "x2", direct("d3")), "d3")
	appendOne(t, s, msg("a", "m4", direct("d2")), "d2")
	ack(t, s, d1, "m1", "m2")

	if ids := listedIDs(t, s, "a", "", 10); !slices.Equal(ids, []string{"m4", "m3", "m2", "m1"}) {
		t.Errorf("ListMessages(a) = %v, want newest first [m4 m3 m2 m1]", ids)
	}
	var pages []string
	for before := ""; ; {
		ids := listedIDs(t, s, "a", before, 3)
		pages = append(pages, strings.Join(ids, ","))
		if len(ids) < 3 {
			break
		}
		before = ids[len(ids)-1]
	}
	if got := strings.Join(pages, " | "); got != "m4,m3,m2 | m1" {
		t.Errorf("ListMessages(a) in pages of 3 = %s, want m4,m3,m2 | m1", got)
	}
	if ids := listedIDs(t, s, "b", "", 1); !slices.Equal(ids, []string{"x2"}) {
		t.Errorf("ListMessages(b, limit 1) = %v, want [x2]", ids)
	}
	for _, before := range []string{"nope", "x1"} {
		if _, err := s.ListMessages(ctx, "a", before, 10); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ListMessages(a, before %s) = %v, want ErrNotFound", before, err)
		}
	}

	ls, err := s.ListMessages(ctx, "a", "m3", 10)
	if err != nil || len(ls) != 2 {
		t.Fatalf("ListMessages(a, before m3) = %v, %v", ls, err)
	}
	if m2 := ls[0]; m2.Msg.ID != "m2" || !m2.Msg.Audience.All || m2.Counters.Delivered != 1 || m2.Counters.Targeted != 0 {
		t.Errorf("ListMessages gives m2 as %+v %+v; want a broadcast acknowledged once", m2.Msg, m2.Counters)
	}
	if m1 := ls[1]; m1.Msg.ID != "m1" || m1.Msg.Notification == nil || m1.Msg.Notification.Title != "t-m1" ||
		m1.Counters.Targeted != 2 || m1.Counters.Delivered != 1 {
		t.Errorf("ListMessages gives m1 as %+v %+v; want 2 targeted, 1 delivered", m1.Msg, m1.Counters)
	}

	// Purged messages leave the list; a restart keeps the rest.
	if _, err := s.Sweep(ctx, epoch.Add(40*time.Minute), 30*time.Minute); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	s = reopen()
	appendOne(t, s, msg("a", "m5", direct("d1")), "d1")
	want := []string{"m5", "m4", "m2", "m1"}
	if ids := listedIDs(t, s, "a", "", 10); !slices.Equal(ids, want) {
		// The sweep purges what expired 30 minutes before its now: m3 only.
		t.Errorf("ListMessages(a) after a sweep and a restart = %v, want %v", ids, want)
	}
	if _, err := s.ListMessages(ctx, "a", "m3", 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListMessages(a, before a purged message) = %v, want ErrNotFound", err)
	}
}
