// Package bench is `herald bench`: black-box workloads that measure a
// Herald node from outside, over HTTP and MQTT only, and run the same
// workload against another MQTT broker in the same run for a side-by-side
// figure.
//
// Workloads:
//
//   - conns: N idle devices connect and subscribe (CONNECT, SUBSCRIBE at
//     QoS 1, SUBACK). Reports the connect+subscribe rate, the server's RSS
//     slope per connection between From and N settled connections, and the
//     server's CPU per connection.
//   - fanout: N connected devices, then one broadcast (POST /v1/push with
//     audience "all" on Herald, one QoS 1 PUBLISH on a topic all N subscribe
//     to on the peer). Reports the time from the request to the last device
//     having the message and acknowledged it, deliveries per second, and the
//     server's CPU per delivered message.
//   - cluster: Nodes nodes in cluster mode on one PostgreSQL and one NATS,
//     N devices each, beside one node holding N in the same run: the
//     connect rate, the RSS slope per connection per node, one broadcast
//     to every device (deliveries per second, the nodes' CPU per delivery)
//     and what the bus carries per broadcast and per direct push, each
//     against the one node's. The devices are spread over swarm workers,
//     child processes of the bench (worker.go).
//
// The client side is a few epoll loops over raw sockets (swarm_linux.go), so
// the bench process stays light beside the server it measures; it binds its
// sockets to 127.0.0.2–127.0.0.254 so ephemeral ports never run out. The
// servers run as separate processes, normally started by the bench itself
// (a fresh process per run, so every run starts from the same memory), and
// are read through /proc. Linux only.
package bench

import (
	"cmp"
	"errors"
	"io"
	"slices"
	"time"
)

// Workload names.
const (
	Conns   = "conns"
	Fanout  = "fanout"
	Relay   = "relay"
	Cluster = "cluster"
)

// Defaults of the cluster workload.
const (
	DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultNATS     = "nats://127.0.0.1:4222"
	// maxPerWorker is the most device sockets a swarm worker holds: a
	// worker has the same 20,000-file limit as every process here.
	maxPerWorker = 15000
)

// relayDevices is how many devices the relay workload spreads its
// notifications over; one push names them all (the API's limit of IDs per
// push).
const relayDevices = 1000

// maxPacket caps what a device accepts from the server; a push is at most a
// few KiB.
const maxPacket = 1 << 20

// ErrNoMQTT means the Herald under test has no MQTT listener (the gateway
// is not built, or the address is wrong).
var ErrNoMQTT = errors.New("bench: Herald has no MQTT listener")

// Device is one MQTT client identity a workload connects as.
type Device struct {
	ClientID string
	Username string // empty: none
	Password string // empty: none
	Topic    string // subscribed at QoS 1
}

