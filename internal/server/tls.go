package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/heraldpush/herald/internal/config"
)

// ErrTLS is a certificate or key that cannot be used.
var ErrTLS = errors.New("server: tls")

// loadTLS reads --tls-cert and --tls-key once for every TLS listener of the
// node: HTTPS on the HTTP listener and MQTTS share them. It returns nil
// when they are not set.
func loadTLS(cfg config.Config) (*tls.Config, *certFiles, error) {
	if cfg.TLSCert == "" {
		return nil, nil, nil
	}
	files := &certFiles{cert: cfg.TLSCert, key: cfg.TLSKey}
	if err := files.load(); err != nil {
		return nil, nil, err
	}
	// TLS 1.2 is the floor both listeners keep: what Mosquitto and nginx
	// accept by default, and every client of the last decade speaks it.
	// The certificate is looked up per handshake, so that a reload (SIGHUP)
	// reaches new connections while open ones keep theirs.
	return &tls.Config{GetCertificate: files.get, MinVersion: tls.VersionTLS12}, files, nil
}

// certFiles is the node's certificate and key, read from their files at
// start and again on each reload.
type certFiles struct {
	cert, key string
	current   atomic.Pointer[tls.Certificate]
}

func (f *certFiles) load() error {
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return fmt.Errorf("%w: tls-cert %s with tls-key %s: %v", ErrTLS, f.cert, f.key, err)
	}
	if len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	f.current.Store(&cert)
	return nil
}

func (f *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return f.current.Load(), nil }

// reloadTLS reads the certificate and key again (SIGHUP). A pair that does
// not load leaves the one in use, so that a half-copied renewal does not
// take HTTPS down.
func (s *Server) reloadTLS() {
	if s.certs == nil && s.mqttsCerts == nil {
		s.log.Info("SIGHUP: no --tls-cert to reload")
		return
	}
	for _, files := range []*certFiles{s.certs, s.mqttsCerts} {
		if files == nil {
			continue
		}
		if err := files.load(); err != nil {
			s.log.Error("SIGHUP: the certificate was not reloaded; the one in use stays", "err", err)
			continue
		}
		leaf := files.current.Load().Leaf
		attrs := []any{"cert", files.cert}
		if leaf != nil {
			attrs = append(attrs, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		}
		s.log.Info("SIGHUP: certificate reloaded; new connections use it", attrs...)
	}
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

// warnPlaintext says, once at start, when a listener serves every network
// interface without TLS: master secrets, device secrets and payloads then
// cross other networks in clear. Loopback, or a proxy that terminates TLS
// (--public-url https://...), is what it is for.
func (s *Server) warnPlaintext() {
	proxied := strings.HasPrefix(s.cfg.PublicURL, "https://")
	if s.tls == nil && !proxied && allInterfaces(s.httpLn.Addr()) {
		s.log.Warn("the HTTP listener serves every interface without TLS: secrets and payloads cross the network in clear; give --tls-cert and --tls-key, put a TLS proxy in front (--public-url https://...), or listen on loopback (--http 127.0.0.1:8080)",
			"http", s.httpLn.Addr().String())
	}
	if s.cfg.MQTTAddr != "" && s.info.MQTTURL != "" && isAllInterfaces(s.cfg.MQTTAddr) {
		s.log.Warn("the MQTT listener serves every interface in plaintext: device secrets cross the network in clear; use --mqtts and turn --mqtt off (--mqtt \"\") where that matters",
			"mqtt", s.cfg.MQTTAddr)
	}
}

func allInterfaces(a net.Addr) bool { return isAllInterfaces(a.String()) }

// isAllInterfaces reports whether a listen address host:port names no
// host (":8080") or an unspecified one (0.0.0.0, ::).
func isAllInterfaces(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
