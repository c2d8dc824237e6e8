// Package metrics is Herald's Prometheus registry: every series the node
// exports, named as Prometheus asks (herald_..._total for counters, base
// units, _seconds), with labels of bounded cardinality only. A device ID is
// never a label; an app key is one only with PerApp (--metrics-per-app).
//
// The zero value of *M is nil, and every method of a nil *M does nothing,
// so that packages and tests that run without metrics need no checks.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// M holds the node's collectors.
type M struct {
	reg    *prometheus.Registry
	perApp bool

	connections *prometheus.GaugeVec
	connects    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	pushes      *prometheus.CounterVec
	sent        *prometheus.CounterVec
	acked       *prometheus.CounterVec
	redelivered *prometheus.CounterVec
	expired     prometheus.Counter
	requests    *prometheus.CounterVec
	reqDuration *prometheus.HistogramVec
	commitTime  prometheus.Histogram
	commitBatch prometheus.Histogram
	relay       *prometheus.CounterVec
	busOut      *prometheus.CounterVec
	busIn       *prometheus.CounterVec
	busLag      prometheus.Histogram

	// apps holds each app's *appCounts (live.go), by app key.
	apps sync.Map
}

// Options configure New.
type Options struct {
	// PerApp adds an app label to the per-push series, which an operator
	// with few apps may want and one with thousands must not.
	PerApp bool
}

// New returns a registry with Herald's series and the Go runtime's and the
// process's.
func New(o Options) *M {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pushLabels := []string{"audience"}
	if o.PerApp {
		pushLabels = append(pushLabels, "app")
	}
	m := &M{
		reg: reg, perApp: o.PerApp,
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_connections",
			Help: "Live device connections (streams) on this node, by transport."}, []string{"transport"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_connects_total",
			Help: "Device connections attached to their inbox, by transport."}, []string{"transport"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_disconnects_total",
			Help: "Device connections ended, by transport and reason (client: the device or the network ended it)."}, []string{"transport", "reason"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_pushes_accepted_total",
			Help: "Pushes made durable, by audience kind (direct, alias, tag, broadcast)."}, pushLabels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_sent_total",
			Help: "Messages written to device connections, by transport (redeliveries included)."}, []string{"transport"}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_acked_total",
			Help: "Messages devices acknowledged for the first time, by transport (poll: POST /v1/inbox/ack)."}, []string{"transport"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_redeliveries_total",
			Help: "Messages sent again after an earlier connection ended without their ack, by transport."}, []string{"transport"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_messages_expired_total",
			Help: "Messages past their TTL that the sweep purged."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_http_requests_total",
			Help: "HTTP requests, by route pattern and status code."}, []string{"route", "code"}),
		reqDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern (long-polls and streams included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60}}, []string{"route"}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herald_store_commit_duration_seconds",
			Help:    "Time of one durable store commit (a group of writes on the embedded store, a transaction on PostgreSQL).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herald_store_commit_batch_size",
			Help:    "Writes carried by one store commit.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}}),
		relay: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_relay_sends_total",
			Help: "Relay jobs ended, by vendor (apns, fcm, webpush), result (sent, failed, gone, own) and reason."}, []string{"vendor", "result", "reason"}),
		busOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_bus_published_total",
			Help: "Messages this node published to the cluster bus, by kind."}, []string{"kind"}),
		busIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_bus_received_total",
			Help: "Messages this node received from the cluster bus, by kind."}, []string{"kind"}),
		busLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herald_bus_lag_seconds",
			Help:    "Time from another node's publish to this node's handling of the message (clocks of both nodes).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5}}),
	}
	reg.MustRegister(m.connections, m.connects, m.disconnects, m.pushes, m.sent, m.acked, m.redelivered, m.expired,
		m.requests, m.reqDuration, m.commitTime, m.commitBatch, m.relay)
	return m
}

// EnableBus registers the cluster bus's series (cluster mode only).
func (m *M) EnableBus() {
	if m != nil {
		m.reg.MustRegister(m.busOut, m.busIn, m.busLag)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *M) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Gauge registers a gauge whose value fn reads at each scrape.
func (m *M) Gauge(name, help string, fn func() float64) {
	if m != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
	}
}

// Attached counts a device connection attached over transport.
func (m *M) Attached(transport string) {
	if m != nil {
		m.connects.WithLabelValues(transport).Inc()
		m.connections.WithLabelValues(transport).Inc()
	}
}

// Detached counts a device connection over transport ended for reason.
func (m *M) Detached(transport, reason string) {
	if m != nil {
		m.connections.WithLabelValues(transport).Dec()
		m.disconnects.WithLabelValues(transport, reason).Inc()
	}
}

// Pushed counts n pushes of audience kind for app.
func (m *M) Pushed(audience, app string, n int) {
	if m == nil {
		return
	}
	m.appCounts(app).pushes.Add(int64(n))
	if m.perApp {
		m.pushes.WithLabelValues(audience, app).Add(float64(n))
	} else {
		m.pushes.WithLabelValues(audience).Add(float64(n))
	}
}

// Transport is one transport's per-message counters, looked up once per
// connection rather than once per message: a broadcast counts a message on
// every connection, and a labelled look-up hashes and locks each time.
type Transport struct {
	sent, redelivered prometheus.Counter
}

// Transport returns transport's counters; nil (which counts nothing) on a
// nil M.
func (m *M) Transport(transport string) *Transport {
	if m == nil {
		return nil
	}
	return &Transport{sent: m.sent.WithLabelValues(transport), redelivered: m.redelivered.WithLabelValues(transport)}
}

// Sent counts a message written to a device.
func (t *Transport) Sent(redelivery bool) {
	if t != nil {
		t.sent.Inc()
		if redelivery {
			t.redelivered.Inc()
		}
	}
}

// Acked counts n first acknowledgements over transport.
func (m *M) Acked(transport string, n int) {
	if m != nil && n > 0 {
		m.acked.WithLabelValues(transport).Add(float64(n))
	}
}

// Expired counts n messages the sweep purged.
func (m *M) Expired(n int) {
	if m != nil && n > 0 {
		m.expired.Add(float64(n))
	}
}

// Request counts an HTTP request to route answered with code after took.
func (m *M) Request(route string, code int, took time.Duration) {
	if m != nil {
		m.requests.WithLabelValues(route, statusText(code)).Inc()
		m.reqDuration.WithLabelValues(route).Observe(took.Seconds())
	}
}

// Commit records one store commit of batch writes that took took.
func (m *M) Commit(batch int, took time.Duration) {
	if m != nil {
		m.commitTime.Observe(took.Seconds())
		m.commitBatch.Observe(float64(batch))
	}
}

// Relayed counts a relay job ended with result (and reason) on vendor.
func (m *M) Relayed(vendor, result, reason string) {
	if m != nil {
		m.relay.WithLabelValues(vendor, result, reason).Inc()
	}
}

// BusPublished counts a bus message of kind this node published.
func (m *M) BusPublished(kind string) {
	if m != nil {
		m.busOut.WithLabelValues(kind).Inc()
	}
}

// BusReceived counts a bus message of kind received, published at sent.
func (m *M) BusReceived(kind string, sent time.Time) {
	if m == nil {
		return
	}
	m.busIn.WithLabelValues(kind).Inc()
	if !sent.IsZero() {
		m.busLag.Observe(max(time.Since(sent), 0).Seconds())
	}
}

// statusText keeps the code label to the codes HTTP defines, so that a
// handler's odd status cannot grow the series.
func statusText(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}
