package server

import "net/http"

// mountWeb adds the browser-facing routes: the WebSocket and SSE device
// transports, /client.js, /demo and /mozpush.
func (s *Server) mountWeb(mux *http.ServeMux) {}
