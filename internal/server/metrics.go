package server

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/heraldpush/herald/internal/metrics"
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
		if route == "" {
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
