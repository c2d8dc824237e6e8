package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/gateway/mqtt"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/netpoll"
)

// mqttNode is the MQTT side of a node: one gateway (the protocol) driven by
// one engine, over the TCP listener (epoll), the TLS listener and /mqtt.
type mqttNode struct {
	gw     *mqtt.Gateway
	engine *netpoll.Engine
	tcp    net.Listener // nil when --mqtt is empty
	tls    net.Listener // nil when --mqtts is empty

	maxPacket int
}

// buildMQTT creates the MQTT gateway and binds its listeners (TCP, TLS) and
// its WebSocket route on mux, setting s.info.MQTTURL.
func (s *Server) buildMQTT(mux *http.ServeMux) error {
	cfg := s.cfg
	gw := mqtt.New(s.reg, s.deliv, mqtt.Options{
		MaxPacketSize: cfg.MQTTMaxPacket, ConnectTimeout: cfg.MQTTConnectTimeout,
		MaxKeepAlive: cfg.MQTTMaxKeepAlive, Window: cfg.MQTTWindow, ServerReference: cfg.MQTTServerReference, Log: s.log,
		// PostgreSQL's reads are round trips, which must not hold a poller.
		Offload: cfg.PostgresURL != "",
	})
	engine, err := netpoll.New(gw, netpoll.Options{Logger: s.log, Gate: gate{s.limits}})
	if err != nil {
		return fmt.Errorf("mqtt engine: %w", err)
	}
	m := &mqttNode{gw: gw, engine: engine, maxPacket: cfg.MQTTMaxPacket}
	if cfg.MQTTAddr != "" {
		if m.tcp, err = net.Listen("tcp", cfg.MQTTAddr); err != nil {
			return fmt.Errorf("mqtt listener: %w", err)
		}
		s.info.MQTTURL = "mqtt://" + reachable(m.tcp.Addr())
	}
	if cfg.MQTTSAddr != "" {
		// Validate made sure the certificate is set; loadTLS read it.
		ln, err := net.Listen("tcp", cfg.MQTTSAddr)
		if err != nil {
			m.closeListeners()
			return fmt.Errorf("mqtts listener: %w", err)
		}
		conf := s.tls
		if s.mqttsCerts != nil {
			conf = s.mqttsTLS
		}
		m.tls = tls.NewListener(ln, conf.Clone())
		s.info.MQTTSURL = "mqtts://" + reachable(ln.Addr())
		m.tls = withSocket(m.tls, ln) // for the engine's accept loop out of descriptors
	}
	s.info.MQTTWSURL = wsURL(s.info.HTTPURL, "/mqtt")
	mux.HandleFunc("GET /mqtt", m.serveWebSocket)
	s.mqtt = m
	return nil
}

// serveWebSocket is MQTT over WebSocket (subprotocol "mqtt"): the
// WebSocket becomes a net.Conn of binary messages and goes through the same
// gateway.
func (m *mqttNode) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(netpoll.SmallBuffers(w, 512), r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		return // Accept has answered
	}
	if c.Subprotocol() != "mqtt" {
		c.Close(websocket.StatusPolicyViolation, "the subprotocol must be mqtt")
		return
	}
	// A message may carry several MQTT packets; the gateway enforces the
	// packet limit itself.
	c.SetReadLimit(int64(max(2*m.maxPacket, 64<<10)))
	// Served on a goroutine of its own, with a context of its own, so that
	// net/http's state for this request (its goroutine, request and
	// buffers) is freed when the handler returns, not kept while the
	// device stays connected.
	// The HTTP listener admitted the connection: its ticket goes along,
	// for the CONNECT to mark authenticated.
	pass := passOf(netlimit.FromContext(r.Context()))
	go m.engine.ServeConnWith(websocket.NetConn(context.Background(), c, websocket.MessageBinary), pass)
}

// serveMQTT starts serving the MQTT listeners; a listener that fails sends
// its error to errc.
func (s *Server) serveMQTT(errc chan<- error) {
	m := s.mqtt
	if m == nil {
		return
	}
	serve := func(name string, run func() error) {
		go func() {
			if err := run(); err != nil && !errors.Is(err, netpoll.ErrEngineClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if m.tcp != nil {
		serve("mqtt", func() error { return m.engine.Serve(m.tcp) })
	}
	if m.tls != nil {
		// The engine serves a TLS listener with accept plus ServeConn,
		// and backs off on EMFILE instead of failing the node.
		serve("mqtts", func() error { return m.engine.Serve(m.tls) })
	}
}

// stopMQTT closes the MQTT listeners and tells every MQTT client the server
// is going away.
func (s *Server) stopMQTT() {
	m := s.mqtt
	if m == nil {
		return
	}
	m.closeListeners()
	m.gw.Shutdown()
	m.engine.Shutdown()
}

func (m *mqttNode) closeListeners() {
	if m.tcp != nil {
		m.tcp.Close()
	}
	if m.tls != nil {
		m.tls.Close()
	}
}
