package server

import (
	"net/http"
	"strings"

	"github.com/heraldpush/herald/internal/apierr"
)

// jsonMisses answers what mux has no route for in the API's JSON error
// shape, as every other error is: 404 not_found for an unknown path, 405
// method_not_allowed (with Allow) for a known path and another method.
// ServeMux writes both in plain text, so its answer is taken and rewritten.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &missRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.code {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			apierr.Write(w, apierr.MethodNotAllowed.With("%s takes %s", r.URL.Path, rec.header.Get("Allow")))
		case http.StatusNotFound:
			apierr.Write(w, apierr.NotFound.With("no route %s %s (GET / lists where to start)", r.Method, r.URL.Path))
		default:
			// A redirect (a path without its trailing slash) and the like.
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.code)
		}
	})
}

// missRecorder keeps the status and headers of ServeMux's own answer.
type missRecorder struct {
	header http.Header
	code   int
}

func (m *missRecorder) Header() http.Header { return m.header }
func (m *missRecorder) WriteHeader(code int) {
	if m.code == 0 {
		m.code = code
	}
}
func (m *missRecorder) Write(b []byte) (int, error) {
	if m.code == 0 {
		m.code = http.StatusOK
	}
	return len(b), nil
}

// index answers GET /: where a person or a script starts.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	links := map[string]string{
		"demo":      s.info.HTTPURL + "/demo",
		"console":   s.info.HTTPURL + "/console/",
		"client_js": s.info.HTTPURL + "/client.js",
		"health":    s.info.HTTPURL + "/readyz",
		"metrics":   s.info.HTTPURL + "/metrics",
		"docs":      "docs/api.md and docs/protocol.md in Herald's repository",
	}
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><meta charset="utf-8"><title>Herald</title>
<h1>Herald</h1><p>A push notification service. Start here:</p><ul>
<li><a href="/demo">/demo</a>: this browser as a device, receiving pushes</li>
<li><a href="/console/">/console/</a>: apps, devices, messages and live figures</li>
<li><a href="/client.js">/client.js</a>: the browser client</li>
<li><a href="/readyz">/readyz</a> and <a href="/metrics">/metrics</a></li>
</ul><p>The API is described in docs/api.md and docs/protocol.md of Herald's repository.</p>
`))
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"service": "herald", "links": links})
}
