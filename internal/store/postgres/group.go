package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldpush/herald/internal/store"
)

// Group commit.
//
// A transaction costs PostgreSQL far more than the rows in it: an Append of
// one message spends about 450 µs of the server's CPU (the statement's fixed
// cost and the commit), a message in an Append of 100 about 30 µs. So
// concurrent Appends are not each a transaction: they queue, and a writer
// goroutine takes every Append waiting, runs them as one batch in one
// transaction (one statement, one synchronous commit), and answers each
// caller once that commit has returned. No caller is answered before the
// transaction that holds its messages committed, so durability is what it
// was. An idle store adds no wait: a writer that finds one Append runs it at
// once, and groups form only while the writers are busy, as large as the
// load makes them.
//
// A group means what its Appends would mean run one after another in queue
// order: Seqs increase in that order, an idempotency key used by two
// callers of one group is stored by the first and the second gets its
// duplicate, and a collapse replaces the entries of earlier callers'
// messages as well as older ones.
//
// One caller's bad message must not fail the callers it shares a group with.
// When PostgreSQL refuses the group's transaction (it rolled back whole),
// each Append of the group runs again alone, in queue order, and gets its
// own outcome; errors of the connection (the outcome is unknown, as it
// would be for each caller alone) are everyone's.
//
// Device reads are grouped the same way (one query for every device
// looked up meanwhile), because a push looks up each of its targets and a
// round trip costs more than the row. A read is sent only after it was
// queued, so it sees every change committed before the caller asked.

// maxGroupRows bounds the rows (messages, inbox entries and relay jobs) of
// the Appends one group takes beyond the first, so that a group's
// statement stays a size PostgreSQL plans and runs in milliseconds. An
// Append larger than that runs alone.
const maxGroupRows = 4096

// maxGroupReads bounds the devices one grouped read looks up.
const maxGroupReads = 1024

// combinerQueue is how many calls may wait for a combiner's goroutines;
// more wait to queue.
const combinerQueue = 4096

// call is one caller's request waiting in a combiner.
type call[Req, Res any] struct {
	req Req
	res Res   // set by the combiner before done is closed
	err error // likewise
	// state says whether the combiner took the call or its caller gave up
	// first (the states of the embedded store's writer). An abandoned
	// call is never run.
	state atomic.Int32
	done  chan struct{}
	grp   *shared // of the group that took the call; set before it is taken
}

// shared is what the calls of one group share: the group's work is
// cancelled once every caller has given up waiting, as a caller's own
// query was before calls were grouped, so that a query stuck on a dead
// connection does not hold a combiner goroutine longer than anyone waits.
type shared struct {
	waiting atomic.Int32 // callers still waiting for the outcome
	cancel  context.CancelFunc
}

// leave is called by a caller who gives up on a call the group took.
func (g *shared) leave() {
	if g.waiting.Add(-1) == 0 {
		g.cancel()
	}
}

const (
	queued int32 = iota
	taken
	abandoned
)

// combiner runs calls in groups: each of its goroutines takes every call
// waiting, up to max by weight, and hands them to run together.
type combiner[Req, Res any] struct {
	name   string // for errors
	weight func(Req) int
	max    int
	// run sets the res or err of every call in group. Its context is not
	// a caller's: a group is everyone's, and a caller who leaves must not
	// fail the others; it ends when they all have left (shared).
	run func(ctx context.Context, group []*call[Req, Res])

	// mu is held shared while a call is sent on queue and exclusively by
	// stop to close it.
	mu      sync.RWMutex
	stopped bool
	queue   chan *call[Req, Res]
	wg      sync.WaitGroup
}

// start starts n goroutines, which return when stop has been called and
// the queue is drained.
func (c *combiner[Req, Res]) start(n int) {
	c.queue = make(chan *call[Req, Res], combinerQueue)
	for range n {
		c.wg.Go(c.loop)
	}
}

