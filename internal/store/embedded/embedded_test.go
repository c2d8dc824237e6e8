package embedded

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, openTemp)
}

// openTemp opens a store in a fresh directory; reopen closes it and opens
// the same directory again, as a restart would.
func openTemp(t *testing.T) (store.Store, func() store.Store) {
	t.Helper()
	dir := t.TempDir()
	s := mustOpen(t, dir)
	cur := s
	t.Cleanup(func() { cur.Close() })
	return s, func() store.Store {
		t.Helper()
		if err := cur.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		cur = mustOpen(t, dir)
		return cur
	}
}

func mustOpen(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

var (
	bg    = context.Background()
	epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func setup(t testing.TB, s *Store, devices ...string) []push.Device {
	t.Helper()
	if err := s.CreateApp(bg, push.App{Key: "a", Name: "a", CreatedAt: epoch}); err != nil {
		t.Fatal(err)
	}
	var out []push.Device
	for _, id := range devices {
		d, err := s.CreateDevice(bg, push.Device{ID: id, App: "a", Platform: push.Android, CreatedAt: epoch})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func newMsg(id string, aud push.Audience, ttl time.Duration) *push.Message {
	return &push.Message{
		ID: id, App: "a", Audience: aud, Data: []byte(`{"n":1}`),
		TTL: ttl, Priority: push.PriorityNormal,
		AcceptedAt: epoch, SendAt: epoch, ExpiresAt: epoch.Add(ttl),
	}
}

// TestGroupCommitOrder appends from many goroutines and checks that Seqs
// are unique, increase in each caller's own order, and become visible
// without gaps: at any moment a reader sees Seqs 1..n of a fan-out-only
// workload, never n+1 without n.
func TestGroupCommitOrder(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	defer s.Close()
	d := setup(t, s, "d1")[0]
	const writers, each = 32, 40
	var wg sync.WaitGroup
	seqs := make([][]uint64, writers)
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				res, err := s.Append(bg, []store.Accept{{Msg: newMsg(fmt.Sprintf("m%d-%d", g, i), push.Audience{All: true}, time.Hour)}})
				if err != nil {
					errs <- err
					return
				}
				seqs[g] = append(seqs[g], res[0].Seq)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	checkPrefix := func() {
		msgs, err := s.Pending(bg, &d, epoch.Add(time.Second), writers*each, 0)
		if err != nil {
			t.Fatalf("Pending: %v", err)
		}
		for i, m := range msgs {
			if m.Seq != d.FirstSeq+uint64(i)+1 {
				t.Fatalf("Pending saw Seq %d at position %d: a lower Seq is not visible yet", m.Seq, i)
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			checkPrefix()
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	checkPrefix()
	all := map[uint64]bool{}
	for g, l := range seqs {
		if !slices.IsSorted(l) {
			t.Errorf("writer %d got Seqs out of its own order: %v", g, l)
		}
		for _, q := range l {
			if all[q] {
				t.Errorf("Seq %d assigned twice", q)
			}
			all[q] = true
		}
	}
	if len(all) != writers*each {
		t.Errorf("%d distinct Seqs, want %d", len(all), writers*each)
	}
}

// TestSeqSurvivesReopen checks the high-water mark is persisted even when
// the messages that raised it are gone: a reused Seq would hide a later
// fan-out message from devices registered in between.
func TestSeqSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	setup(t, s)
	res, err := s.Append(bg, []store.Accept{{Msg: newMsg("m1", push.Audience{All: true}, time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(bg, epoch.Add(time.Hour), 0); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 purged", n, err)
	}
	s.Close()
	s = mustOpen(t, dir)
	defer s.Close()
	d, err := s.CreateDevice(bg, push.Device{ID: "d1", App: "a", Platform: push.Android})
	if err != nil {
		t.Fatal(err)
	}
	if d.FirstSeq != res[0].Seq {
		t.Errorf("FirstSeq after reopen = %d, want %d", d.FirstSeq, res[0].Seq)
	}
	res2, err := s.Append(bg, []store.Accept{{Msg: newMsg("m2", push.Audience{All: true}, time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	if res2[0].Seq <= res[0].Seq {
		t.Errorf("Seq after reopen = %d, want above %d", res2[0].Seq, res[0].Seq)
	}
}

// TestSweepInSteps sweeps more messages than one step handles, and checks
// that retiring, purging and the rows that point at purged messages
// (idempotency keys, collapse indexes, acks) all go.
func TestSweepInSteps(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	defer s.Close()
	devs := setup(t, s, "d1", "d2")
	const n = 3*sweepChunk + 7
	var batch []store.Accept
	for i := range n {
		m := newMsg(fmt.Sprintf("m%d", i), push.Audience{RegistrationIDs: []string{"d1"}}, time.Minute+time.Duration(i)*time.Millisecond)
		m.IdempotencyKey = fmt.Sprintf("k%d", i)
		batch = append(batch, store.Accept{Msg: m, Targets: []string{"d1"}})
	}
	bc := newMsg("bcast", push.Audience{All: true}, time.Minute)
	bc.CollapseID = "c"
	batch = append(batch, store.Accept{Msg: bc})
	long := newMsg("long", push.Audience{All: true}, time.Hour)
	batch = append(batch, store.Accept{Msg: long})
	if _, err := s.Append(bg, batch); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Ack(bg, &devs[1], []string{"bcast"}); err != nil || got != 1 {
		t.Fatalf("Ack = %d, %v", got, err)
	}

	// Expired but within retention: retired, not purged.
	if got, err := s.Sweep(bg, epoch.Add(2*time.Minute), time.Hour); err != nil || got != 0 {
		t.Fatalf("Sweep within retention = %d, %v; want 0", got, err)
	}
	if c := countPrefix(t, s, kInboxPrefix("d1")); c != 0 {
		t.Errorf("%d inbox entries of expired messages left after Sweep", c)
	}
	if c := countPrefix(t, s, kAckPrefix(n+1)); c != 0 {
		t.Errorf("%d acks of an expired message left after Sweep", c)
	}
	if _, c, err := s.Message(bg, "a", "bcast"); err != nil || c.Delivered != 1 {
		t.Errorf("report within retention = %+v, %v", c, err)
	}
	// A second sweep starts at the cursor and finds nothing new.
	if got, err := s.Sweep(bg, epoch.Add(2*time.Minute), time.Hour); err != nil || got != 0 {
		t.Fatalf("second Sweep = %d, %v", got, err)
	}

	got, err := s.Sweep(bg, epoch.Add(30*time.Minute), 10*time.Minute)
	if err != nil || got != n+1 {
		t.Fatalf("Sweep = %d, %v; want %d purged", got, err, n+1)
	}
	for _, p := range [][]byte{kIdem("a", ""), kCollapsePrefix("d1"), key(tTargets)} {
		if c := countPrefix(t, s, p); c != 0 {
			t.Errorf("%d rows left under %q after purge", c, p)
		}
	}
	if c := countPrefix(t, s, key(tMsg)); c != 1 {
		t.Errorf("%d messages left, want 1 (long)", c)
	}
	// A purged idempotency key may be used again.
	again := newMsg("again", push.Audience{All: true}, time.Hour)
	again.IdempotencyKey = "k0"
	res, err := s.Append(bg, []store.Accept{{Msg: again}})
	if err != nil || res[0].Duplicate {
		t.Errorf("Append with a purged key = %+v, %v; want a new message", res, err)
	}
	wantIDs(t, s, devs[0], epoch.Add(30*time.Minute), "long", "again")
}

func countPrefix(t *testing.T, s *Store, p []byte) int {
	t.Helper()
	n := 0
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if err := scan(snap, p, func(_, _ []byte) (bool, error) { n++; return true, nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func wantIDs(t *testing.T, s *Store, d push.Device, now time.Time, want ...string) {
	t.Helper()
	msgs, err := s.Pending(bg, &d, now, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, m := range msgs {
		got = append(got, m.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Pending(%s) = %v, want %v", d.ID, got, want)
	}
}

// TestDeleteDeviceDropsAcks checks that a device's fan-out acks go with it
// (they are keyed by message, so they are found through the app's fan-out
// index).
func TestDeleteDeviceDropsAcks(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	defer s.Close()
	d := setup(t, s, "d1")[0]
	if _, err := s.Append(bg, []store.Accept{{Msg: newMsg("b", push.Audience{All: true}, time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Ack(bg, &d, []string{"b"}); err != nil || n != 1 {
		t.Fatalf("Ack = %d, %v", n, err)
	}
	if err := s.DeleteDevice(bg, "d1"); err != nil {
		t.Fatal(err)
	}
	if c := countPrefix(t, s, key(tAck)); c != 0 {
		t.Errorf("%d acks left after DeleteDevice", c)
	}
}

// TestCorruptRecord checks that a damaged record is an error, not a panic.
func TestCorruptRecord(t *testing.T) {
	m := newMsg("m", push.Audience{Tags: []string{"x"}}, time.Hour)
	b := encodeMessage(m)
	for i := range b {
		if _, err := decodeMessage(b[:i]); err == nil {
			t.Fatalf("decoding %d of %d bytes succeeded", i, len(b))
		}
	}
	if _, err := decodeMessage(append([]byte{9}, b[1:]...)); !errors.Is(err, errCorrupt) {
		t.Errorf("unknown version: %v", err)
	}
}

// TestV1RecordsRead checks that device and message records written before
// the relay fields existed still read, with those fields empty.
func TestV1RecordsRead(t *testing.T) {
	d := push.Device{ID: "d", App: "a", Platform: push.IOS, Channel: push.Channel{Kind: push.ChannelAPNs, Token: "ab"}}
	b := encodeDevice(&d)
	v1 := append([]byte{recordV1}, b[1:len(b)-3]...) // without Since, Inactive, InactiveAt
	got, err := decodeDevice(v1)
	if err != nil || got.Channel.Token != "ab" || got.Channel.Inactive != "" || !got.Channel.Since.IsZero() {
		t.Errorf("v1 device = %+v, %v", got, err)
	}
	m := newMsg("m", push.Audience{All: true}, time.Hour)
	b = encodeMessage(m)
	v1 = append([]byte{recordV1}, b[1:len(b)-1]...) // without the channel policy
	gm, err := decodeMessage(v1)
	if err != nil || gm.ID != "m" || gm.Channel != "" {
		t.Errorf("v1 message = %+v, %v", gm, err)
	}
}

// TestAddressIndexBuiltForOldStores: a store written before the vendor
// address index gets it at open; of two devices holding one token, the
// one updated last keeps it.
func TestAddressIndexBuiltForOldStores(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	setup(t, s)
	tok := strings.Repeat("ab", 32)
	if _, err := s.CreateDevice(bg, push.Device{ID: "old", App: "a", Platform: push.IOS, CreatedAt: epoch, UpdatedAt: epoch, Channel: push.Channel{Kind: push.ChannelAPNs, Token: tok}}); err != nil {
		t.Fatal(err)
	}
	// What an older version wrote: a second device with the same token and
	// no index rows, as if the index did not exist.
	d := push.Device{ID: "new", App: "a", Platform: push.IOS, CreatedAt: epoch, UpdatedAt: epoch.Add(time.Minute), Channel: push.Channel{Kind: push.ChannelAPNs, Token: tok}}
	if err := s.db.Set(kDevice(d.ID), encodeDevice(&d), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{key(tAddrDone), kAddress("a", "apns", tok)} {
		if err := s.db.Delete(k, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = mustOpen(t, dir)
	defer s.Close()
	if got, _ := s.Device(bg, "old"); got.Channel.Kind != push.ChannelHerald {
		t.Errorf("the device updated first kept the token: %+v", got.Channel)
	}
	if got, _ := s.Device(bg, "new"); got.Channel.Token != tok {
		t.Errorf("the device updated last lost the token: %+v", got.Channel)
	}
	// The index works from now on: a third registration takes the token.
	if _, err := s.CreateDevice(bg, push.Device{ID: "third", App: "a", Platform: push.IOS, Channel: push.Channel{Kind: push.ChannelAPNs, Token: tok}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Device(bg, "new"); got.Channel.Kind != push.ChannelHerald {
		t.Errorf("after a third registration, new still holds the token: %+v", got.Channel)
	}
}
