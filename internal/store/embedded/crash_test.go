package embedded

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// crashDirEnv, when set, makes TestCrash the child process: it appends into
// that directory and prints "ok ID" for every message once Append returned.
const crashDirEnv = "HERALD_EMBEDDED_CRASH_DIR"

// TestCrash kills a process that is appending (SIGKILL, so nothing is
// flushed or closed) right after it reported messages as accepted, then
// reopens the store and checks every reported message is there and
// pending for its device in Seq order.
func TestCrash(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(30 * time.Second)
	for len(acked) < 500 && sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
			acked[id] = true
		}
		if time.Now().After(deadline) {
			break
		}
	}
	// Kill mid-stream: appends are in flight, some reported, some not.
	cmd.Process.Signal(syscall.SIGKILL)
	for sc.Scan() { // reports written before the kill landed are acknowledged too
		if id, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
			acked[id] = true
		}
	}
	cmd.Wait()
	if len(acked) < 100 {
		t.Fatalf("child acknowledged only %d messages before the kill", len(acked))
	}

	s := mustOpen(t, dir)
	defer s.Close()
	d, err := s.Device(bg, "d1")
	if err != nil {
		t.Fatalf("device after crash: %v", err)
	}
	msgs, err := s.Pending(bg, &d, epoch.Add(time.Second), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for i, m := range msgs {
		got[m.ID] = true
		if i > 0 && msgs[i-1].Seq >= m.Seq {
			t.Errorf("Pending out of Seq order after crash")
		}
	}
	lost := 0
	for id := range acked {
		if !got[id] {
			lost++
			if _, _, err := s.Message(bg, "a", id); err != nil {
				t.Errorf("acknowledged message %s lost: %v", id, err)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged messages not pending after the crash", lost, len(acked))
	}
	t.Logf("%d acknowledged before SIGKILL, %d stored", len(acked), len(msgs))
	// The store is usable after recovery.
	if _, err := s.Append(bg, []store.Accept{{Msg: newMsg("after", push.Audience{All: true}, time.Hour)}}); err != nil {
		t.Errorf("Append after recovery: %v", err)
	}
}

// crashChild appends from several goroutines forever, half direct and half
// broadcast, until it is killed.
func crashChild(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	if err := s.CreateApp(bg, push.App{Key: "a", Name: "a", CreatedAt: epoch}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if _, err := s.CreateDevice(bg, push.Device{ID: "d1", App: "a", Platform: push.Android}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex // one line per write, never interleaved
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("g%d-%d", g, i)
				m := newMsg(id, push.Audience{RegistrationIDs: []string{"d1"}}, time.Hour)
				a := store.Accept{Msg: m, Targets: []string{"d1"}}
				if i%2 == 1 {
					m.Audience = push.Audience{All: true}
					a.Targets = nil
				}
				if _, err := s.Append(bg, []store.Accept{a}); err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(2)
				}
				// Reported only after Append returned: the parent counts
				// on exactly these.
				mu.Lock()
				fmt.Fprintln(w, "ok", id)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