// Options configure a bench run. The zero value of every field but
// Workload and N means a sensible default.
type Options struct {
	Workload string // Conns, Fanout, Relay or Cluster
	N        int    // devices (per node for Cluster); at most about 19,000 within a 20,000-file limit
	Runs     int    // runs, each on fresh server processes; figures are medians; default 1
	// From is the lower point of the RSS slope; default 5,000 when N is
	// 19,000 or more, else N/4.
	From int

	// Herald says whether to measure Herald; Broker names the peer to run
	// the same workload against ("" for none, "mosquitto").
	Herald bool
	Broker string

	// Server is an external Herald's base URL. Empty: the bench starts
	// `herald serve` itself on free ports for each run.
	Server       string
	MQTTAddr     string // the external Herald's MQTT address, host:port
	AppKey       string // the external Herald's app, whose master secret
	MasterSecret string // registers devices in bulk and pushes
	ServerPID    int    // the external Herald's PID; default: found by its MQTT port

	HeraldBin    string   // binary to run `serve` with; default this executable
	ServeArgs    []string // extra `herald serve` flags
	ServeEnv     []string // extra environment for the servers, KEY=VALUE (GODEBUG=...)
	MosquittoBin string   // default "mosquitto" on $PATH
	ServerCPUs   string   // when set, servers run under `taskset -c ServerCPUs`

	// Dir keeps the spawned Herald's data directory, the registration
	// cache and the servers' logs between runs.
	Dir   string
	Fresh bool // forget cached registrations and Herald's data first

	MQTTVersion byte          // 4 (3.1.1, default) or 5
	KeepAlive   time.Duration // the devices' keepalive; default 5 minutes
	// InFlight is the handshakes under way at once; default 32. More adds
	// nothing on loopback but overflows a small listen backlog (Mosquitto
	// listens with 100), and a dropped SYN costs a 1 s retransmission.
	InFlight int
	Register int // concurrent registrations; default 32

	SettleMin time.Duration // least wait before reading a settled RSS; default 2 s
	SettleMax time.Duration // longest; default 30 s
	Timeout   time.Duration // bound of each phase (connecting, delivering); default 2 minutes

	// Cluster workload. Nodes is the cluster's size (default 5); each run
	// has a fresh schema on Postgres (default DefaultPostgres) and its own
	// subject prefix on NATS (default DefaultNATS). NATSMonitor, when set,
	// is that NATS's monitoring endpoint (http://127.0.0.1:8222), read for
	// its own message counters beside the bench's. PerWorker is the most
	// device sockets one swarm worker holds (default 15,000).
	Nodes       int
	Postgres    string
	NATS        string
	NATSMonitor string
	PerWorker   int
	// Profile, when set, takes a CPU profile of every node of this length
	// from the broadcast on (into the run's directory under Dir/cluster).
	Profile time.Duration

	Log io.Writer // progress lines; nil: none
}

