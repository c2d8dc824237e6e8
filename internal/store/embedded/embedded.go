// Package embedded is Herald's default store: a single-node, durable store
// in a local directory, on the Pebble key-value engine (chosen by
// measurement: docs/decisions/0001-embedded-store.md).
//
// Every change goes through one writer goroutine. It takes all the changes
// that are waiting, applies them in arrival order to one batch, commits the
// batch with one fsync, and only then answers their callers (group commit).
// This gives three properties the contract needs at once:
//
//   - Durability: a call returns only after its change is on disk.
//   - Order: Seqs are assigned by the writer in commit order, and a batch
//     becomes visible atomically, so a reader never sees Seq n+1 without n.
//   - Read-modify-write without locks: idempotency keys, collapse,
//     counters and ack bookkeeping read and write state that only the
//     writer changes.
//
// Reads run concurrently on a consistent snapshot of the engine.
//
// Faults of the disk (full, read-only, the directory removed) make changes
// fail with store.ErrUnavailable and never reach the engine as errors; see
// faultFS and faults. Reads go on meanwhile, and writes resume by
// themselves when the fault passes.
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heraldpush/herald/internal/store"
)

// Interface guards.
var _ store.Store = (*Store)(nil)

// Options tune a Store. The zero value is the measured default.
type Options struct {
	// Logger receives the engine's events (flushes, compactions at debug
	// level; background errors at error level). Nil discards them.
	Logger *slog.Logger
	// CacheSize is the engine's block cache in bytes; 0 means 64 MiB.
	CacheSize int64
	// MemTableSize is the size of one in-memory table in bytes before it is
	// flushed to disk; 0 means 64 MiB. The engine grows a memtable from
	// 256 KiB as it fills, so a quiet store does not hold this much.
	MemTableSize uint64
	// MaxGroup bounds how many waiting calls one commit takes; 0 means
	// 1024. Larger groups mean fewer fsyncs but a longer wait for the
	// first caller of a group.
	MaxGroup int
	// MinFree is the free space, in bytes, that changes may not eat into:
	// below it every change fails with store.ErrUnavailable, so that the
	// engine keeps room to finish its flushes and a restart room to
	// replay its log. 0 keeps no reserve (a fault is still caught when a
	// write fails); herald serve's default is in config.
	MinFree int64
	// Committed, when set, is told of each durable commit: how many
	// calls it carried and how long the write and its fsync took
	// (herald_store_commit_duration_seconds and _batch_size).
	Committed func(calls int, took time.Duration)
}

// Store is the embedded store. It is safe for concurrent use.
type Store struct {
	db       *pebble.DB // immutable; closed by Close
	maxGroup int        // immutable
	// committed is Options.Committed; nil when unset. Immutable.
	committed func(int, time.Duration)
	faults    *faults // immutable

	// mu guards closed and the sending side of reqs; reads hold it shared
	// for their whole duration so that Close waits for them before it
	// closes the engine.
	mu     sync.RWMutex
	closed bool
	reqs   chan *request // closed by Close; drained by the writer
	done   chan struct{} // closed when the writer has returned

	// seq is the highest Seq assigned. Guarded by being touched only by
	// the writer goroutine (and by Open before it starts).
	seq uint64

	relayHead relayHead // where RelayDue starts (relay.go)
}

// request is one change waiting for the writer.
type request struct {
	// fn makes the change in w. It must return store.ErrNotFound and
	// store.ErrExists before it writes anything, since the rest of its
	// group commits; any other error (an engine failure) aborts the whole
	// group, so it may come at any point.
	fn   func(w *writeTx) error
	err  error
	done chan struct{}
	// unsynced: the caller does not wait for the disk (writeUnsynced).
	unsynced bool

	// state says whether the writer took the request or its caller gave
	// up on it first; see write.
	state atomic.Int32
	// applied is closed once fn has run, so that a caller who stops
	// waiting (see write) knows fn no longer writes to its variables.
	// Set by the writer before it takes the request.
	applied chan struct{}
}

