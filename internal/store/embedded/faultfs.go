package embedded

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// faultFS is the file system the engine writes through. It keeps the
// engine from ever seeing a write error, because the engine cannot go on
// after one (measured on Pebble v2.1.7):
//
//   - A failed log write or sync fails the commit and every commit after
//     it (the log writer keeps its first error), and the commit's caller is
//     told through Logger.Fatalf, after which the commit returns nil as if
//     it had succeeded.
//   - A failed log rotation (creating the next log, closing the last)
//     panics while the engine's mutex is unlocked under a deferred
//     Unlock: a fatal error no recover can catch.
//   - A failed flush is retried at once, forever, without a pause: the
//     100 % CPU of an open on a full disk, whose replayed log must be
//     flushed before Open returns.
//   - A failed manifest write is Logger.Fatalf on a background goroutine.
//
// So a call that fails with a fault that can pass (a full, read-only or
// missing directory, an I/O error) is retried with a growing pause until
// it succeeds, and faults reports the store unavailable meanwhile: the
// engine waits, and the store answers its callers store.ErrUnavailable
// rather than waiting with it. A failed sync is not retried (after a failed
// fsync the kernel may have dropped the dirty pages, and a second fsync
// succeeds without them: PostgreSQL's "fsyncgate"): the call never
// returns, the store is failed until a restart, and a restart recovers
// what was durable.
//
// Reads, removals (the engine logs a failed removal and goes on) and the
// lock pass through.
type faultFS struct {
	vfs.FS
	f *faults
}

var _ vfs.FS = (*faultFS)(nil)

// Pauses between retries of a stalled call: short at first, so a blip
// costs little, then a second, so a full disk costs no CPU.
const (
	firstRetry = 10 * time.Millisecond
	maxRetry   = time.Second
)

// retryable reports whether err is a fault that may pass.
func retryable(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO, syscall.EACCES, syscall.EPERM, syscall.ENOENT:
		return true
	}
	return false
}

// retry runs call until it returns nil or an error that is not a fault.
func (fs *faultFS) retry(op, name string, call func() error) error {
	err := call()
	if err == nil || !retryable(err) {
		return err
	}
	fs.f.stallBegin(op, name, err)
	defer fs.f.stallEnd()
	for pause := firstRetry; ; pause = min(2*pause, maxRetry) {
		time.Sleep(pause)
		if err = call(); err == nil || !retryable(err) {
			return err
		}
	}
}

// never is where a call that failed for good waits: returning its error
// would take the engine down (see faultFS).
func (fs *faultFS) never(op, name string, err error) {
	fs.f.fail(&os.PathError{Op: op, Path: name, Err: err})
	select {}
}

func (fs *faultFS) wrap(f vfs.File, name string) vfs.File {
	return &faultFile{File: f, fs: fs, name: name}
}

func (fs *faultFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := fs.retry("create", name, func() (err error) {
		f, err = fs.FS.Create(name, category)
		return err
	})
	if err != nil {
		return nil, err
	}
	return fs.wrap(f, name), nil
}

func (fs *faultFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	var f vfs.File
	err := fs.retry("open", name, func() (err error) {
		f, err = fs.FS.OpenReadWrite(name, category, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return fs.wrap(f, name), nil
}

// ReuseForWrite renames and then opens, each retried on its own: retrying
// the pair after the rename succeeded would fail on the missing old name.
func (fs *faultFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := fs.Rename(oldname, newname); err != nil {
		return nil, err
	}
	return fs.OpenReadWrite(newname, category)
}

// OpenDir's file is wrapped for its Sync (a directory's entries are made
// durable that way); files opened to read are not wrapped.
func (fs *faultFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return fs.wrap(f, name), nil
}

func (fs *faultFS) Link(oldname, newname string) error {
	return fs.retry("link", newname, func() error { return fs.FS.Link(oldname, newname) })
}

func (fs *faultFS) Rename(oldname, newname string) error {
	return fs.retry("rename", newname, func() error { return fs.FS.Rename(oldname, newname) })
}

func (fs *faultFS) MkdirAll(dir string, perm os.FileMode) error {
	return fs.retry("mkdir", dir, func() error { return fs.FS.MkdirAll(dir, perm) })
}

func (fs *faultFS) Unwrap() vfs.FS { return fs.FS }

// faultFile retries its writes and never returns a failed sync.
type faultFile struct {
	vfs.File
	fs   *faultFS
	name string
}

func (f *faultFile) Write(p []byte) (int, error) {
	n := 0
	err := f.fs.retry("write", f.name, func() error {
		m, err := f.File.Write(p[n:])
		n += m
		return err
	})
	return n, err
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	err := f.fs.retry("write", f.name, func() error {
		m, err := f.File.WriteAt(p[n:], off+int64(n))
		n += m
		return err
	})
	return n, err
}

// Preallocate reserves space for the log ahead of its writes (110 % of a
// memtable per log). It is skipped when it would eat into the reserve: on
// ext4 a preallocation that does not fit takes all the free space there is
// before it fails, and the engine ignores its error.
func (f *faultFile) Preallocate(off, length int64) error {
	if f.fs.f.minFree > 0 && !f.fs.f.roomFor(length) {
		return nil
	}
	return f.File.Preallocate(off, length)
}

func (f *faultFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		f.fs.never("sync", f.name, err)
	}
	return nil
}

func (f *faultFile) SyncData() error {
	if err := f.File.SyncData(); err != nil {
		f.fs.never("sync", f.name, err)
	}
	return nil
}

func (f *faultFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err != nil {
		f.fs.never("sync", f.name, err)
	}
	return full, nil
}

// Interface guards.
var (
	_ vfs.File  = (*faultFile)(nil)
	_ io.Writer = (*faultFile)(nil)
)
