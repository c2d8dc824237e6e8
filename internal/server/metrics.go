package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/store"
)

// withMetrics counts each request in herald_http_requests_total and
// herald_http_request_duration_seconds under the route pattern it matched
// (set on the request by the ServeMux inside), never its path, so that the
// series stay bounded.
func withMetrics(m *metrics.M, next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" || route == "/" { // "/" is the catch-all of misses
			route = "unmatched"
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		m.Request(route, code, time.Since(start))
	})
}

// statusWriter notes the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer's other methods.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it directly.
func (s *statusWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() }

// Hijack implements http.Hijacker: a WebSocket upgrade counts as 101.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err == nil && s.code == 0 {
		s.code = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// startMetrics serves /metrics on its own listener with --metrics, and
// otherwise on mux.
func (s *Server) startMetrics(mux *http.ServeMux) error {
	s.inboxGauges()
	if s.cfg.MetricsAddr == "" {
		mux.Handle("GET /metrics", s.metrics.Handler())
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	own := http.NewServeMux()
	own.Handle("GET /metrics", s.metrics.Handler())
	s.metricsSrv = &http.Server{Handler: own, ReadHeaderTimeout: 10 * time.Second}
	s.info.MetricsURL = "http://" + reachable(ln.Addr()) + "/metrics"
	go s.metricsSrv.Serve(ln)
	return nil
}

// inboxGauges exports the store's waiting inbox entries and the age of the
// oldest. The store reads every entry's key for them, so one reading serves
// the scrapes of the next inboxStatsFor. In a cluster every node reports the
// same, cluster-wide, figures.
func (s *Server) inboxGauges() {
	var (
		mu   sync.Mutex
		last store.InboxStats
		at   time.Time
	)
	read := func() store.InboxStats {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < inboxStatsFor {
			return last
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := s.store.InboxStats(ctx)
		if err != nil {
			s.log.Debug("metrics: reading the inbox figures", "err", err)
			return last
		}
		last, at = st, time.Now()
		return last
	}
	s.metrics.Gauge("herald_inbox_pending_messages", "Inbox entries of direct pushes waiting for their device's ack (fan-out pushes keep none).",
		func() float64 { return float64(read().Entries) })
	s.metrics.Gauge("herald_inbox_oldest_pending_age_seconds", "Age of the oldest inbox entry still waiting; 0 when none waits.", func() float64 {
		st := read()
		if st.Entries == 0 || st.Oldest.IsZero() {
			return 0
		}
		return time.Since(st.Oldest).Seconds()
	})
}

// inboxStatsFor is how long one reading of the inbox figures serves.
const inboxStatsFor = 10 * time.Second