// The states of a request.
const (
	queued    = iota // waiting for the writer
	taken            // the writer runs it
	abandoned        // its caller answered store.ErrUnavailable; the writer skips it
)

// Open opens the store in dir, creating it if needed.
func Open(dir string, opts ...Options) (*Store, error) {
	return OpenContext(context.Background(), dir, opts...)
}

// OpenContext is Open that gives up when ctx ends. Opening replays the log
// and flushes it, which waits for the disk while it is full or read-only
// (the wait is logged); the engine keeps waiting in the background and is
// closed if it ever opens.
func OpenContext(ctx context.Context, dir string, opts ...Options) (*Store, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := newFaults(vfs.Default, dir, uint64(max(o.MinFree, 0)), log)
	type opened struct {
		s   *Store
		err error
	}
	// Buffered: the opening goroutine must not wait for a caller who left.
	res := make(chan opened, 1)
	go func() {
		s, err := open(dir, o, f)
		res <- opened{s, err}
	}()
	select {
	case r := <-res:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-res; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("embedded: open %s: %w", dir, context.Cause(ctx))
	}
}

func open(dir string, o Options, f *faults) (*Store, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 1024
	}
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref() // the DB holds its own reference
	db, err := pebble.Open(dir, &pebble.Options{
		Cache:              cache,
		MemTableSize:       o.MemTableSize,
		FormatMajorVersion: pebble.FormatValueSeparation, // pinned: a library upgrade must not silently ratchet the on-disk format
		Logger:             logger{o.Logger, f},
		FS:                 &faultFS{FS: vfs.Default, f: f},
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	s := &Store{
		db:       db,
		maxGroup: o.MaxGroup, committed: o.Committed,
		faults: f,
		reqs:   make(chan *request, o.MaxGroup),
		done:   make(chan struct{}),
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	if err := f.watch(); err != nil {
		db.Close()
		return nil, err
	}
	go s.writer()
	return s, nil
}

// Health reports why the store cannot take changes now (an error wrapping
// store.ErrUnavailable and one of ErrLowSpace, ErrDirGone, ErrStalled or
// ErrFailed), or nil. It looks at the disk as it is, so it also notices a
// fault that passed.
func (s *Store) Health() error { return s.faults.check() }

// load checks the format version (writing it into a new store) and reads
// the Seq high-water mark.
func (s *Store) load() error {
	v, err := getValue(s.db, key(tVersion))
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := s.db.Set(key(tVersion), []byte{formatVersion}, pebble.Sync); err != nil {
			return fmt.Errorf("embedded: %w", err)
		}
	case err != nil:
		return err
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("embedded: unknown format version %v", v)
	}
	v, err = getValue(s.db, key(tSeq))
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case len(v) != 8:
		return fmt.Errorf("%w: sequence", errCorrupt)
	default:
		s.seq = binary.BigEndian.Uint64(v)
	}
	if err := s.indexAddresses(); err != nil {
		return err
	}
	return s.indexListing()
}

// Close waits for the changes already submitted to commit, then closes the
// engine. Calls after Close return store.ErrClosed; a second Close returns
// nil.
//
// While a write waits for the disk, Close does not wait for it: it returns
// an error wrapping store.ErrUnavailable and leaves the engine as it is
// (its goroutines keep waiting until the process exits). Every change it
// leaves behind was answered with an error, never as stored.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	stuck := s.faults.stuck()
	select {
	case <-s.done:
	case <-stuck:
		return fmt.Errorf("embedded: close: %w", s.faults.engine())
	}
	// No reader holds mu any more (Lock waited for them) and none can
	// start, so the engine has no users left. Closing syncs the log, which
	// may wait for the disk too.
	closed := make(chan error, 1)
	go func() { closed <- s.db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			return fmt.Errorf("embedded: close: %w", err)
		}
		return nil
	case <-stuck:
		return fmt.Errorf("embedded: close: %w", s.faults.engine())
	}
}

