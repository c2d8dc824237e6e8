package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// commitTogether runs batches as the Appends of one group, as a writer
// would take them from the queue in this order, and returns each call.
func commitTogether(t *testing.T, s *Store, batches ...[]store.Accept) []*appendCall {
	t.Helper()
	var group []*appendCall
	for _, b := range batches {
		group = append(group, &appendCall{req: b})
	}
	s.commitGroup(ctx, group)
	return group
}

func direct1(app, id, dev string) store.Accept {
	return store.Accept{Msg: newMsg(app, id, push.Audience{RegistrationIDs: []string{dev}}), Targets: []string{dev}}
}

// TestGroupAsInSequence checks that the Appends of one group mean what they
// would one after another: Seqs in queue order, an idempotency key of an
// earlier caller makes a later one a duplicate, a collapse replaces an
// earlier caller's entry.
func TestGroupAsInSequence(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)

	a, b, c := direct1("app", "a", "d1"), direct1("app", "b", "d1"), direct1("app", "c", "d1")
	a.Msg.IdempotencyKey, b.Msg.IdempotencyKey = "k", "k"
	x, y := direct1("app", "x", "d1"), direct1("app", "y", "d1")
	x.Msg.CollapseID, y.Msg.CollapseID = "score", "score"
	calls := commitTogether(t, s, []store.Accept{a, x}, []store.Accept{b}, []store.Accept{c, y})
	for i, cl := range calls {
		if cl.err != nil {
			t.Fatalf("call %d: %v", i, cl.err)
		}
	}
	ra, rx, rb, rc, ry := calls[0].res[0], calls[0].res[1], calls[1].res[0], calls[2].res[0], calls[2].res[1]
	if rb.ID != "a" || !rb.Duplicate || rb.Seq != ra.Seq || ra.Duplicate {
		t.Errorf("a = %+v, b with a's key = %+v; want b a duplicate of a", ra, rb)
	}
	if !(ra.Seq < rx.Seq && rx.Seq < rc.Seq && rc.Seq < ry.Seq) {
		t.Errorf("Seqs a %d, x %d, c %d, y %d: not in queue order", ra.Seq, rx.Seq, rc.Seq, ry.Seq)
	}
	if got := pendingIDs(t, s, d); strings.Join(got, " ") != "a c y" {
		t.Errorf("Pending = %v, want [a c y] (b a duplicate, x replaced by y)", got)
	}
	if _, cnt, err := s.Message(ctx, "app", "x"); err != nil || cnt.Replaced != 1 {
		t.Errorf("x's report: %+v, %v; want 1 replaced", cnt, err)
	}
}

// TestGroupFailsAlone puts a message PostgreSQL refuses (a NUL byte in a
// text column) in a group between two good Appends: only its caller fails.
func TestGroupFailsAlone(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	d := newDevice(t, s, "app", "d1", push.Android)

	bad := direct1("app", "bad", "d1")
	bad.Msg.Notification = &push.Notification{Title: "nul \x00 byte"}
	calls := commitTogether(t, s, []store.Accept{direct1("app", "m1", "d1")}, []store.Accept{bad}, []store.Accept{direct1("app", "m2", "d1")})
	if calls[0].err != nil || calls[2].err != nil {
		t.Fatalf("the good Appends failed: %v, %v", calls[0].err, calls[2].err)
	}
	if calls[1].err == nil {
		t.Fatalf("the Append with a NUL byte succeeded: %+v", calls[1].res)
	}
	if got := pendingIDs(t, s, d); strings.Join(got, " ") != "m1 m2" {
		t.Errorf("Pending = %v, want [m1 m2]", got)
	}
}

