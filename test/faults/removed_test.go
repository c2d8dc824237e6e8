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

// TestDataDirRemovedDuringPushStream removes the data directory while
// pushes stream to a device connected over MQTT. Its files stay open and
// writable, so a commit would succeed and be lost with them: every push
// from then on gets 503 store_unavailable, /readyz says the directory is
// gone, the device stays connected and has every push that got 202. The
// fault does not pass by itself; a restart refuses the missing directory
// until told --init.
func TestDataDirRemovedDuringPushStream(t *testing.T) {
	data := filepath.Join(mountTmpfs(t, 64<<20), "data")
	srv := heraldtest.Start(t, data, "--mqtt", "127.0.0.1:0", "--store-min-free", "1048576")
	dev := connect(t, srv, register(t, srv))
	st := startStream(srv, dev.reg, 4)

	waitFor(t, 10*time.Second, "pushes accepted before the fault", func() bool { return st.count(accepted) >= 100 })
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	// From the end of the removal: a commit while it runs may find the
	// directory still there, and is lost with the rest of what it deletes.
	removed := time.Now()
	waitFor(t, 10*time.Second, "pushes refused after the removal", func() bool {
		return st.count(func(o outcome) bool { return refused(o) && o.started.After(removed) }) >= 50
	})
	code, reason := readyz(t, srv)
	if code != http.StatusServiceUnavailable || !strings.Contains(reason, "data directory removed") {
		t.Errorf("/readyz after the removal: %d %q, want 503 saying the data directory was removed", code, reason)
	}
	dev.connected(t)
	outs := st.end()
	ids, during := checkAnswers(t, outs, removed, time.Now())
	waitDelivered(t, ids, dev)
	dev.connected(t)
	srv.Stop()
	t.Logf("%d pushes: %d got 202 and were delivered, %d got 503 (%d after the removal)", len(outs), len(ids), len(outs)-len(ids), during)

	code, stderr := run(t, "", 10*time.Second, "serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "")
	if code == 0 || !strings.Contains(stderr, "does not exist") || !strings.Contains(stderr, "--init") {
		t.Errorf("a restart on the removed directory: exit %d, stderr %q; want a refusal that names --init", code, stderr)
	}
	again := heraldtest.Start(t, data, "--init", "--store-min-free", "1048576")
	if again.Secret == "" {
		t.Errorf("--init on the removed directory did not create a new default app")
	}
}