// write runs fn in the writer goroutine and returns once its group is
// durable. The context is only checked before fn is queued: once queued, a
// change commits whatever happens to the caller, so the caller must learn
// the outcome rather than guess it.
//
// The one exception is a write of the engine that waits for the disk (see
// faultFS), which may take as long as the fault lasts: then every caller
// is answered store.ErrUnavailable at once. A request still queued is
// abandoned and never runs; one whose group is committing may still be
// stored when the disk comes back, which is why ErrUnavailable never
// promises that nothing was stored.
func (s *Store) write(ctx context.Context, fn func(w *writeTx) error) error {
	return s.submit(ctx, &request{fn: fn, done: make(chan struct{})})
}

// writeUnsynced is write for a change that a crash may lose: it returns
// once the change is applied and seen by reads, and becomes durable with
// the next synced group. A relay job's outcome is such a change: lost, the
// job is sent again, which at least once allows; waiting for the disk
// held each vendor send's slot for an fsync.
func (s *Store) writeUnsynced(ctx context.Context, fn func(w *writeTx) error) error {
	return s.submit(ctx, &request{fn: fn, done: make(chan struct{}), unsynced: true})
}

func (s *Store) submit(ctx context.Context, r *request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enqueue(r); err != nil {
		return err
	}
	for {
		select {
		case <-r.done:
			return r.err
		case <-s.faults.stuck():
		}
		err := s.faults.engine()
		if err == nil {
			continue // the stall passed already
		}
		if !r.state.CompareAndSwap(queued, abandoned) {
			// Taken: fn runs or ran; wait until it is done with the
			// caller's variables.
			select {
			case <-r.done:
				return r.err
			case <-r.applied:
			}
		}
		return err
	}
}

// enqueue hands r to the writer, unless the engine is stuck.
func (s *Store) enqueue(r *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	// Sending under the shared lock keeps Close from closing reqs under
	// us. The writer drains reqs unless it is stuck, and then this send
	// gives up.
	for {
		stuck := s.faults.stuck()
		select {
		case <-stuck:
			if err := s.faults.engine(); err != nil {
				return err
			}
			continue
		default:
		}
		select {
		case s.reqs <- r:
			return nil
		case <-stuck:
		}
	}
}

// read runs fn on a consistent snapshot of the store.
func (s *Store) read(ctx context.Context, fn func(r pebble.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return fn(snap)
}

// readOne is read for a function that reads one key: a single Get is
// atomic on its own, and skipping the snapshot matters on the push path,
// which looks up every explicit target.
func (s *Store) readOne(ctx context.Context, fn func(r pebble.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return fn(s.db)
}

// writer is the single goroutine that changes the store; see the package
// comment. It returns when reqs is closed and drained.
func (s *Store) writer() {
	defer close(s.done)
	group := make([]*request, 0, s.maxGroup)
	for r := range s.reqs {
		group = append(group[:0], r)
	collect:
		for len(group) < s.maxGroup {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break collect
				}
				group = append(group, r)
			default:
				break collect
			}
		}
		s.commit(group)
	}
}

