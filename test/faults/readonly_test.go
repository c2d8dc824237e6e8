package faults

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// ext4 is an ext4 file system on a loop device (its image on a tmpfs),
// mounted errors=remount-ro, so that the kernel can turn it read-only
// under a running node as it does after an I/O error. A `mount -o
// remount,ro` cannot: Linux refuses it (EBUSY) while any file is open for
// writing, and the store's log always is.
type ext4 struct {
	img, dir string
}

func mountExt4(t *testing.T) *ext4 {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			needRoot(t, tool+" is not installed")
		}
	}
	e := &ext4{img: filepath.Join(mountTmpfs(t, 96<<20), "ext4.img"), dir: t.TempDir()}
	if err := os.WriteFile(e.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", e.img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := e.mount(); err != nil {
		needRoot(t, err.Error())
	}
	t.Cleanup(func() {
		if exec.Command("findmnt", e.dir).Run() == nil {
			unmount(t, e.dir)
		}
	})
	return e
}

func (e *ext4) mount() error {
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", e.img, e.dir).CombinedOutput(); err != nil {
		return &os.PathError{Op: "mount -o loop " + strings.TrimSpace(string(out)), Path: e.dir, Err: err}
	}
	return nil
}

// errorFile is the kernel's knob that reports a file system error, which
// errors=remount-ro answers by making the file system read-only.
func (e *ext4) errorFile(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("findmnt", "-no", "SOURCE", e.dir).Output()
	if err != nil {
		t.Fatalf("findmnt %s: %v", e.dir, err)
	}
	path := filepath.Join("/sys/fs/ext4", filepath.Base(strings.TrimSpace(string(out))), "trigger_fs_error")
	if _, err := os.Stat(path); err != nil {
		needRoot(t, "this kernel has no "+path)
	}
	return path
}

// repair unmounts the file system, checks it (replaying its journal, as a
// reboot would) and mounts it again, writable.
func (e *ext4) repair(t *testing.T) {
	t.Helper()
	unmount(t, e.dir)
	out, err := exec.Command("e2fsck", "-fy", e.img).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); err != nil && (!ok || exit.ExitCode() >= 4) {
		t.Fatalf("e2fsck: %v: %s", err, out)
	}
	if err := e.mount(); err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyDuringPushStream turns the data directory's file system
// read-only while pushes stream to a device connected over MQTT: every push
// from then on gets 503 store_unavailable, /readyz says why, the device
// stays connected, and SIGTERM still ends the node at once although a write
// of its store waits for the disk. An ext4 made read-only by an error stays
// so until it is unmounted and checked, so the node is restarted on the
// repaired file system, and every push that got 202 reaches the device.
func TestReadOnlyDuringPushStream(t *testing.T) {
	fs := mountExt4(t)
	trigger := fs.errorFile(t)
	data := filepath.Join(fs.dir, "data")
	srv := heraldtest.Start(t, data, "--mqtt", "127.0.0.1:0", "--store-min-free", "1048576")
	dev := connect(t, srv, register(t, srv))
	st := startStream(srv, dev.reg, 4)

	waitFor(t, 10*time.Second, "pushes accepted before the fault", func() bool { return st.count(accepted) >= 100 })
	if err := os.WriteFile(trigger, []byte("herald test: read-only\n"), 0o200); err != nil {
		t.Fatal(err)
	}
	var reason string
	waitFor(t, 10*time.Second, "/readyz to report the fault", func() bool {
		code, r := readyz(t, srv)
		reason = r
		return code == http.StatusServiceUnavailable
	})
	// A log write finds the file system read-only (and waits), or the
	// log's fsync finds the journal aborted (EIO: the store fails until a
	// restart), whichever comes first.
	if !strings.Contains(reason, "read-only file system") && !strings.Contains(reason, "input/output error") {
		t.Errorf("/readyz during the fault: reason %q, want it to name the read-only file system or the failed sync", reason)
	}
	faultSeen := time.Now()
	waitFor(t, 10*time.Second, "pushes refused during the fault", func() bool {
		return st.count(func(o outcome) bool { return refused(o) && o.started.After(faultSeen) }) >= 50
	})
	dev.connected(t)
	cleared := time.Now()
	outs := st.end()
	ids, during := checkAnswers(t, outs, faultSeen, cleared)

	stopping := time.Now()
	srv.Stop()
	if took := time.Since(stopping); took > 5*time.Second {
		t.Errorf("SIGTERM took %s to end a node whose store waits for a read-only disk", took)
	}
	if !strings.Contains(srv.Log.String(), "herald stopped") {
		t.Errorf("the node did not drain and stop on SIGTERM: %s", srv.Log)
	}

	fs.repair(t)
	again := heraldtest.Start(t, data, "--mqtt", "127.0.0.1:0", "--store-min-free", "1048576")
	again.Secret = srv.Secret // the app existed: its secret is not shown again
	dev2 := connect(t, again, dev.reg)
	after := startStream(again, dev.reg, 2)
	waitFor(t, 10*time.Second, "pushes accepted after the restart", func() bool { return after.count(accepted) >= 20 })
	more, _ := checkAnswers(t, after.end(), time.Now(), time.Now())
	waitDelivered(t, append(ids, more...), dev, dev2)
	t.Logf("%d pushes before the restart: %d got 202, %d got 503 (%d inside the fault window); after the repair and restart, all %d 202s and %d new ones reached the device",
		len(outs), len(ids), len(outs)-len(ids), during, len(ids), len(more))
}
