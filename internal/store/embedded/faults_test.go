package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// tmpfs mounts a tmpfs of size bytes for the test, skipping it (failing
// under CI=true) where mounting is not permitted.
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("under CI=true this test must run, but mount -t tmpfs failed: %v: %s", err, out)
		}
		t.Skipf("skipped: mounting a tmpfs needs root: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fillUp writes a file in dir until its file system is full and returns
// the file's path.
func fillUp(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{64 << 10, 512} {
		chunk := bytes.Repeat([]byte{'f'}, n)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return path
}

// faultStore opens a store in dir with an app and a device.
func faultStore(t *testing.T, dir string, minFree int64) *Store {
	t.Helper()
	s, err := Open(dir, Options{MinFree: minFree})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(bg, push.App{Key: "a", Name: "a", CreatedAt: epoch}); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	if _, err := s.CreateDevice(bg, push.Device{ID: "d1", App: "a", Platform: push.Android}); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	return s
}

func appendOne(s *Store, id string) error {
	m := newMsg(id, push.Audience{RegistrationIDs: []string{"d1"}}, time.Hour)
	_, err := s.Append(bg, []store.Accept{{Msg: m, Targets: []string{"d1"}}})
	return err
}

// within runs f and fails the test if it has not returned after d: a
// fault must be answered, not waited out.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return in %s", what, d)
	}
}