// TestGroupedDeviceReads looks up devices as one grouped read: a device
// asked for twice comes to each caller as a copy of its own, a missing one
// is ErrNotFound for its caller only.
func TestGroupedDeviceReads(t *testing.T) {
	s, _ := openTest(t)
	newApp(t, s, "app")
	newDevice(t, s, "app", "d1", push.Android, "news", "sport")
	newDevice(t, s, "app", "d2", push.IOS)
	var group []*call[string, push.Device]
	for _, id := range []string{"d1", "nope", "d2", "d1"} {
		group = append(group, &call[string, push.Device]{req: id})
	}
	s.readDevices(ctx, group)
	for i, want := range []string{"d1", "", "d2", "d1"} {
		cl := group[i]
		if want == "" {
			if !errors.Is(cl.err, store.ErrNotFound) {
				t.Errorf("read %d (%s) = %+v, %v; want ErrNotFound", i, cl.req, cl.res, cl.err)
			}
			continue
		}
		if cl.err != nil || cl.res.ID != want || cl.res.App != "app" {
			t.Errorf("read %d = %+v, %v; want device %s", i, cl.res, cl.err, want)
		}
	}
	group[0].res.Tags[0] = "changed"
	if group[3].res.Tags[0] != "news" {
		t.Errorf("two callers share a device's tags")
	}
}

// TestCombinerAbandoned checks that a call whose caller gave up before a
// goroutine took it never runs, and that one taken runs for the others.
func TestCombinerAbandoned(t *testing.T) {
	var ran []string
	c := &combiner[string, string]{name: "test", weight: func(string) int { return 1 }, max: 10,
		run: func(_ context.Context, group []*call[string, string]) {
			for _, cl := range group {
				ran = append(ran, cl.req)
				cl.res = "ok " + cl.req
			}
		}}
	c.queue = make(chan *call[string, string], 4) // start(0): no goroutine takes calls yet

	gone, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := c.do(gone, "left")
		left <- err
	}()
	for len(c.queue) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("do after its caller gave up = %v, want context.Canceled", err)
	}
	stayed := make(chan string, 1)
	go func() {
		res, _ := c.do(context.Background(), "stayed")
		stayed <- res
	}()
	for len(c.queue) < 2 {
		time.Sleep(time.Millisecond)
	}
	c.wg.Go(c.loop)
	if res := <-stayed; res != "ok stayed" {
		t.Errorf("do = %q, want ok stayed", res)
	}
	c.stop()
	if strings.Join(ran, " ") != "stayed" {
		t.Errorf("ran %v, want only the call whose caller stayed", ran)
	}
	if _, err := c.do(context.Background(), "late"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("do after stop = %v, want ErrClosed", err)
	}
}

// TestAppCache: an app another node creates after this one looked for it
// is found (a miss is not kept), and a caller changing the app it got does
// not change what the next caller gets.
func TestAppCache(t *testing.T) {
	a, schema := openTest(t)
	b, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.App(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("App before CreateApp = %v, want ErrNotFound", err)
	}
	if err := b.CreateApp(ctx, push.App{Key: "k", Name: "n", SecretHash: []byte{1, 2, 3}, CreatedAt: epoch}); err != nil {
		t.Fatal(err)
	}
	got, err := a.App(ctx, "k")
	if err != nil || got.Name != "n" {
		t.Fatalf("App after another node created it = %+v, %v", got, err)
	}
	got.SecretHash[0] = 9
	if again, _ := a.App(ctx, "k"); again.SecretHash[0] != 1 {
		t.Errorf("a caller's change reached the kept app: %v", again.SecretHash)
	}
	a.Close()
	if _, err := a.App(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("App after Close = %v, want ErrClosed", err)
	}
}

// TestCombinerCancelsWhenAllLeave: a group's work is cancelled when every
// one of its callers has given up, not before.
func TestCombinerCancelsWhenAllLeave(t *testing.T) {
	started := make(chan int, 1)
	c := &combiner[string, string]{name: "test", weight: func(string) int { return 1 }, max: 10,
		run: func(ctx context.Context, group []*call[string, string]) {
			started <- len(group)
			<-ctx.Done() // a query stuck on a dead connection
			for _, cl := range group {
				cl.err = ctx.Err()
			}
		}}
	c.queue = make(chan *call[string, string], 4)
	ctxs := make([]context.CancelFunc, 2)
	errs := make(chan error, 2)
	for i := range ctxs {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		go func() {
			_, err := c.do(ctx, "q")
			errs <- err
		}()
	}
	for len(c.queue) < 2 {
		time.Sleep(time.Millisecond)
	}
	c.wg.Go(c.loop)
	if n := <-started; n != 2 {
		t.Fatalf("group of %d, want 2", n)
	}
	ctxs[0]()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller who left got %v", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("the group was cancelled while a caller still waited: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	ctxs[1]()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the second caller got %v", err)
	}
	c.stop() // returns: the run ended when both had left
}
