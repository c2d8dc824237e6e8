//go:build linux

package bench

import (
	"context"
	"fmt"
	"github.com/heraldpush/herald/test/heraldtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// heraldBin is the herald binary TestMain builds, for the bench to start.
var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bench-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	heraldBin = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-o", heraldBin, "github.com/heraldpush/herald/cmd/herald")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building herald: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestWorkloads runs both workloads with a few devices against a spawned
// Herald and a spawned Mosquitto, and checks behaviour only: every device
// connected and subscribed, every one received the broadcast. Timings are
// for `herald bench`, never for a test.
func TestWorkloads(t *testing.T) {
	const n = 200
	for _, workload := range []string{Conns, Fanout} {
		t.Run(workload+"/herald", func(t *testing.T) {
			rep := run(t, Options{Workload: workload, N: n, Herald: true})
			check(t, rep.Targets[0], workload, n)
		})
		t.Run(workload+"/mosquitto", func(t *testing.T) {
			if _, err := mosquittoVersion("mosquitto"); err != nil {
				t.Skip(err)
			}
			rep := run(t, Options{Workload: workload, N: n, Broker: "mosquitto"})
			check(t, rep.Targets[0], workload, n)
		})
	}
}

// TestRegistrationCache registers devices on a spawned Herald, restarts
// it, and asks for more: only the missing ones are registered, and the
// cached ones still authenticate. It needs no MQTT.
func TestRegistrationCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := &Options{Dir: t.TempDir(), HeraldBin: heraldBin}
	o.defaults()
	var first []Device
	for i, n := range []int{30, 50} {
		h := &herald{hc: newHTTPClient(4), workers: 4, log: o.Log}
		if err := h.spawn(ctx, o); err != nil {
			t.Fatal(err)
		}
		devs, err := h.devices(ctx, n, Conns)
		if err != nil {
			h.stop()
			t.Fatal(err)
		}
		if i == 0 {
			first = devs
		} else {
			for j := range first {
				if devs[j] != first[j] {
					t.Errorf("device %d after the restart is %+v, was %+v", j, devs[j], first[j])
				}
			}
		}
		seen := map[string]bool{}
		for _, d := range devs {
			if seen[d.ClientID] || d.Password == "" || d.Topic != "devices/"+d.ClientID {
				t.Errorf("bad or repeated identity %+v", d)
			}
			seen[d.ClientID] = true
		}
		// The provider API knows the last one: it was really registered.
		if _, err := h.call(ctx, "GET", "/v1/devices/"+devs[n-1].ClientID, h.providerAuth, nil, nil); err != nil {
			t.Error(err)
		}
		if err := h.stop(); err != nil {
			t.Error(err)
		}
	}
	if c := loadCache(filepath.Join(o.Dir, "herald-devices.json")); len(c.Devices) != 50 {
		t.Errorf("the cache holds %d devices, want 50", len(c.Devices))
	}
}

func run(t *testing.T, o Options) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.HeraldBin = heraldBin
	o.SettleMin, o.SettleMax, o.Timeout = 50*time.Millisecond, time.Second, time.Minute
	var log strings.Builder
	o.Log = &log
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	if o.Workload != Cluster && len(rep.Targets) != 1 {
		t.Fatalf("%d targets in the report, want 1", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if s := tg.Skipped; s != "" {
			if strings.Contains(s, ErrNoMQTT.Error()) {
				t.Skipf("Herald's MQTT gateway does not listen yet: %s", s)
			}
			t.Fatalf("%s skipped: %s", tg.Name, s)
		}
	}
	return rep
}

func check(t *testing.T, tg Target, workload string, n int) {
	t.Helper()
	if len(tg.Runs) != 1 {
		t.Fatalf("%s: %d runs, want 1", tg.Name, len(tg.Runs))
	}
	r := tg.Runs[0]
	if got := r.Metrics["connected"]; got != float64(n) {
		t.Errorf("%s: %v devices connected and subscribed, want %d; errors: %q", tg.Name, got, n, r.Errors)
	}
	if workload == Fanout {
		if got := r.Metrics["received"]; got != float64(n) {
			t.Errorf("%s: %v devices received the broadcast, want %d; errors %q, notes %q", tg.Name, got, n, r.Errors, r.Notes)
		}
	}
	if len(r.Errors) > 0 {
		t.Errorf("%s: client errors: %q", tg.Name, r.Errors)
	}
}

// TestClusterWorkload runs the cluster workload with two nodes and a few
// devices on the test PostgreSQL and an embedded NATS with its monitoring
// endpoint, and checks behaviour only: every device connected and got the
// broadcast, the bus carried what the subscription model says (and what
// the NATS server itself counted), and the run's schema is gone after.
func TestClusterWorkload(t *testing.T) {
	pg := heraldtest.PostgresURL(t)
	before := benchSchemas(t, pg)
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT,
		HTTPHost: "127.0.0.1", HTTPPort: natsserver.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("the embedded NATS did not start")
	}
	const n = 120
	rep := run(t, Options{Workload: Cluster, N: n, Nodes: 2, Postgres: pg, NATS: ns.ClientURL(),
		NATSMonitor: "http://" + ns.MonitorAddr().String(), PerWorker: 50})
	if len(rep.Targets) != 2 {
		t.Fatalf("%d targets, want the cluster and the one node", len(rep.Targets))
	}
	for i, tg := range rep.Targets {
		nodes := []int{2, 1}[i]
		if len(tg.Runs) != 1 {
			t.Fatalf("%s: %d runs, want 1", tg.Name, len(tg.Runs))
		}
		r := tg.Runs[0]
		want := Metrics{
			"nodes": float64(nodes), "connected": float64(nodes * n), "received": float64(nodes * n),
			"bus_fan_per_broadcast": 1, "bus_out_per_broadcast": float64(nodes - 1), "bus_acks_per_delivery": 1,
			"bus_direct_same_pub": 1, "bus_direct_same_out": 0,
			"varz_in_per_broadcast": float64(1 + nodes*n), "varz_out_per_broadcast": float64(nodes - 1),
		}
		if nodes > 1 {
			want["bus_direct_other_pub"], want["bus_direct_other_out"] = 1, 1
			want["bus_direct_every_pub"], want["bus_direct_every_out"] = 2, 1
			want["bus_direct_ten_pub"], want["bus_direct_ten_out"] = 10, 10
		}
		for k, v := range want {
			if r.Metrics[k] != v {
				t.Errorf("%s: %s = %v, want %v (errors %q, notes %q)", tg.Name, k, r.Metrics[k], v, r.Errors, r.Notes)
			}
		}
		if len(r.Errors) > 0 {
			t.Errorf("%s: client errors: %q", tg.Name, r.Errors)
		}
	}
	if after := benchSchemas(t, pg); len(after) > len(before) {
		t.Errorf("schemas before the run %q, after %q: a run's schema was left behind", before, after)
	}
}

// benchSchemas lists the schemas runs of the cluster workload make.
func benchSchemas(t *testing.T, pg string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}