// appendConcurrently appends n messages named prefix-i from a few
// goroutines and returns those acknowledged and the errors of the others.
func appendConcurrently(s *Store, prefix string, n int) (acked []string, errs []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				id := fmt.Sprintf("%s-%d", prefix, i)
				err := appendOne(s, id)
				mu.Lock()
				if err == nil {
					acked = append(acked, id)
				} else {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, errs
}

// stored fails the test unless every id is in the store in dir after a
// reopen.
func stored(t *testing.T, dir string, ids []string) {
	t.Helper()
	s := mustOpen(t, dir)
	defer s.Close()
	for _, id := range ids {
		if _, _, err := s.Message(bg, "a", id); err != nil {
			t.Errorf("acknowledged message %s not stored after the fault: %v", id, err)
		}
	}
}

// TestFullDiskBelowReserve: once free space is below the reserve every
// change fails at once with ErrUnavailable (ErrLowSpace) and Health says
// so; when space is back, changes succeed without a reopen, and every
// acknowledged change is there after one.
func TestFullDiskBelowReserve(t *testing.T) {
	dir := filepath.Join(tmpfs(t, 16<<20), "store")
	s := faultStore(t, dir, 1<<20)
	before, errs := appendConcurrently(s, "before", 100)
	if len(errs) > 0 {
		t.Fatalf("appends before the fault: %v", errs[0])
	}
	filler := fillUp(t, filepath.Dir(dir))
	var during []string
	within(t, 5*time.Second, "appends on a full disk", func() { during, errs = appendConcurrently(s, "during", 100) })
	if len(during) > 0 || len(errs) != 100 {
		t.Fatalf("on a full disk %d appends were acknowledged", len(during))
	}
	for _, err := range errs {
		if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, ErrLowSpace) {
			t.Fatalf("an append on a full disk: %v; want store.ErrUnavailable and ErrLowSpace", err)
		}
	}
	if err := s.Health(); !errors.Is(err, ErrLowSpace) {
		t.Errorf("Health on a full disk: %v", err)
	}
	os.Remove(filler)
	if err := s.Health(); err != nil {
		t.Errorf("Health once space is back: %v", err)
	}
	after, errs := appendConcurrently(s, "after", 100)
	if len(errs) > 0 {
		t.Fatalf("appends after the fault: %v", errs[0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stored(t, dir, append(before, after...))
}

// TestFullDiskWithoutReserve: with no reserve, the engine's log write
// fails; the write waits for space, every caller meanwhile is answered
// ErrUnavailable (ErrStalled) at once, and once space is back the store
// takes changes again by itself. Nothing acknowledged is lost, and the
// engine never sees the error (it would take the process down).
func TestFullDiskWithoutReserve(t *testing.T) {
	dir := filepath.Join(tmpfs(t, 16<<20), "store")
	s := faultStore(t, dir, 0)
	before, errs := appendConcurrently(s, "before", 100)
	if len(errs) > 0 {
		t.Fatalf("appends before the fault: %v", errs[0])
	}
	filler := fillUp(t, filepath.Dir(dir))
	// Big messages, so that a commit cannot fit in the log's last page.
	var during []string
	within(t, 5*time.Second, "appends on a full disk", func() {
		for i := range 50 {
			m := newMsg(fmt.Sprintf("during-%d", i), push.Audience{RegistrationIDs: []string{"d1"}}, time.Hour)
			m.Data = bytes.Repeat([]byte{'x'}, 8<<10)
			if _, err := s.Append(bg, []store.Accept{{Msg: m, Targets: []string{"d1"}}}); err == nil {
				during = append(during, m.ID)
			} else if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("an append on a full disk: %v; want store.ErrUnavailable", err)
			}
		}
	})
	if err := s.Health(); !errors.Is(err, ErrStalled) {
		t.Fatalf("Health on a full disk without a reserve: %v; want ErrStalled", err)
	}
	os.Remove(filler)
	deadline := time.Now().Add(5 * time.Second)
	for s.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled write did not resume once space was back: %v", s.Health())
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, errs := appendConcurrently(s, "after", 100)
	if len(errs) > 0 {
		t.Fatalf("appends after the fault: %v", errs[0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stored(t, dir, append(append(before, during...), after...))
}

// TestCloseWhileStalled: Close does not wait for a write that waits for
// the disk; it says so.
func TestCloseWhileStalled(t *testing.T) {
	dir := filepath.Join(tmpfs(t, 16<<20), "store")
	s := faultStore(t, dir, 0)
	fillUp(t, filepath.Dir(dir))
	big := newMsg("big", push.Audience{RegistrationIDs: []string{"d1"}}, time.Hour)
	big.Data = bytes.Repeat([]byte{'x'}, 64<<10)
	within(t, 5*time.Second, "an append on a full disk", func() {
		if _, err := s.Append(bg, []store.Accept{{Msg: big, Targets: []string{"d1"}}}); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("append on a full disk: %v", err)
		}
	})
	var err error
	within(t, 5*time.Second, "Close while a write waits for the disk", func() { err = s.Close() })
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Close while stalled: %v; want store.ErrUnavailable", err)
	}
	// The engine keeps waiting until the process exits. Free the space so
	// that it finishes, and close it as the exit would, so that the tmpfs
	// can be unmounted.
	os.Remove(filepath.Join(filepath.Dir(dir), "filler"))
	deadline := time.Now().Add(5 * time.Second)
	for s.faults.engine() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled write did not finish once space was back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-s.done
	s.db.Close()
}

// TestRemovedDirectory: a change after the store's directory was removed
// fails with ErrDirGone, although the engine's open files would take it.
func TestRemovedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := faultStore(t, dir, 0)
	defer s.Close()
	if err := appendOne(s, "before"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := appendOne(s, "after"); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, ErrDirGone) {
		t.Fatalf("an append after the directory was removed: %v; want ErrDirGone", err)
	}
	if err := s.Health(); !errors.Is(err, ErrDirGone) {
		t.Errorf("Health: %v", err)
	}
	// Reads go on from what is open.
	if _, _, err := s.Message(bg, "a", "before"); err != nil {
		t.Errorf("a read after the removal: %v", err)
	}
}

// TestOpenOnFullDiskGivesUp: opening a store whose log must be replayed
// on a full disk waits for space, and OpenContext returns when its context
// ends rather than waiting on.
func TestOpenOnFullDiskGivesUp(t *testing.T) {
	dir := filepath.Join(tmpfs(t, 16<<20), "store")
	s := faultStore(t, dir, 0)
	if _, errs := appendConcurrently(s, "m", 200); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	s.Close()
	filler := fillUp(t, filepath.Dir(dir))
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	var err error
	within(t, 5*time.Second, "OpenContext on a full disk", func() { _, err = OpenContext(ctx, dir) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("OpenContext on a full disk: %v; want the context's error", err)
	}
	// The open goes on in the background and closes what it opens once
	// space is back, which lets the next open take the lock.
	os.Remove(filler)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := Open(dir)
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open once space is back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