// commit applies group to one batch and makes it durable.
func (s *Store) commit(group []*request) {
	applied := make(chan struct{})
	defer func() {
		for _, r := range group {
			close(r.done)
		}
	}()
	// A fault known now fails the group before it costs anything; the
	// callers that gave up on a stall are skipped.
	fault := s.faults.check()
	live := 0
	for _, r := range group {
		r.applied = applied // before the swap, which publishes it
		if r.state.CompareAndSwap(queued, taken) {
			group[live] = r
			live++
		}
	}
	group = group[:live]
	if fault != nil {
		close(applied)
		for _, r := range group {
			r.err = fault
		}
		return
	}
	w := &writeTx{s: s, b: s.db.NewIndexedBatch()}
	seq := s.seq
	var err error
	sync := pebble.NoSync
	for _, r := range group {
		if !r.unsynced {
			sync = pebble.Sync
		}
	}
	for _, r := range group {
		r.err = r.fn(w)
		if r.err != nil && !errors.Is(r.err, store.ErrNotFound) && !errors.Is(r.err, store.ErrExists) {
			err = r.err
			break
		}
	}
	close(applied)
	if err == nil && !w.b.Empty() {
		if s.seq != seq {
			w.set(key(tSeq), binary.BigEndian.AppendUint64(nil, s.seq))
		}
		start := time.Now()
		err = w.b.Commit(sync)
		if s.committed != nil && err == nil && sync == pebble.Sync {
			s.committed(len(group), time.Since(start))
		}
		if err == nil {
			// A directory removed during the commit took it along: the
			// files were still open, so the commit succeeded, and it is
			// lost all the same. Answer it as such.
			err = s.faults.identity()
		}
	}
	w.b.Close()
	if err != nil && !errors.Is(err, store.ErrUnavailable) {
		// Nothing of the group is stored. Seqs handed out in it are not
		// reused: a gap is harmless, a reuse would not be.
		err = fmt.Errorf("embedded: group not committed: %w", err)
	}
	for _, r := range group {
		if err != nil {
			r.err = err
		}
	}
}

// writeTx is the writer's view while it applies a group: reads see the
// committed store plus everything the group wrote so far.
type writeTx struct {
	s *Store
	b *pebble.Batch // indexed
}

func (w *writeTx) set(k, v []byte) { w.b.Set(k, v, nil) }
func (w *writeTx) del(k []byte)    { w.b.Delete(k, nil) }
func (w *writeTx) get(k []byte) ([]byte, error) {
	return getValue(w.b, k)
}
func (w *writeTx) has(k []byte) (bool, error) { return hasKey(w.b, k) }

// nextSeq assigns the next Seq. Writer goroutine only.
func (w *writeTx) nextSeq() uint64 {
	w.s.seq++
	return w.s.seq
}

// getValue returns a copy of the value at k, or store.ErrNotFound.
func getValue(r pebble.Reader, k []byte) ([]byte, error) {
	v, c, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	out := append([]byte(nil), v...)
	return out, c.Close()
}

// hasKey reports whether k is set, without copying its value (a message's
// is kilobytes, and the relay asks once per job).
func hasKey(r pebble.Reader, k []byte) (bool, error) {
	_, c, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("embedded: %w", err)
	}
	return true, c.Close()
}

// scan calls fn for every key with prefix, in key order, until fn returns
// false. The slices are valid only during the call.
func scan(r pebble.Reader, prefix []byte, fn func(k, v []byte) (bool, error)) error {
	return scanRange(r, prefix, prefixEnd(prefix), fn)
}

// scanRange calls fn for every key in [lo, hi), in key order, until fn
// returns false.
func scanRange(r pebble.Reader, lo, hi []byte, fn func(k, v []byte) (bool, error)) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("embedded: %w", cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("embedded: %w", err)
		}
		more, err := fn(it.Key(), v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// logger adapts slog to the engine's logger.
type logger struct {
	l *slog.Logger
	f *faults
}

func (l logger) Infof(format string, args ...any) {
	if l.l != nil {
		l.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (l logger) Errorf(format string, args ...any) {
	if l.l != nil {
		l.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// Fatalf is called on an unrecoverable engine error. Faults of the disk
// never reach the engine as errors (see faultFS), so what is left is
// corruption or a broken invariant of the engine. Continuing could
// acknowledge writes that are not stored or serve corrupt data, so it
// panics, as the engine's own default (log.Fatalf) would exit.
func (l logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if l.l != nil {
		l.l.Error(msg, "component", "pebble")
	}
	if l.f != nil {
		l.f.fail(errors.New(msg))
	}
	panic("embedded: " + msg)
}

// Checkpoint writes a consistent copy of the store, as of now, to dir
// (which must not exist), while the store goes on serving: files that do
// not change are hard-linked where dir is on the same file system, and the
// log is flushed first, so that the copy holds every write acknowledged
// before the call. Opening dir as a store gives that copy.
func (s *Store) Checkpoint(dir string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("embedded: checkpoint: %w", err)
	}
	return nil
}
