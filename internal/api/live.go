package api

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/push"
)

// sample is the node's totals and every app's at one moment.
type sample struct {
	at   time.Time
	node metrics.Totals
	apps map[string]metrics.AppTotals
}

// sampler takes a sample of the totals once a second and keeps the last
// minute of them, and one a minute for the last hour, for the figures of
// GET /v1/apps/{app_key}/stats and for the rates of GET /v1/stats/stream.
// Counters start at zero with the process, so a window longer than the
// node's life counts from its start.
type sampler struct {
	m *metrics.M // nil-safe

	mu    sync.Mutex
	secs  []sample      // the last 61, oldest first; guarded by mu
	mins  []sample      // the last 61 minutes' first samples, oldest first; guarded by mu
	fresh chan struct{} // closed when a sample is taken, then replaced; guarded by mu
}

const window = 61 // samples kept per ring: a minute (or an hour) and the one before it

func newSampler(m *metrics.M) *sampler {
	s := &sampler{m: m, fresh: make(chan struct{})}
	s.take(time.Now())
	return s
}

// run samples every second until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.take(now)
		}
	}
}

func (s *sampler) take(now time.Time) {
	smp := sample{at: now, node: s.m.Totals(), apps: map[string]metrics.AppTotals{}}
	s.m.EachApp(func(app string, t metrics.AppTotals) { smp.apps[app] = t })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secs = keep(append(s.secs, smp))
	if len(s.mins) == 0 || now.Sub(s.mins[len(s.mins)-1].at) >= time.Minute {
		s.mins = keep(append(s.mins, smp))
	}
	close(s.fresh)
	s.fresh = make(chan struct{})
}

func keep(ring []sample) []sample {
	if len(ring) > window {
		ring = append(ring[:0], ring[len(ring)-window:]...)
	}
	return ring
}

// last returns the latest two samples (the same one twice at start) and
// a channel closed when the next is taken.
func (s *sampler) last() (prev, cur sample, next <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur = s.secs[len(s.secs)-1]
	prev = cur
	if len(s.secs) > 1 {
		prev = s.secs[len(s.secs)-2]
	}
	return prev, cur, s.fresh
}

// since returns app's pushes (the node's when app is empty) accepted on
// this node within the last minute and hour, and since it started.
func (s *sampler) since(app string) (minute, hour, total int64) {
	pushes := func(smp *sample) int64 {
		if app == "" {
			return int64(smp.node.Pushes)
		}
		return smp.apps[app].Pushes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	total = pushes(&s.secs[len(s.secs)-1])
	if app != "" {
		total = s.m.AppTotals(app).Pushes // fresher than the last sample
	}
	return total - before(s.secs, pushes, time.Minute), total - before(s.mins, pushes, time.Hour), total
}

// before is the push total in the latest sample of ring taken at least
// ago before its newest one; zero when there is none (the node is younger).
func before(ring []sample, pushes func(*sample) int64, ago time.Duration) int64 {
	newest := ring[len(ring)-1].at
	for i := len(ring) - 1; i >= 0; i-- {
		if newest.Sub(ring[i].at) >= ago-time.Second/2 {
			return pushes(&ring[i])
		}
	}
	return 0
}

// liveEvent is one event of GET /v1/stats/stream.
type liveEvent struct {
	At    time.Time `json:"at"`
	Scope string    `json:"scope"` // "node", or "app" for one app's figures
	App   string    `json:"app_key,omitempty"`
	// Connections are live device connections on this node by transport;
	// for an app, its sessions, long-polls waiting included ("poll").
	Connections map[string]int `json:"connections"`
	Devices     *int           `json:"online_devices,omitempty"` // an app's devices with a session on this node
	PushesPerS  float64        `json:"pushes_per_s"`
	SentPerS    *float64       `json:"sent_per_s,omitempty"` // node only: messages written to connections
	AckedPerS   float64        `json:"delivered_per_s"`      // first acknowledgements
	Totals      liveTotals     `json:"totals"`
	// Pushes accepted on this node within the last minute and hour.
	PushesLastMinute int64 `json:"pushes_last_minute"`
	PushesLastHour   int64 `json:"pushes_last_hour"`
}

type liveTotals struct {
	Pushes    int64  `json:"pushes"`
	Sent      *int64 `json:"sent,omitempty"`
	Delivered int64  `json:"delivered"`
}

// eventOf builds the event for app (empty: the node) from two samples.
func (a *API) eventOf(app string, prev, cur sample) liveEvent {
	dt := cur.at.Sub(prev.at).Seconds()
	rate := func(d float64) float64 {
		if dt <= 0 || d < 0 {
			return 0
		}
		return d / dt
	}
	ev := liveEvent{At: cur.at.UTC().Truncate(time.Millisecond), Connections: map[string]int{}}
	if app == "" {
		ev.Scope = "node"
		for t, n := range cur.node.Connections {
			ev.Connections[t] = int(n)
		}
		sent := rate(cur.node.Sent - prev.node.Sent)
		sentTotal := int64(cur.node.Sent)
		ev.PushesPerS, ev.SentPerS, ev.AckedPerS = rate(cur.node.Pushes-prev.node.Pushes), &sent, rate(cur.node.Acked-prev.node.Acked)
		ev.Totals = liveTotals{Pushes: int64(cur.node.Pushes), Sent: &sentTotal, Delivered: int64(cur.node.Acked)}
		ev.PushesLastMinute, ev.PushesLastHour, _ = a.live.since("")
		return ev
	}
	ev.Scope, ev.App = "app", app
	if a.opts.Sessions != nil {
		by, devices := a.opts.Sessions.AppOnline(app)
		ev.Connections, ev.Devices = by, &devices
	} else {
		ev.Devices = new(int)
	}
	c, p := cur.apps[app], prev.apps[app]
	ev.PushesPerS, ev.AckedPerS = rate(float64(c.Pushes-p.Pushes)), rate(float64(c.Acked-p.Acked))
	ev.Totals = liveTotals{Pushes: c.Pushes, Delivered: c.Acked}
	ev.PushesLastMinute, ev.PushesLastHour, _ = a.live.since(app)
	return ev
}

// statsStream is GET /v1/stats/stream: Server-Sent Events, one "stats"
// event at once and one a second, until the client leaves or the node
// drains (a "close" event, as on the device stream). The admin token
// alone watches the node; with Herald-App, or with an app's master secret,
// that app.
func (a *API) statsStream(w http.ResponseWriter, r *http.Request) error {
	app, err := a.watcher(r)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	// The stream outlives the body and write deadlines every request gets;
	// each write sets its own.
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(event string, v any) error {
		b, _ := json.Marshal(v)
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write([]byte("event: " + event + "\ndata: " + string(b) + "\n\n")); err != nil {
			return err
		}
		return rc.Flush()
	}
	if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
		return nil
	}
	for {
		prev, cur, next := a.live.last()
		if write("stats", a.eventOf(app, prev, cur)) != nil {
			return nil // the client left: nothing to answer
		}
		select {
		case <-next:
		case <-r.Context().Done():
			return nil
		case <-a.draining:
			write("close", map[string]any{"code": "going_away", "reconnect": true})
			return nil
		}
	}
}

