package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Totals are the node's figures since it started, for the console's live
// charts: pushes accepted, messages written to device connections and
// first acknowledgements, and the live connections by transport (as
// herald_connections, which counts no long-poll). Read from the
// collectors themselves, so that the hot paths count once.
type Totals struct {
	Pushes, Sent, Acked float64
	Connections         map[string]float64
}

// AppTotals are one app's figures on this node since it started.
type AppTotals struct {
	Pushes, Acked int64
}

// appCounts are what Pushed and AppAcked count per app, whatever
// --metrics-per-app says: the console shows an app its own figures and
// never another's.
type appCounts struct {
	pushes, acked atomic.Int64
}

// Totals reads the node's totals. It costs a walk of a few label values.
func (m *M) Totals() Totals {
	t := Totals{Connections: map[string]float64{}}
	if m == nil {
		return t
	}
	each(m.pushes, func(_ map[string]string, v float64) { t.Pushes += v })
	each(m.sent, func(_ map[string]string, v float64) { t.Sent += v })
	each(m.acked, func(_ map[string]string, v float64) { t.Acked += v })
	each(m.connections, func(l map[string]string, v float64) { t.Connections[l["transport"]] += v })
	return t
}

// AppTotals reads app's totals.
func (m *M) AppTotals(app string) AppTotals {
	if m == nil {
		return AppTotals{}
	}
	c, ok := m.apps.Load(app)
	if !ok {
		return AppTotals{}
	}
	a := c.(*appCounts)
	return AppTotals{Pushes: a.pushes.Load(), Acked: a.acked.Load()}
}

// EachApp calls fn with the totals of every app that has counted
// anything on this node.
func (m *M) EachApp(fn func(app string, t AppTotals)) {
	if m == nil {
		return
	}
	m.apps.Range(func(k, v any) bool {
		a := v.(*appCounts)
		fn(k.(string), AppTotals{Pushes: a.pushes.Load(), Acked: a.acked.Load()})
		return true
	})
}

// AppAcked counts n first acknowledgements by app's devices.
func (m *M) AppAcked(app string, n int) {
	if m != nil && n > 0 {
		m.appCounts(app).acked.Add(int64(n))
	}
}

func (m *M) appCounts(app string) *appCounts {
	if c, ok := m.apps.Load(app); ok {
		return c.(*appCounts)
	}
	c, _ := m.apps.LoadOrStore(app, &appCounts{})
	return c.(*appCounts)
}

// each calls fn with the labels and value of every series c collects.
func each(c prometheus.Collector, fn func(labels map[string]string, v float64)) {
	ch := make(chan prometheus.Metric, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		c.Collect(ch)
		close(ch)
	})
	for pm := range ch {
		var d dto.Metric
		if pm.Write(&d) != nil {
			continue
		}
		labels := make(map[string]string, len(d.Label))
		for _, l := range d.Label {
			labels[l.GetName()] = l.GetValue()
		}
		switch {
		case d.Counter != nil:
			fn(labels, d.Counter.GetValue())
		case d.Gauge != nil:
			fn(labels, d.Gauge.GetValue())
		}
	}
	wg.Wait()
}
