package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heraldpush/herald/internal/store"
)

// Why a store is unavailable. Each is wrapped with the details and with
// store.ErrUnavailable.
var (
	// ErrLowSpace: the data directory's file system has less free space
	// than the store keeps in reserve.
	ErrLowSpace = errors.New("embedded: low on disk space")
	// ErrDirGone: the data directory, or the engine's lock file in it, is
	// no longer the one the store opened (deleted, moved or replaced). A
	// commit to the files still open would be lost with them.
	ErrDirGone = errors.New("embedded: data directory removed")
	// ErrStalled: a write to the disk failed (full, read-only, missing)
	// and is being retried; the engine waits for it.
	ErrStalled = errors.New("embedded: a write is waiting for the disk")
	// ErrFailed: the disk failed in a way that cannot be retried (a failed
	// fsync: what was written may be lost). Only a restart, which recovers
	// from what is durable, clears it.
	ErrFailed = errors.New("embedded: disk failed; restart needed")
)

// faults watches what the store needs from its directory: free space
// above the reserve, the directory it opened, and no write of the engine's
// waiting on a fault. It is safe for concurrent use.
type faults struct {
	fs      vfs.FS // the file system under faultFS
	dir     string
	minFree uint64 // 0: no reserve
	log     *slog.Logger

	// dirInfo and lockInfo identify the directory and the engine's lock
	// file as opened; nil until watch (the store is still opening).
	// Immutable once set, before the writer starts.
	dirInfo, lockInfo os.FileInfo

	mu      sync.Mutex
	stalls  int           // guarded by mu: file system calls retrying a fault
	stall   error         // guarded by mu: the last of their errors
	failed  error         // guarded by mu: set once, never cleared
	signal  chan struct{} // guarded by mu: closed when a stall or failure begins
	said    string        // guarded by mu: the unavailability last logged, "" for none
	stalled time.Time     // guarded by mu: when the current stall began
}

func newFaults(fs vfs.FS, dir string, minFree uint64, log *slog.Logger) *faults {
	return &faults{fs: fs, dir: dir, minFree: minFree, log: log, signal: make(chan struct{})}
}

// watch records the identity of the directory and of the lock file the
// open engine holds, which check compares against.
func (f *faults) watch() error {
	di, err := os.Stat(f.dir)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	li, err := os.Stat(filepath.Join(f.dir, "LOCK"))
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	f.dirInfo, f.lockInfo = di, li
	return nil
}

// stuck returns a channel that is closed once a write of the engine is
// waiting on a fault or the disk has failed: a change queued or committing
// then may take unbounded time, so its caller is answered at once.
func (f *faults) stuck() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signal
}

// check reports why the store cannot take a change now, or nil. It costs a
// statfs and two stats, so it runs before every commit group.
func (f *faults) check() error {
	err := f.engine()
	if err == nil {
		err = f.identity()
	}
	if err == nil {
		err = f.space()
	}
	f.say(err)
	return err
}

// engine reports a failure or a stall of the engine's writes.
func (f *faults) engine() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.failed != nil:
		return fmt.Errorf("%w: %w: %v", store.ErrUnavailable, ErrFailed, f.failed)
	case f.stalls > 0:
		return fmt.Errorf("%w: %w: %v", store.ErrUnavailable, ErrStalled, f.stall)
	}
	return nil
}

// identity reports whether the directory and the lock file are still the
// ones the store opened. A removed directory's files stay writable while
// they are open, so without this check commits would succeed and be lost.
func (f *faults) identity() error {
	if f.dirInfo == nil {
		return nil
	}
	gone := func(what string, was os.FileInfo) error {
		now, err := os.Stat(what)
		switch {
		case err != nil:
			return fmt.Errorf("%w: %w: %v", store.ErrUnavailable, ErrDirGone, err)
		case !os.SameFile(was, now):
			return fmt.Errorf("%w: %w: %s was replaced", store.ErrUnavailable, ErrDirGone, what)
		}
		return nil
	}
	if err := gone(f.dir, f.dirInfo); err != nil {
		return err
	}
	return gone(filepath.Join(f.dir, "LOCK"), f.lockInfo)
}

// space reports whether the file system has less free space than the
// reserve.
func (f *faults) space() error {
	if f.minFree == 0 {
		return nil
	}
	u, err := f.fs.GetDiskUsage(f.dir)
	if err != nil {
		return fmt.Errorf("%w: %w: %s: %v", store.ErrUnavailable, ErrLowSpace, f.dir, err)
	}
	if u.AvailBytes < f.minFree {
		return fmt.Errorf("%w: %w: %s has %s free, below the %s reserve", store.ErrUnavailable, ErrLowSpace,
			f.dir, bytesText(u.AvailBytes), bytesText(f.minFree))
	}
	return nil
}

// roomFor reports whether n more bytes leave the reserve free.
func (f *faults) roomFor(n int64) bool {
	u, err := f.fs.GetDiskUsage(f.dir)
	return err == nil && u.AvailBytes >= f.minFree+uint64(max(n, 0))
}

// say logs a change of availability: once when it goes, once when it
// comes back, not once per refused call.
func (f *faults) say(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	f.mu.Lock()
	was := f.said
	f.said = msg
	f.mu.Unlock()
	switch {
	case msg == was:
	case msg == "":
		f.log.Info("store: taking writes again", "dir", f.dir)
	default:
		f.log.Warn("store: refusing writes", "dir", f.dir, "reason", msg)
	}
}

// stallBegin records that a file system call failed with err and will be
// retried until it succeeds.
func (f *faults) stallBegin(op, name string, err error) {
	f.mu.Lock()
	f.stalls++
	f.stall = err
	first := f.stalls == 1
	if first {
		f.stalled = time.Now()
		if f.failed == nil {
			close(f.signal)
		}
	}
	f.mu.Unlock()
	if first {
		f.log.Error("store: a write failed and waits for the disk; free space or make the directory writable, or stop Herald",
			"dir", f.dir, "op", op, "file", name, "err", err)
	}
}

// stallEnd records that a stalled call succeeded.
func (f *faults) stallEnd() {
	f.mu.Lock()
	f.stalls--
	last := f.stalls == 0
	var waited time.Duration
	if last {
		waited = time.Since(f.stalled)
		f.stall = nil
		if f.failed == nil {
			f.signal = make(chan struct{})
		}
	}
	f.mu.Unlock()
	if last {
		f.log.Info("store: the disk takes writes again", "dir", f.dir, "waited", waited.Round(time.Millisecond))
	}
}

// fail records a fault that cannot be retried. The store stays
// unavailable until it is closed.
func (f *faults) fail(err error) {
	f.mu.Lock()
	first := f.failed == nil
	if first {
		f.failed = err
		if f.stalls == 0 {
			close(f.signal)
		}
	}
	f.mu.Unlock()
	if first {
		f.log.Error("store: the disk failed; refusing writes until Herald is restarted (a restart recovers what was durable)",
			"dir", f.dir, "err", err)
	}
}

// DiskFree returns the free space of the file system that holds dir, in
// bytes, as the store's reserve counts it.
func DiskFree(dir string) (uint64, error) {
	u, err := vfs.Default.GetDiskUsage(dir)
	return u.AvailBytes, err
}

// bytesText renders n in binary units for messages.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Exists reports whether dir holds a store (the engine's manifest), without
// opening or creating anything. A missing dir holds none.
func Exists(dir string) (bool, error) {
	desc, err := pebble.Peek(dir, vfs.Default)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("embedded: %w", err)
	}
	return desc.Exists, nil
}