func (o *Options) defaults() {
	o.Runs = max(o.Runs, 1)
	if o.From <= 0 || o.From >= o.N {
		o.From = o.N / 4
		if o.N >= 19000 || o.Workload == Cluster && o.N >= 15000 {
			o.From = 5000
		}
	}
	if o.Nodes <= 0 {
		o.Nodes = 5
	}
	if o.Postgres == "" {
		o.Postgres = DefaultPostgres
	}
	if o.NATS == "" {
		o.NATS = DefaultNATS
	}
	if o.PerWorker <= 0 || o.PerWorker > maxPerWorker {
		o.PerWorker = maxPerWorker
	}
	if o.Timeout <= 0 && o.Workload == Cluster {
		// Every connect reads PostgreSQL, which five nodes share with the
		// devices' workers on two cores.
		o.Timeout = 5 * time.Minute
	}
	if o.MosquittoBin == "" {
		o.MosquittoBin = "mosquitto"
	}
	if o.MQTTVersion == 0 {
		o.MQTTVersion = 4
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 5 * time.Minute
	}
	if o.InFlight <= 0 {
		o.InFlight = 32
	}
	if o.Register <= 0 {
		o.Register = 32
	}
	if o.SettleMin <= 0 {
		o.SettleMin = 2 * time.Second
	}
	if o.SettleMax <= 0 {
		o.SettleMax = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Report is the outcome of a bench run: one entry per target, in the
// order Herald, peer.
type Report struct {
	Workload    string   `json:"workload"`
	N           int      `json:"n"`
	From        int      `json:"from,omitempty"`  // lower point of the RSS slope (conns, cluster: per node)
	Nodes       int      `json:"nodes,omitempty"` // the cluster's size (cluster)
	Runs        int      `json:"runs"`
	MQTTVersion byte     `json:"mqtt_version"`
	CPUs        int      `json:"cpus"`
	ServerCPUs  string   `json:"server_cpus,omitempty"`
	Started     string   `json:"started"`
	Targets     []Target `json:"targets"`
	// Ratio is Herald's median over the peer's, per metric, when both ran.
	Ratio map[string]float64 `json:"ratio,omitempty"`
}

// Target is one server's results.
type Target struct {
	Name    string   `json:"name"` // "Herald", "Mosquitto 2.0.11", "5 nodes"
	Skipped string   `json:"skipped,omitempty"`
	Median  Metrics  `json:"median,omitempty"`
	Runs    []Result `json:"runs,omitempty"`
}

// Result is one run against one target.
type Result struct {
	Metrics Metrics  `json:"metrics"`
	Errors  []string `json:"errors,omitempty"` // distinct client-side errors, with counts
	Notes   []string `json:"notes,omitempty"`
}

// Metrics maps a metric's key (see metricsOf) to its value.
type Metrics map[string]float64

// metric describes one figure of a workload's table.
type metric struct {
	Key    string
	Label  string
	Unit   string
	Higher bool // higher is better
	Ratio  bool // worth a Herald/peer ratio
	Digits int  // decimals shown
}

// metricsOf lists the figures of a workload, in table order.
func metricsOf(workload string) []metric {
	switch workload {
	case Conns:
		return []metric{
			{Key: "connected", Label: "devices connected and subscribed", Digits: 0},
			{Key: "connect_rate", Label: "connect+subscribe rate", Unit: "devices/s", Higher: true, Ratio: true},
			{Key: "rss_per_conn_kib", Label: "server RSS per connection (slope)", Unit: "KiB", Ratio: true, Digits: 2},
			{Key: "cpu_per_conn_us", Label: "server CPU per connection", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "rss_base_mib", Label: "server RSS before connecting", Unit: "MiB", Digits: 1},
			{Key: "rss_n_mib", Label: "server RSS with N connections", Unit: "MiB", Ratio: true, Digits: 1},
		}
	case Fanout:
		return []metric{
			{Key: "connected", Label: "devices connected and subscribed"},
			{Key: "received", Label: "devices that received the message"},
			{Key: "duplicates", Label: "duplicate deliveries"},
			{Key: "broadcast_ms", Label: "request to last delivery", Unit: "ms", Ratio: true, Digits: 1},
			{Key: "first_ms", Label: "request to first delivery", Unit: "ms", Digits: 2},
			{Key: "deliveries_per_s", Label: "deliveries per second", Unit: "/s", Higher: true, Ratio: true},
			{Key: "cpu_per_delivery_us", Label: "server CPU per delivery", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "accept_ms", Label: "push acknowledged (HTTP 202 / PUBACK)", Unit: "ms", Digits: 1},
		}
	case Cluster:
		return []metric{
			{Key: "nodes", Label: "nodes"},
			{Key: "connected", Label: "devices connected and subscribed"},
			{Key: "connect_rate", Label: "connect+subscribe rate, whole box", Unit: "devices/s", Higher: true, Ratio: true},
			{Key: "connect_rate_per_node", Label: "connect+subscribe rate per node", Unit: "devices/s", Higher: true, Ratio: true},
			{Key: "rss_per_conn_kib", Label: "RSS per connection per node (slope)", Unit: "KiB", Ratio: true, Digits: 2},
			{Key: "rss_n_mib", Label: "RSS per node with N connections", Unit: "MiB", Ratio: true, Digits: 1},
			{Key: "cpu_per_conn_us", Label: "server CPU per connection (all nodes)", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "pg_cpu_per_conn_us", Label: "PostgreSQL CPU per connection (the nodes' backends + its own)", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "idle_cpu_pct", Label: "server CPU per node, idle with N devices", Unit: "% of a core", Ratio: true, Digits: 1},
			{Key: "pg_idle_cpu_pct", Label: "PostgreSQL CPU meanwhile (the nodes' backends + its own)", Unit: "% of a core", Ratio: true, Digits: 1},
			{Key: "load1", Label: "load average (1 min) as the broadcast is sent", Digits: 2},
			{Key: "received", Label: "devices that received the broadcast"},
			{Key: "duplicates", Label: "duplicate deliveries"},
			{Key: "broadcast_ms", Label: "broadcast: request to last delivery", Unit: "ms", Ratio: true, Digits: 1},
			{Key: "first_ms", Label: "broadcast: request to first delivery", Unit: "ms", Digits: 2},
			{Key: "acked_ms", Label: "broadcast: request to last ack stored (on the bus)", Unit: "ms", Ratio: true, Digits: 1},
			{Key: "deliveries_per_s", Label: "broadcast deliveries per second, whole box", Unit: "/s", Higher: true, Ratio: true},
			{Key: "cpu_per_delivery_us", Label: "server CPU per delivery (all nodes, idle taken off)", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "pg_cpu_per_delivery_us", Label: "PostgreSQL CPU per delivery (the nodes' backends + its own)", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "nats_cpu_per_delivery_us", Label: "NATS CPU per delivery (with the bench's counter)", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "bench_cpu_per_delivery_us", Label: "the bench's workers' CPU per delivery", Unit: "µs", Ratio: true, Digits: 1},
			{Key: "accept_ms", Label: "broadcast acknowledged (HTTP 202)", Unit: "ms", Digits: 1},
			{Key: "bus_fan_per_broadcast", Label: "bus: broadcast, messages published"},
			{Key: "bus_out_per_broadcast", Label: "bus: broadcast, copies to nodes"},
			{Key: "varz_in_per_broadcast", Label: "bus: broadcast, NATS in_msgs (/varz)"},
			{Key: "varz_out_per_broadcast", Label: "bus: broadcast, NATS out_msgs to nodes (/varz)"},
			{Key: "bus_acks_per_delivery", Label: "bus: broadcast, acks published per delivery", Digits: 2},
			{Key: "bus_direct_same_pub", Label: "bus: push to 1 device on the pushing node, published", Digits: 1},
			{Key: "bus_direct_same_out", Label: "bus: push to 1 device on the pushing node, to nodes", Digits: 1},
			{Key: "bus_direct_other_pub", Label: "bus: push to 1 device on another node, published", Digits: 1},
			{Key: "bus_direct_other_out", Label: "bus: push to 1 device on another node, to nodes", Digits: 1},
			{Key: "bus_direct_other_acks", Label: "bus: push to 1 device on another node, acks", Digits: 1},
			{Key: "bus_direct_every_pub", Label: "bus: push to 1 device on every node, published", Digits: 1},
			{Key: "bus_direct_every_out", Label: "bus: push to 1 device on every node, to nodes", Digits: 1},
			{Key: "bus_direct_ten_pub", Label: "bus: push to 10 devices on another node, published", Digits: 1},
			{Key: "bus_direct_ten_out", Label: "bus: push to 10 devices on another node, to nodes", Digits: 1},
		}
	case Relay:
		return []metric{
			{Key: "notifications", Label: "notifications per phase"},
			{Key: "apns_per_s", Label: "APNs notifications per second", Unit: "/s", Higher: true, Digits: 0},
			{Key: "apns_cpu_us", Label: "server CPU per APNs notification", Unit: "µs", Digits: 1},
			{Key: "apns_vendor_cpu_us", Label: "the bench's APNs CPU per notification", Unit: "µs", Digits: 1},
			{Key: "fcm_per_s", Label: "FCM notifications per second", Unit: "/s", Higher: true, Digits: 0},
			{Key: "fcm_cpu_us", Label: "server CPU per FCM notification", Unit: "µs", Digits: 1},
			{Key: "fcm_vendor_cpu_us", Label: "the bench's FCM CPU per notification", Unit: "µs", Digits: 1},
			{Key: "apns_slow_per_s", Label: "APNs at 50 ms an answer: notifications per second", Unit: "/s", Higher: true, Digits: 0},
			{Key: "apns_slow_cpu_us", Label: "server CPU per slow-APNs notification", Unit: "µs", Digits: 1},
		}
	}
	return nil
}

// medians takes, per metric, the median over runs.
func medians(runs []Result) Metrics {
	if len(runs) == 0 {
		return nil
	}
	out := Metrics{}
	for k := range runs[0].Metrics {
		var vs []float64
		for _, r := range runs {
			if v, ok := r.Metrics[k]; ok {
				vs = append(vs, v)
			}
		}
		slices.SortFunc(vs, cmp.Compare)
		if n := len(vs); n%2 == 1 {
			out[k] = vs[n/2]
		} else {
			out[k] = (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	return out
}

// ratios divides Herald's medians by the peer's.
func ratios(workload string, herald, peer Metrics) map[string]float64 {
	out := map[string]float64{}
	for _, m := range metricsOf(workload) {
		h, ok1 := herald[m.Key]
		p, ok2 := peer[m.Key]
		if m.Ratio && ok1 && ok2 && p != 0 {
			out[m.Key] = h / p
		}
	}
	return out
}
