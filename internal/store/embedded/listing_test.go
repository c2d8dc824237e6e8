package embedded

import (
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// TestListingIndexBuiltForOldStores: a store written before listing.go
// (no tag or message index, no platform in the device index) gets them at
// open.
func TestListingIndexBuiltForOldStores(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	setup(t, s)
	for i, p := range []push.Platform{push.Android, push.IOS, push.IOS} {
		id := string(rune('x' + i))
		if _, err := s.CreateDevice(bg, push.Device{ID: id, App: "a", Platform: p, Tags: []string{"news"}, CreatedAt: epoch}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(bg, []store.Accept{{Msg: newMsg("m1", push.Audience{All: true}, time.Hour)}, {Msg: newMsg("m2", push.Audience{All: true}, time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	// What an older version left: none of the rows listing.go reads.
	b := s.db.NewBatch()
	for _, p := range [][]byte{key(tTagDev), key(tAppMsg)} {
		b.DeleteRange(p, prefixEnd(p), nil)
	}
	for _, id := range []string{"x", "y", "z"} {
		b.Set(kAppDev("a", id), nil, nil)
	}
	b.Delete(key(tListDone), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.ListDevices(bg, "a", store.DeviceQuery{Tag: "news", Limit: 10}); len(ds) != 0 {
		t.Fatalf("the tag index was not removed: %v", ds)
	}
	want := map[push.Platform]int{push.Android: 1, push.IOS: 2}
	if c, err := s.CountDevices(bg, "a"); err != nil || !maps.Equal(c, want) {
		t.Errorf("CountDevices of index rows without platforms = %v, %v; want %v", c, err, want)
	}
	s.Close()

	s = mustOpen(t, dir)
	defer s.Close()
	if ds, err := s.ListDevices(bg, "a", store.DeviceQuery{Tag: "news", Limit: 10}); err != nil || len(ds) != 3 {
		t.Errorf("ListDevices(news) after the rebuild = %v, %v; want 3 devices", ds, err)
	}
	if c, err := s.CountDevices(bg, "a"); err != nil || !maps.Equal(c, want) {
		t.Errorf("CountDevices after the rebuild = %v, %v; want %v", c, err, want)
	}
	if v, _ := getValue(s.db, kAppDev("a", "y")); string(v) != "ios" {
		t.Errorf("the device index row holds %q, want the platform", v)
	}
	if ls, err := s.ListMessages(bg, "a", "", 10); err != nil || len(ls) != 2 || ls[0].Msg.ID != "m2" {
		t.Errorf("ListMessages after the rebuild = %v, %v; want m2, m1", ls, err)
	}
}
