package server

import (
	"net/http"
	"strings"
)

// deviceCORS lets browser pages on any origin use the device-facing API
// (registration, the inbox, acks, Web Push subscriptions), as /client.js
// does from an app's own site. These calls carry device credentials in the
// Authorization header, never cookies, so allowing every origin exposes
// nothing a page could not already send. Provider and admin calls get no
// CORS headers: a master secret does not belong in a browser.
func deviceCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == "" || !deviceFacing(r.URL.Path) || listsDevices(r) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "Location, TTL")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func deviceFacing(path string) bool {
	return path == "/v1/devices" || path == "/v1/inbox" || strings.HasPrefix(path, "/v1/inbox/") ||
		path == "/v1/webpush/subscriptions" || strings.HasPrefix(path, "/v1/webpush/subscriptions/")
}

// listsDevices reports whether r is GET /v1/devices (or its preflight),
// the provider's listing on the path devices register on: a provider
// call, so not for pages of other origins.
func listsDevices(r *http.Request) bool {
	if r.URL.Path != "/v1/devices" {
		return false
	}
	m := r.Method
	if m == http.MethodOptions {
		m = r.Header.Get("Access-Control-Request-Method")
	}
	return m == http.MethodGet || m == http.MethodHead
}
