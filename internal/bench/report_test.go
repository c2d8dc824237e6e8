package bench

import (
	"strings"
	"testing"
)

func TestThousands(t *testing.T) {
	for _, c := range []struct {
		v      float64
		digits int
		want   string
	}{
		{0, 0, "0"}, {999, 0, "999"}, {1000, 0, "1,000"}, {19000, 0, "19,000"},
		{1234567.891, 2, "1,234,567.89"}, {-4500, 1, "-4,500.0"}, {0.98, 2, "0.98"},
	} {
		if got := thousands(c.v, c.digits); got != c.want {
			t.Errorf("thousands(%v, %d) = %q, want %q", c.v, c.digits, got, c.want)
		}
	}
}

func TestMediansAndRatios(t *testing.T) {
	runs := []Result{
		{Metrics: Metrics{"connect_rate": 3, "rss_per_conn_kib": 2}},
		{Metrics: Metrics{"connect_rate": 1, "rss_per_conn_kib": 4}},
		{Metrics: Metrics{"connect_rate": 2, "rss_per_conn_kib": 8}},
	}
	m := medians(runs)
	if m["connect_rate"] != 2 || m["rss_per_conn_kib"] != 4 {
		t.Errorf("medians = %v", m)
	}
	if m := medians(runs[:2]); m["connect_rate"] != 2 {
		t.Errorf("median of two = %v, want their mean", m)
	}
	r := ratios(Conns, Metrics{"connect_rate": 10, "rss_per_conn_kib": 3, "connected": 5}, Metrics{"connect_rate": 5, "rss_per_conn_kib": 1, "connected": 5})
	if r["connect_rate"] != 2 || r["rss_per_conn_kib"] != 3 || len(r) != 2 {
		t.Errorf("ratios = %v", r)
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{Workload: Conns, N: 19000, From: 5000, Runs: 3, MQTTVersion: 4, CPUs: 2,
		Targets: []Target{
			{Name: "Herald", Median: Metrics{"connected": 19000, "connect_rate": 12000, "rss_per_conn_kib": 1.5}},
			{Name: "Mosquitto 2.0.11", Median: Metrics{"connected": 19000, "connect_rate": 10000, "rss_per_conn_kib": 1}},
		},
		Ratio: map[string]float64{"connect_rate": 1.2, "rss_per_conn_kib": 1.5},
	}
	var b strings.Builder
	if err := WriteTable(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"median of 3 runs", "Herald/Mosquitto", "12,000", "1.20× (higher is better)", "1.50× (lower is better)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "server CPU per connection") {
		t.Errorf("table shows a metric no target has:\n%s", b.String())
	}
}

func TestWriteTableCluster(t *testing.T) {
	rep := &Report{Workload: Cluster, N: 15000, From: 5000, Nodes: 5, Runs: 3, MQTTVersion: 4, CPUs: 2,
		Targets: []Target{
			{Name: "5 nodes", Median: Metrics{"nodes": 5, "deliveries_per_s": 40000, "bus_out_per_broadcast": 4}},
			{Name: "1 node", Median: Metrics{"nodes": 1, "deliveries_per_s": 32000, "bus_out_per_broadcast": 0}},
		},
	}
	rep.Ratio = ratios(Cluster, rep.Targets[0].Median, rep.Targets[1].Median)
	var b strings.Builder
	if err := WriteTable(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"5 nodes × 15,000 devices beside 1 node × 15,000", "5 nodes / 1 node", "1.25× (higher is better)", "copies to nodes"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if _, ok := rep.Ratio["bus_out_per_broadcast"]; ok {
		t.Error("a ratio of bus counts, which are not better or worse by scale")
	}
}
