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
	Conns  = "conns"
	Fanout = "fanout"
	Relay  = "relay"
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
	Workload string // Conns or Fanout
	N        int    // devices; at most about 19,000 within a 20,000-file limit
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

	Log io.Writer // progress lines; nil: none
}

func (o *Options) defaults() {
	o.Runs = max(o.Runs, 1)
	if o.From <= 0 || o.From >= o.N {
		o.From = o.N / 4
		if o.N >= 19000 {
			o.From = 5000
		}
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
	From        int      `json:"from,omitempty"` // lower point of the RSS slope (conns)
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
	Name    string   `json:"name"` // "Herald", "Mosquitto 2.0.11"
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
