package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/heraldpush/herald/internal/config"
)

// ErrTLS is a certificate or key that cannot be used.
var ErrTLS = errors.New("server: tls")

// loadTLS reads --tls-cert and --tls-key once for every TLS listener of the
// node: HTTPS on the HTTP listener and MQTTS share them. It returns nil
// when they are not set.
func loadTLS(cfg config.Config) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("%w: tls-cert %s with tls-key %s: %v", ErrTLS, cfg.TLSCert, cfg.TLSKey, err)
	}
	// TLS 1.2 is the floor both listeners keep: what Mosquitto and nginx
	// accept by default, and every client of the last decade speaks it.
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// secureHTTP makes ln serve HTTPS when the node has a certificate, and
// returns it unchanged otherwise. HTTP/2 is offered by ALPN: net/http
// serves it on the connections whose negotiated protocol is h2, which it
// can see only because Accept returns a *tls.Conn. So TLS must be the
// outermost layer: a cap on connections wraps ln before it comes here.
// WebSocket upgrades (/mqtt, /v1/inbox/ws, /mozpush) stay on HTTP/1.1,
// which clients choose for them.
func (s *Server) secureHTTP(ln net.Listener) net.Listener {
	if s.tls == nil {
		return ln
	}
	c := s.tls.Clone()
	c.NextProtos = []string{"h2", "http/1.1"}
	return tls.NewListener(ln, c)
}

// httpURL is the base URL devices and providers reach the HTTP listener
// at: --public-url, else the listener's own address with https when it
// serves TLS. Every other URL the node hands out derives from it.
func (s *Server) httpURL() string {
	if u := s.cfg.PublicURL; u != "" {
		if s.tls != nil && strings.HasPrefix(u, "http://") {
			s.log.Warn("the HTTP listener serves only HTTPS but --public-url says http://; clients will fail unless a proxy in front translates",
				"public_url", u)
		}
		return u
	}
	scheme := "http://"
	if s.tls != nil {
		scheme = "https://"
	}
	return scheme + reachable(s.httpLn.Addr())
}

// wsURL is the WebSocket URL of path on the HTTP listener whose base URL
// is base: wss:// under https://, ws:// under http://.
func wsURL(base, path string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest + path
	}
	return "ws://" + strings.TrimPrefix(base, "http://") + path
}

// deviceMQTTURL is the MQTT address a registration answer gives: MQTT over
// TLS when it is on, since a device secret that reached the device over
// HTTPS should not then cross in clear; else plain MQTT; else none (the
// device polls). A device may still dial any listener the node has.
func (s *Server) deviceMQTTURL() string {
	if s.info.MQTTSURL != "" {
		return s.info.MQTTSURL
	}
	return s.info.MQTTURL
}
