package faults

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// TestDiskFullDuringPushStream fills the data directory's file system
// while pushes stream to a device connected over MQTT, then frees it.
// During the fault every push gets 503 store_unavailable, /readyz says why
// and the device stays connected; after it the node takes pushes again by
// itself, and every push that got 202 (before, during or after) reaches
// the device. With a reserve the store refuses before the disk is full;
// without one, a log write fails and waits for space.
func TestDiskFullDuringPushStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minFree string
		reason  string // in /readyz's reason during the fault
	}{
		{"reserve", "4194304", "low on disk space"},
		{"no reserve", "0", "a write is waiting for the disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := mountTmpfs(t, 64<<20)
			srv := heraldtest.Start(t, filepath.Join(mnt, "data"), "--mqtt", "127.0.0.1:0", "--store-min-free", tc.minFree)
			dev := connect(t, srv, register(t, srv))
			st := startStream(srv, dev.reg, 4)

			waitFor(t, 10*time.Second, "pushes accepted before the fault", func() bool { return st.count(accepted) >= 100 })
			filler := fill(t, mnt)
			var reason string
			waitFor(t, 10*time.Second, "/readyz to report the fault", func() bool {
				code, r := readyz(t, srv)
				reason = r
				return code == http.StatusServiceUnavailable
			})
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("/readyz during the fault: reason %q, want it to say %q", reason, tc.reason)
			}
			faultSeen := time.Now()
			waitFor(t, 10*time.Second, "pushes refused during the fault", func() bool {
				return st.count(func(o outcome) bool { return refused(o) && o.started.After(faultSeen) }) >= 50
			})
			dev.connected(t)

			cleared := time.Now()
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "pushes accepted after the fault", func() bool {
				return st.count(func(o outcome) bool { return accepted(o) && o.started.After(cleared) }) >= 100
			})
			if code, r := readyz(t, srv); code != http.StatusOK {
				t.Errorf("/readyz after the fault: %d %q", code, r)
			}
			outs := st.end()
			ids, during := checkAnswers(t, outs, faultSeen, cleared)
			waitDelivered(t, ids, dev)
			dev.connected(t)
			t.Logf("%d pushes: %d got 202 and were delivered, %d got 503 (%d of them inside the fault window); %d messages received",
				len(outs), len(ids), len(outs)-len(ids), during, dev.received())
		})
	}
}
