package server

import (
	"net/http"
	"strings"

	"github.com/heraldpush/herald/internal/apierr"
)

// misses is mux's catch-all ("/"): what no route takes is answered in the
// API's JSON error shape, as every other error is: 405 method_not_allowed
// (with Allow) for a path that routes take with other methods, else 404
// not_found. As the catch-all it costs a matched request nothing; the
// other methods are tried only for a miss.
func misses(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			if method == r.Method {
				continue
			}
			probe := *r
			probe.Method = method
			if _, pattern := mux.Handler(&probe); pattern != "" && pattern != "/" {
				allow = append(allow, method)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			apierr.Write(w, apierr.MethodNotAllowed.With("%s takes %s", r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		apierr.Write(w, apierr.NotFound.With("no route %s %s (GET / lists where to start)", r.Method, r.URL.Path))
	}
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
