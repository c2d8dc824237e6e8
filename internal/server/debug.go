package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
)

// startDebug serves Go's profiler on its own listener, never on the public
// one: profiles reveal internals, so an operator binds it to loopback or a
// private interface when needed (--debug-addr).
func (s *Server) startDebug() error {
	if s.cfg.DebugAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.debug = &http.Server{Handler: mux}
	go s.debug.Serve(ln)
	s.log.Info("profiler listening", "addr", ln.Addr().String())
	return nil
}