// stop refuses new calls (store.ErrClosed) and returns once the calls
// already queued have run.
func (c *combiner[Req, Res]) stop() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.queue)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// do queues req and waits for its group. The caller's ctx ends the wait,
// not the group: a call the combiner has taken runs on for the group's
// other callers, and its caller is told only that it gave up (for an
// Append: the messages may or may not be stored, as when a commit's answer
// is lost). A call not yet taken is never run.
func (c *combiner[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("postgres: %s: %w", c.name, context.Cause(ctx))
	}
	cl := &call[Req, Res]{req: req, done: make(chan struct{})}
	if err := c.enqueue(ctx, cl); err != nil {
		return zero, err
	}
	select {
	case <-cl.done:
		return cl.res, cl.err
	case <-ctx.Done():
		if cl.state.CompareAndSwap(queued, abandoned) {
			return zero, fmt.Errorf("postgres: %s: not sent: %w", c.name, context.Cause(ctx))
		}
		cl.grp.leave()
		return zero, fmt.Errorf("postgres: %s: gave up waiting for the answer: %w", c.name, context.Cause(ctx))
	}
}

// enqueue hands cl to the goroutines unless the combiner is stopped.
// Sending under the shared lock keeps stop from closing the queue under us.
func (c *combiner[Req, Res]) enqueue(ctx context.Context, cl *call[Req, Res]) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		return store.ErrClosed
	}
	select {
	case c.queue <- cl:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres: %s: not sent: %w", c.name, context.Cause(ctx))
	}
}

func (c *combiner[Req, Res]) loop() {
	var next *call[Req, Res] // taken from the queue but too heavy for the last group
	calls := make([]*call[Req, Res], 0, 64)
	for {
		cl := next
		next = nil
		if cl == nil {
			var ok bool
			if cl, ok = <-c.queue; !ok {
				return
			}
		}
		calls = append(calls[:0], cl)
		w := c.weight(cl.req)
	collect:
		for w < c.max {
			select {
			case cl, ok := <-c.queue:
				if !ok {
					break collect
				}
				if cw := c.weight(cl.req); w+cw <= c.max {
					calls = append(calls, cl)
					w += cw
				} else {
					next = cl
					break collect
				}
			default:
				break collect
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		g := &shared{cancel: cancel}
		// Counted from the whole group down, so that a caller leaving
		// while the others are still being taken cannot reach zero early.
		g.waiting.Store(int32(len(calls)))
		live := calls[:0]
		for _, cl := range calls {
			cl.grp = g
			if cl.state.CompareAndSwap(queued, taken) {
				live = append(live, cl)
			}
		}
		if n := len(calls) - len(live); n > 0 {
			g.waiting.Add(int32(-n))
		}
		if len(live) > 0 {
			c.run(ctx, live)
			for _, cl := range live {
				close(cl.done)
			}
		}
		cancel()
		clear(calls) // the callers' requests are theirs again
	}
}

// appendCall is an Append in the writers' combiner: the caller's batch,
// read and never written by the writer, and its outcome.
type appendCall = call[[]store.Accept, []store.Accepted]

func appendRows(batch []store.Accept) int {
	rows := len(batch)
	for _, a := range batch {
		rows += len(a.Targets) + len(a.Relays)
	}
	return rows
}

// commitGroup runs group as one transaction; see the note at the top of
// this file.
func (s *Store) commitGroup(ctx context.Context, group []*appendCall) {
	err := s.appendGroup(ctx, group)
	var pgErr *pgconn.PgError
	if err != nil && len(group) > 1 && errors.As(err, &pgErr) {
		for _, cl := range group {
			cl.err = s.appendGroup(ctx, []*appendCall{cl})
		}
		return
	}
	for _, cl := range group {
		if err != nil {
			cl.res, cl.err = nil, err
		}
	}
}

// appendGroup stores the batches of group as one batch and sets each
// call's res.
func (s *Store) appendGroup(ctx context.Context, group []*appendCall) error {
	batch := group[0].req
	if len(group) > 1 {
		n := 0
		for _, cl := range group {
			n += len(cl.req)
		}
		batch = make([]store.Accept, 0, n)
		for _, cl := range group {
			batch = append(batch, cl.req...)
		}
	}
	out, err := s.appendBatch(ctx, batch)
	if err != nil {
		return err
	}
	for _, cl := range group {
		n := len(cl.req)
		cl.res, out = out[:n:n], out[n:]
	}
	return nil
}