// watcher authenticates a watcher of the live figures and returns the app
// it watches, empty for the node (the admin token without Herald-App).
func (a *API) watcher(r *http.Request) (string, error) {
	if isBearer(r) && r.Header.Get(appHeader) == "" {
		if err := a.admin(r); err != nil {
			return "", err
		}
		return "", nil
	}
	app, err := a.providerApp(r)
	if err != nil {
		return "", err
	}
	return app.Key, nil
}

// Drain ends the live streams (GET /v1/stats/stream), each with a close
// event, so that a graceful shutdown does not wait for them: the server
// calls it when it starts draining.
func (a *API) Drain() {
	a.drainOnce.Do(func() { close(a.draining) })
}

// appStats is GET /v1/apps/{app_key}/stats.
type appStats struct {
	AppKey  string `json:"app_key"`
	Devices struct {
		Total      int                   `json:"total"`
		ByPlatform map[push.Platform]int `json:"by_platform"`
	} `json:"devices"`
	Online struct {
		Scope       string         `json:"scope"` // "node": this node's sessions
		Devices     int            `json:"devices"`
		Sessions    int            `json:"sessions"`
		ByTransport map[string]int `json:"by_transport"`
	} `json:"online"`
	Pushes struct {
		Scope      string `json:"scope"` // "node": pushes this node accepted
		LastMinute int64  `json:"last_minute"`
		LastHour   int64  `json:"last_hour"`
		SinceStart int64  `json:"since_start"`
	} `json:"pushes"`
}

func (a *API) stats(w http.ResponseWriter, r *http.Request, app push.App) error {
	counts, err := a.reg.CountDevices(r.Context(), app.Key)
	if err != nil {
		return err
	}
	var out appStats
	out.AppKey = app.Key
	out.Devices.ByPlatform = map[push.Platform]int{push.Android: 0, push.IOS: 0, push.Web: 0, push.Other: 0}
	for p, n := range counts {
		out.Devices.ByPlatform[p] += n
		out.Devices.Total += n
	}
	out.Online.Scope, out.Online.ByTransport = "node", map[string]int{}
	if a.opts.Sessions != nil {
		out.Online.ByTransport, out.Online.Devices = a.opts.Sessions.AppOnline(app.Key)
	}
	for _, n := range out.Online.ByTransport {
		out.Online.Sessions += n
	}
	out.Pushes.Scope = "node"
	out.Pushes.LastMinute, out.Pushes.LastHour, out.Pushes.SinceStart = a.live.since(app.Key)
	return apierr.WriteJSON(w, http.StatusOK, out)
}
