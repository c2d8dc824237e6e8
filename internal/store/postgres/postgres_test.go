package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/storetest"
)

// testURL is the database the tests use; HERALD_TEST_POSTGRES overrides it.
func testURL() string {
	if u := os.Getenv("HERALD_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// reach probes the test database once per test binary, so that an
// unreachable host costs one connect timeout rather than one per test.
var reach = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
})

// testDB connects to the test database, or skips the test when it cannot be
// reached; under CI (CI=true) that is a failure instead, so a broken CI
// database cannot pass unnoticed.
func testDB(tb testing.TB) *pgx.Conn {
	tb.Helper()
	err := reach()
	var conn *pgx.Conn
	if err == nil {
		conn, err = pgx.Connect(context.Background(), testURL())
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at %s (set HERALD_TEST_POSTGRES): %v", redact(testURL()), err)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// freshSchema returns the name of a schema no other test uses, dropped when
// the test ends.
func freshSchema(tb testing.TB) string {
	tb.Helper()
	conn := testDB(tb)
	name := strings.ToLower("herald_test_" + push.NewID("", 9))
	name = strings.NewReplacer("-", "_").Replace(name)
	tb.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// openTest opens a store in a fresh schema, closed when the test ends.
func openTest(tb testing.TB, opts ...Option) (*Store, string) {
	tb.Helper()
	schema := freshSchema(tb)
	s, err := Open(context.Background(), testURL(), append(opts, WithSchema(schema))...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, schema
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		s, schema := openTest(t)
		var cur store.Store = s
		reopen := func() store.Store {
			cur.Close()
			s, err := Open(context.Background(), testURL(), WithSchema(schema))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			cur = s
			return s
		}
		return s, reopen
	})
}

var ctx = context.Background()

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newApp(t testing.TB, s *Store, key string) {
	t.Helper()
	if err := s.CreateApp(ctx, push.App{Key: key, Name: "name-" + key, CreatedAt: epoch}); err != nil {
		t.Fatal(err)
	}
}

func newDevice(t testing.TB, s *Store, app, id string, p push.Platform, tags ...string) push.Device {
	t.Helper()
	d, err := s.CreateDevice(ctx, push.Device{ID: id, App: app, Platform: p, Tags: tags,
		Channel: push.Channel{Kind: push.ChannelHerald}, CreatedAt: epoch, UpdatedAt: epoch})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newMsg(app, id string, aud push.Audience) *push.Message {
	return &push.Message{ID: id, App: app, Audience: aud, Data: []byte(`{}`), TTL: time.Hour,
		Priority: push.PriorityNormal, AcceptedAt: epoch, SendAt: epoch, ExpiresAt: epoch.Add(time.Hour)}
}

func pendingIDs(t *testing.T, s *Store, d push.Device) []string {
	t.Helper()
	msgs, err := s.Pending(ctx, &d, epoch.Add(time.Second), 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	return ids
}

// TestMigrateConcurrently opens one schema from several stores at once, as
// several nodes starting together would: one migrates, the others wait.
func TestMigrateConcurrently(t *testing.T) {
	schema := freshSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			s, err := Open(ctx, testURL(), WithSchema(schema))
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	conn := testDB(t)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if want, _ := loadMigrations(); n != len(want) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(want))
	}
}

// TestIdempotencyAcrossNodes appends the same idempotency key from two
// stores (two pools, as two nodes would have) and many goroutines at once:
// exactly one message is stored and every caller learns its ID.
func TestIdempotencyAcrossNodes(t *testing.T) {
	a, schema := openTest(t)
	b, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	newApp(t, a, "app")
	d := newDevice(t, a, "app", "d1", push.Android)

	const callers = 16
	results := make([]store.Accepted, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			m := newMsg("app", fmt.Sprintf("m%d", i), push.Audience{RegistrationIDs: []string{"d1"}})
			m.IdempotencyKey = "same"
			<-start
			res, err := s.Append(ctx, []store.Accept{{Msg: m, Targets: []string{"d1"}}})
			if err == nil {
				results[i] = res[0]
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("Append %d: %v", i, errs[i])
		}
		if !r.Duplicate {
			winners++
		}
		if r.ID != results[0].ID || r.Seq != results[0].Seq {
			t.Errorf("caller %d got %+v, caller 0 got %+v: not the same message", i, r, results[0])
		}
	}
	if winners != 1 {
		t.Errorf("%d callers stored a message, want 1", winners)
	}
	if got := pendingIDs(t, a, d); len(got) != 1 || got[0] != results[0].ID {
		t.Errorf("Pending = %v, want just %s", got, results[0].ID)
	}
}

// TestLateCommitNotSkipped makes the ordering hazard happen on purpose: a
// transaction draws a Seq and commits only after a message with a higher Seq
// has been read and acknowledged. The device must still get it.
func TestLateCommitNotSkipped(t *testing.T) {
	s, schema := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)

	// A second node's Append, held open between drawing its Seq and committing.
	slow, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	tx, err := slow.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	late := newMsg("app", "late", push.Audience{All: true})
	var (
		ord, lateSeq int64
		id           string
		inserted     bool
	)
	if err := tx.QueryRow(ctx, insertBatch, batchArgs([]store.Accept{{Msg: late}}, []int{0})...).Scan(&ord, &lateSeq, &id, &inserted); err != nil {
		t.Fatal(err)
	}

	res, err := s.Append(ctx, []store.Accept{{Msg: newMsg("app", "early", push.Audience{All: true})}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Seq <= uint64(lateSeq) {
		t.Fatalf("seq %d not above the held one %d: the test proves nothing", res[0].Seq, lateSeq)
	}
	if got := pendingIDs(t, s, d); len(got) != 1 || got[0] != "early" {
		t.Fatalf("Pending before the late commit = %v, want [early]", got)
	}
	if n, err := s.Ack(ctx, &d, []string{"early"}); err != nil || n != 1 {
		t.Fatalf("Ack = %d, %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pendingIDs(t, s, d); len(got) != 1 || got[0] != "late" {
		t.Errorf("Pending after the late commit = %v, want [late]", got)
	}
}

// TestAudienceMatchesGo checks the SQL selector and platform match against
// push.Message.For over every combination of a small tag universe.
func TestAudienceMatchesGo(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	universe := []string{"a", "b", "c"}
	subsets := [][]string{nil, {}}
	for mask := 1; mask < 1<<len(universe); mask++ {
		var sub []string
		for i, tag := range universe {
			if mask&(1<<i) != 0 {
				sub = append(sub, tag)
			}
		}
		subsets = append(subsets, sub)
	}
	platforms := [][]push.Platform{nil, {push.IOS}, {push.Android, push.Web}}

	var batch []store.Accept
	var msgs []*push.Message
	n := 0
	for _, tags := range subsets {
		for _, and := range subsets {
			for _, not := range subsets {
				if len(tags)+len(and)+len(not) == 0 {
					continue // not a selector: no fan-out
				}
				for _, ps := range platforms {
					m := newMsg("app", fmt.Sprintf("m%d", n), push.Audience{Tags: tags, TagAnd: and, TagNot: not})
					m.Platforms = ps
					n++
					batch = append(batch, store.Accept{Msg: m})
					msgs = append(msgs, m)
				}
			}
		}
	}
	all := newMsg("app", "all", push.Audience{All: true, TagNot: []string{"a"}}) // All wins over the rest
	batch = append(batch, store.Accept{Msg: all})
	msgs = append(msgs, all)

	var devices []push.Device
	for i, tags := range subsets {
		for _, p := range []push.Platform{push.IOS, push.Android, push.Other} {
			devices = append(devices, newDevice(t, s, "app", fmt.Sprintf("d%d-%s", i, p), p, tags...))
		}
	}
	res, err := s.Append(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		m.Seq = res[i].Seq
	}
	for _, d := range devices {
		var want []string
		for _, m := range msgs {
			if m.For(&d) {
				want = append(want, m.ID)
			}
		}
		got := pendingIDs(t, s, d)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("device %s (tags %v): Pending = %v\nwant %v", d.ID, d.Tags, got, want)
		}
	}
}

// TestCollapseWithinBatch checks that a collapse sees the earlier messages
// of its own batch.
func TestCollapseWithinBatch(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)
	var batch []store.Accept
	for i := range 3 {
		m := newMsg("app", fmt.Sprintf("direct%d", i), push.Audience{RegistrationIDs: []string{"d1"}})
		m.CollapseID = "c"
		batch = append(batch, store.Accept{Msg: m, Targets: []string{"d1"}})
		f := newMsg("app", fmt.Sprintf("fanout%d", i), push.Audience{All: true})
		f.CollapseID = "c"
		batch = append(batch, store.Accept{Msg: f})
	}
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := pendingIDs(t, s, d); strings.Join(got, ",") != "direct2,fanout2" {
		t.Errorf("Pending = %v, want [direct2 fanout2]", got)
	}
	for i := range 2 {
		_, c, err := s.Message(ctx, "app", fmt.Sprintf("direct%d", i))
		if err != nil || c.Replaced != 1 {
			t.Errorf("direct%d counters = %+v, %v; want replaced 1", i, c, err)
		}
	}
}

// TestReportSurvivesDeviceDeletion: deleting a device drops its acks but
// not the deliveries the reports counted.
func TestReportSurvivesDeviceDeletion(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)
	if _, err := s.Append(ctx, []store.Accept{
		{Msg: newMsg("app", "b", push.Audience{All: true})},
		{Msg: newMsg("app", "e", push.Audience{RegistrationIDs: []string{"d1"}}), Targets: []string{"d1"}},
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Ack(ctx, &d, []string{"b", "e"}); err != nil || n != 2 {
		t.Fatalf("Ack = %d, %v", n, err)
	}
	if err := s.DeleteDevice(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "e"} {
		if _, c, err := s.Message(ctx, "app", id); err != nil || c.Delivered != 1 {
			t.Errorf("Message(%s) after DeleteDevice = %+v, %v; want delivered 1", id, c, err)
		}
	}
	if n, err := s.Ack(ctx, &d, []string{"b"}); err != nil || n != 0 {
		t.Errorf("Ack by a deleted device = %d, %v; want 0, nil", n, err)
	}
}

// TestSweepConcurrentWithAcks acknowledges a broadcast from many devices
// while sweeps run (with a clock past its expiry, so the first one to get
// the lock folds it): every acknowledgement is counted exactly once.
func TestSweepConcurrentWithAcks(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	const devices = 40
	var ds []push.Device
	for i := range devices {
		ds = append(ds, newDevice(t, s, "app", fmt.Sprintf("d%02d", i), push.Android))
	}
	if _, err := s.Append(ctx, []store.Accept{{Msg: newMsg("app", "b", push.Audience{All: true})}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	acked := make([]int, devices)
	errs := make(chan error, 2*devices)
	for i := range ds {
		wg.Go(func() {
			n, err := s.Ack(ctx, &ds[i], []string{"b"})
			acked[i] = n
			if err != nil {
				errs <- err
			}
		})
		if i%10 == 0 {
			wg.Go(func() {
				if _, err := s.Sweep(ctx, epoch.Add(2*time.Hour), 24*time.Hour); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range acked {
		total += n
	}
	if _, err := s.Sweep(ctx, epoch.Add(2*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	_, c, err := s.Message(ctx, "app", "b")
	if err != nil {
		t.Fatal(err)
	}
	if c.Delivered != total {
		t.Errorf("delivered = %d, but Ack reported %d new acknowledgements", c.Delivered, total)
	}
	// After the sweep, repeats are ignored rather than counted again.
	if n, err := s.Ack(ctx, &ds[0], []string{"b"}); err != nil || n != 0 {
		t.Errorf("Ack after sweep = %d, %v; want 0", n, err)
	}
}

func TestEachDeviceChunks(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	newApp(t, s, "other")
	const n = eachDeviceChunk*2 + 7
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{fmt.Sprintf("d%05d", i), "app", "android", []byte("{\"kind\":\"herald\"}"), epoch, epoch, int64(0)}
	}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"devices"},
		[]string{"id", "app", "platform", "channel", "created_at", "updated_at", "first_seq"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	newDevice(t, s, "other", "x", push.Web)
	seen := map[string]bool{}
	err := s.EachDevice(ctx, "app", func(d *push.Device) bool {
		if seen[d.ID] {
			t.Errorf("device %s seen twice", d.ID)
		}
		seen[d.ID] = true
		// Calling back into the store from fn must work, even with one connection busy elsewhere.
		if len(seen) == eachDeviceChunk {
			if _, err := s.Device(ctx, d.ID); err != nil {
				t.Errorf("Device from inside EachDevice: %v", err)
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Errorf("EachDevice saw %d devices, want %d", len(seen), n)
	}
}

// TestCrossedBatches runs concurrent appends whose collapse IDs and
// idempotency keys come in opposite orders, the recipe for deadlocks: Append
// must not fail, since it locks in one global order and retries any
// deadlock that remains.
func TestCrossedBatches(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	var devs []string
	for i := range 20 {
		devs = append(devs, newDevice(t, s, "app", fmt.Sprintf("d%02d", i), push.Android).ID)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*30)
	for w := range 8 {
		wg.Go(func() {
			for i := range 30 {
				var batch []store.Accept
				for k := range 4 {
					c := fmt.Sprintf("c%d", k)
					if w%2 == 1 {
						c = fmt.Sprintf("c%d", 3-k) // the other writers' order, reversed
					}
					m := newMsg("app", fmt.Sprintf("w%d-%d-%d", w, i, k), push.Audience{RegistrationIDs: devs})
					m.CollapseID = c
					m.IdempotencyKey = fmt.Sprintf("%d-%s", i, c) // shared by all writers
					batch = append(batch, store.Accept{Msg: m, Targets: devs})
				}
				if _, err := s.Append(ctx, batch); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Whatever interleaving happened, each device holds at most the newest
	// few messages per collapse ID, never the whole history.
	d, _ := s.Device(ctx, devs[0])
	if got := pendingIDs(t, s, d); len(got) > 4*8 {
		t.Errorf("device holds %d messages after collapsing 4 IDs", len(got))
	}
}

func TestRetry(t *testing.T) {
	deadlock := &pgconn.PgError{Code: deadlockDetected}
	calls := 0
	err := retry(func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("wrapped: %w", deadlock)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("retry after two deadlocks = %v after %d calls, want nil after 3", err, calls)
	}
	calls = 0
	if err := retry(func() error { calls++; return deadlock }); err == nil || calls != maxAttempts {
		t.Errorf("retry of a lasting deadlock = %v after %d calls, want the error after %d", err, calls, maxAttempts)
	}
	calls = 0
	if err := retry(func() error { calls++; return &pgconn.PgError{Code: uniqueViolation} }); err == nil || calls != 1 {
		t.Errorf("retry of a unique violation = %v after %d calls, want the error after 1", err, calls)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://herald:s3cret@db:5432/herald": "postgres://herald:xxxxx@db:5432/herald",
		"postgres://herald@db/herald":             "postgres://herald@db/herald",
		"host=db user=herald password=s3cret":     "host=db user=herald password=xxxxx",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSweepInChunks sweeps more messages than one Sweep transaction takes.
func TestSweepInChunks(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)
	const n = 2*sweepChunk + 123
	var batch []store.Accept
	for i := range n {
		m := newMsg("app", fmt.Sprintf("m%d", i), push.Audience{RegistrationIDs: []string{"d1"}})
		m.ExpiresAt = epoch.Add(time.Minute)
		batch = append(batch, store.Accept{Msg: m, Targets: []string{"d1"}})
	}
	batch = append(batch, store.Accept{Msg: newMsg("app", "live", push.Audience{All: true})})
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Ack(ctx, &d, []string{"m0", "m1"}); err != nil || got != 2 {
		t.Fatalf("Ack = %d, %v", got, err)
	}
	if purged, err := s.Sweep(ctx, epoch.Add(2*time.Minute), time.Hour); err != nil || purged != 0 {
		t.Fatalf("Sweep within retention = %d, %v; want 0 purged", purged, err)
	}
	var entries int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox`).Scan(&entries); err != nil || entries != 0 {
		t.Errorf("inbox entries after sweep = %d, %v; want 0", entries, err)
	}
	if _, c, err := s.Message(ctx, "app", "m1"); err != nil || c.Delivered != 1 {
		t.Errorf("Message(m1) after sweep = %+v, %v; want delivered 1", c, err)
	}
	if purged, err := s.Sweep(ctx, epoch.Add(2*time.Hour), time.Hour); err != nil || purged != n {
		t.Errorf("Sweep after retention = %d, %v; want %d purged", purged, err, n)
	}
	if _, _, err := s.Message(ctx, "app", "live"); err != nil {
		t.Errorf("Message(live) after sweep: %v", err)
	}
}

// TestMigrateVendorAddresses upgrades a schema whose devices share vendor
// addresses (as before migration 0005): the newest registration of each
// address keeps it, the others fall back to Herald's own channel.
func TestMigrateVendorAddresses(t *testing.T) {
	schema := freshSchema(t)
	conn := testDB(t)
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()+`;
		SET search_path = `+pgx.Identifier{schema}.Sanitize()+`;
		CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.version >= 5 {
			break
		}
		if _, err := conn.Exec(ctx, m.sql); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	tok := strings.Repeat("ab", 32)
	web := &push.WebPushSubscription{Endpoint: "https://push.example/x", P256DH: "p", Auth: "a"}
	devices := []struct {
		id, app string
		ch      push.Channel
		updated time.Time
	}{
		{"old", "a", push.Channel{Kind: push.ChannelAPNs, Token: tok}, epoch},
		{"new", "a", push.Channel{Kind: push.ChannelAPNs, Token: tok}, epoch.Add(time.Hour)},
		{"mid", "a", push.Channel{Kind: push.ChannelAPNs, Token: tok}, epoch.Add(time.Minute)},
		{"fcm", "a", push.Channel{Kind: push.ChannelFCM, Token: tok}, epoch}, // another kind: its own address
		{"b", "b", push.Channel{Kind: push.ChannelAPNs, Token: tok}, epoch},  // another app
		{"w1", "a", push.Channel{Kind: push.ChannelWebPush, WebPush: web}, epoch.Add(time.Hour)},
		{"w2", "a", push.Channel{Kind: push.ChannelWebPush, WebPush: web}, epoch},
		{"h1", "a", push.Channel{Kind: push.ChannelHerald}, epoch},
		{"h2", "a", push.Channel{Kind: push.ChannelHerald}, epoch},
	}
	for _, d := range devices {
		if _, err := conn.Exec(ctx, `INSERT INTO devices (id, app, platform, channel, created_at, updated_at, first_seq)
			VALUES ($1, $2, 'ios', $3, $4, $4, 0)`, d.id, d.app, d.ch, d.updated); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]push.ChannelKind{
		"old": push.ChannelHerald, "new": push.ChannelAPNs, "mid": push.ChannelHerald, "fcm": push.ChannelFCM,
		"b": push.ChannelAPNs, "w1": push.ChannelWebPush, "w2": push.ChannelHerald, "h1": push.ChannelHerald, "h2": push.ChannelHerald,
	}
	for id, kind := range want {
		d, err := s.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Channel.Kind != kind {
			t.Errorf("%s after the migration: channel %q, want %q", id, d.Channel.Kind, kind)
		}
	}
}

// TestAddressRace registers one vendor token from many devices at once,
// through two stores (two nodes): every registration succeeds, and exactly
// one device holds the token afterwards.
func TestAddressRace(t *testing.T) {
	a, schema := openTest(t)
	b, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	newApp(t, a, "app")
	const devices = 16
	tok := strings.Repeat("ab", 32)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	start := make(chan struct{})
	for i := range devices {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			id := fmt.Sprintf("d%02d", i)
			ch := push.Channel{Kind: push.ChannelAPNs, Token: tok}
			var err error
			if i%4 < 2 {
				_, err = s.CreateDevice(ctx, push.Device{ID: id, App: "app", Platform: push.IOS, Channel: ch, CreatedAt: epoch, UpdatedAt: epoch})
			} else {
				// Registered without a token first, then given it by PATCH.
				var d push.Device
				d, err = s.CreateDevice(ctx, push.Device{ID: id, App: "app", Platform: push.IOS,
					Channel: push.Channel{Kind: push.ChannelHerald}, CreatedAt: epoch, UpdatedAt: epoch})
				if err == nil {
					d.Channel = ch
					err = s.UpdateDevice(ctx, d)
				}
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	holders := 0
	err = a.EachDevice(ctx, "app", func(d *push.Device) bool {
		if d.Channel.Kind == push.ChannelAPNs {
			holders++
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if holders != 1 {
		t.Errorf("%d devices hold the token, want 1", holders)
	}
}

// TestRelayDoneConcurrent finishes a broadcast's retried jobs from two
// stores at once: each is counted sent once and leaves the waiting count,
// which ends with no row at all.
func TestRelayDoneConcurrent(t *testing.T) {
	a, schema := openTest(t)
	b, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	newApp(t, a, "app")
	const devices = 40
	var jobs []store.RelayJob
	for i := range devices {
		jobs = append(jobs, store.RelayJob{Device: fmt.Sprintf("d%02d", i), Channel: push.ChannelFCM, Due: epoch})
	}
	if _, err := a.Append(ctx, []store.Accept{{Msg: newMsg("app", "b", push.Audience{All: true}), Relays: jobs}}); err != nil {
		t.Fatal(err)
	}
	due, _, err := a.RelayDue(ctx, epoch, devices)
	if err != nil || len(due) != devices {
		t.Fatalf("RelayDue = %d jobs, %v; want %d", len(due), err, devices)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*devices)
	for i := range due {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			j := due[i]
			j.Attempt = 1
			if err := s.RelayRetry(ctx, j, epoch.Add(time.Second)); err != nil {
				errs <- err
			}
			sent := store.RelayOutcome{Channel: push.ChannelFCM, Result: store.RelaySent}
			if err := s.RelayDone(ctx, store.RelayEnd{Job: j, Outcome: sent}); err != nil {
				errs <- err
			}
			if err := s.RelayDone(ctx, store.RelayEnd{Job: j, Outcome: sent}); err != nil { // again: ignored
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	_, c, err := a.Message(ctx, "app", "b")
	if err != nil {
		t.Fatal(err)
	}
	if rc := c.Relay[push.ChannelFCM]; rc == nil || rc.Sent != devices || rc.Waiting != 0 {
		t.Errorf("relay counts = %+v, want sent %d, waiting 0", rc, devices)
	}
	var rows int
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM relay_outcomes WHERE result = 'waiting'`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("waiting rows = %d, %v; want 0", rows, err)
	}
}
