package server

import (
	"net/http"

	"github.com/heraldpush/herald/internal/gateway/mozpush"
	"github.com/heraldpush/herald/internal/gateway/sse"
	"github.com/heraldpush/herald/internal/gateway/ws"
	"github.com/heraldpush/herald/web"
)

// mountWeb adds the browser-facing routes: the WebSocket and SSE device
// transports, /client.js, /demo and /mozpush.
func (s *Server) mountWeb(mux *http.ServeMux) {
	ws.New(s.reg, s.deliv, ws.Options{MaxAckIDs: s.cfg.MaxBatch, MaxPerDevice: s.cfg.MaxConnsPerDevice, Log: s.log}).Register(mux)
	sse.New(s.reg, s.deliv, sse.Options{MaxPerDevice: s.cfg.MaxConnsPerDevice, Log: s.log}).Register(mux)
	web.Register(mux, s.info.AppKey)
	mozpush.New(s.reg, s.deliv, s.webpush, mozpush.Options{
		DefaultApp: s.info.AppKey, RegisterRate: s.cfg.RegisterRate, RegisterBurst: s.cfg.RegisterBurst, Log: s.log,
	}).Register(mux)
}
