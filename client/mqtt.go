package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// This file is a small MQTT 3.1.1 client, just what a Herald device needs:
// CONNECT with its credentials, SUBSCRIBE to devices/{registration_id} at
// QoS 1, PUBLISH in, PUBACK out, PINGREQ to keep the connection alive. It is
// hand-written rather than built on Paho because client/ must stand alone
// (no Herald internals) and stay small for the apps that embed it: a general
// client brings stores, routers and a publish path a device never uses.
// 3.1.1 is enough: Herald speaks it on every listener, and nothing a device
// needs here is 5.0-only.

// ErrRefused is returned when the server refuses the connection for good
// (bad credentials, a deleted device, a refused subscription): reconnecting
// will not help.
var ErrRefused = errors.New("client: connection refused by the server")

// errHandler ends a connection whose handler failed a message, so that the
// message, left unacknowledged, comes again on the next connection rather
// than holding one of the server's in-flight slots for good.
var errHandler = errors.New("client: handler failed a message")

// mqttKeepAlive is the keepalive the client asks for, in seconds: long, for
// mobile radios, and well under the server's default maximum (20 min).
const mqttKeepAlive = 60

// ListenMQTT holds an MQTT connection to server until ctx ends, calling
// handle once per new message and acknowledging it (PUBACK) after handle
// returns nil. server is the URL the registration answer gave
// (Registration.MQTTURL): mqtt://host:port, mqtts://host:port (TLS), or
// ws:// or wss:// for MQTT over WebSocket (Herald's /mqtt). TLS uses the
// settings of the Device's HTTP client transport when it has any.
//
// Dropped connections are re-established with jittered exponential
// back-off. A message is acknowledged only after handle returns nil; if
// handle fails it, the connection is dropped and the message comes again on
// the next one. Messages that come again (at-least-once delivery) are
// acknowledged without calling handle twice. A handler returning ErrStop
// ends ListenMQTT, with nil, after that message is acknowledged. A refusal
// (ErrRefused) ends it at once.
func (d *Device) ListenMQTT(ctx context.Context, server string, handle func(Message) error) error {
	return d.ListenMQTTAny(ctx, []string{server}, handle)
}

// ListenMQTTAny is ListenMQTT over a list of MQTT URLs, the nodes of one
// cluster, starting with the first. A connection that drops or cannot be
// made moves on to the next URL: at once after a failed dial or handshake,
// after the short jitter of a reconnect when a connection that worked
// drops. Back-off grows only when every URL of the list has failed in turn.
// A handler failure reconnects to the same URL, as ListenMQTT does.
func (d *Device) ListenMQTTAny(ctx context.Context, servers []string, handle func(Message) error) error {
	if len(servers) == 0 {
		return errors.New("client: ListenMQTTAny needs at least one MQTT URL")
	}
	dials := make([]func(context.Context) (net.Conn, error), len(servers))
	for i, s := range servers {
		dial, err := d.mqttDialer(s)
		if err != nil {
			return err
		}
		dials[i] = dial
	}
	return d.listenMQTT(ctx, dials, handle)
}

// listenMQTT is ListenMQTTAny with the URLs made dialers.
func (d *Device) listenMQTT(ctx context.Context, dials []func(context.Context) (net.Conn, error), handle func(Message) error) error {
	backoff := newBackoff(250*time.Millisecond, 30*time.Second)
	i := 0
	misses := 0 // attempts in a row that got no CONNACK
	for ctx.Err() == nil {
		connected, err := d.mqttSession(ctx, dials[i], handle)
		switch {
		case errors.Is(err, ErrStop):
			return nil
		case errors.Is(err, ErrRefused):
			return err
		case errors.Is(err, errHandler):
			// The server did its part; a handler that keeps failing
			// keeps backing off.
			misses = 0
			if !sleep(ctx, backoff.next()) {
				return ctx.Err()
			}
			continue
		}
		i = (i + 1) % len(dials)
		if connected {
			// A connection that worked and then dropped is retried soon,
			// on the next node, but not by every device of a dead node at
			// the same instant.
			misses = 0
			backoff.reset()
			if !sleep(ctx, backoff.next()) {
				break
			}
			continue
		}
		if misses++; misses%len(dials) == 0 && !sleep(ctx, backoff.next()) {
			break
		}
	}
	return ctx.Err()
}

// mqttDialer returns how to open a connection to server.
func (d *Device) mqttDialer(server string) (func(context.Context) (net.Conn, error), error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("client: MQTT URL %q: want mqtt://host:port, mqtts://, ws:// or wss://", server)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		return func(ctx context.Context) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "tcp", u.Host)
		}, nil
	case "mqtts", "ssl", "tls":
		return func(ctx context.Context) (net.Conn, error) {
			dialer := tls.Dialer{Config: d.tlsConfig()}
			return dialer.DialContext(ctx, "tcp", u.Host)
		}, nil
	case "ws", "wss":
		return func(ctx context.Context) (net.Conn, error) {
			c, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: d.http, Subprotocols: []string{"mqtt"}})
			if err != nil {
				return nil, err
			}
			// The conn must outlive the dial's context; the session
			// closes it.
			return websocket.NetConn(context.Background(), c, websocket.MessageBinary), nil
		}, nil
	}
	return nil, fmt.Errorf("client: MQTT URL %q: scheme must be mqtt, mqtts, ws or wss", server)
}

// tlsConfig is the TLS configuration of the Device's HTTP client, so that
// a custom root CA given for HTTPS serves MQTTS too.
func (d *Device) tlsConfig() *tls.Config {
	if t, ok := d.http.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		return t.TLSClientConfig.Clone()
	}
	return nil
}

// mqttSession runs one connection; connected reports whether it got as far
// as a successful CONNACK.
func (d *Device) mqttSession(ctx context.Context, dial func(context.Context) (net.Conn, error), handle func(Message) error) (connected bool, err error) {
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	nc, err := dial(dialCtx)
	cancel()
	if err != nil {
		return false, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := nc.Write(b)
		return err
	}
	if err := write(connectPacket(d.reg.RegistrationID, d.reg.DeviceSecret, mqttKeepAlive)); err != nil {
		return false, err
	}
	r := bufio.NewReaderSize(nc, 4096)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, body, err := readPacket(r)
	if err != nil {
		return false, err
	}
	if first>>4 != 2 || len(body) != 2 {
		return false, fmt.Errorf("client: expected CONNACK, got packet type %d", first>>4)
	}
	switch rc := body[1]; rc {
	case 0:
	case 1, 2, 4, 5: // bad protocol version, identifier, credentials; not authorized
		return false, fmt.Errorf("%w (CONNACK return code %d)", ErrRefused, rc)
	default: // 3, server unavailable: try again later
		return false, fmt.Errorf("client: CONNACK return code %d", rc)
	}
	if err := write(subscribePacket(1, "devices/"+d.reg.RegistrationID)); err != nil {
		return true, err
	}

	// The pinger lives as long as this connection.
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(mqttKeepAlive * time.Second / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if write([]byte{0xC0, 0}) != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	for {
		// The server answers every PINGREQ, so two keepalives of silence
		// mean the connection is dead.
		nc.SetReadDeadline(time.Now().Add(2 * mqttKeepAlive * time.Second))
		first, body, err := readPacket(r)
		if err != nil {
			return true, err
		}
		switch first >> 4 {
		case 9: // SUBACK
			if len(body) < 3 || body[2] >= 0x80 {
				return true, fmt.Errorf("%w: subscription refused", ErrRefused)
			}
		case 3: // PUBLISH
			qos := first >> 1 & 3
			pid, payload, err := parsePublish(body, qos)
			if err != nil {
				return true, err
			}
			var m Message
			if err := json.Unmarshal(payload, &m); err != nil {
				return true, fmt.Errorf("client: message is not JSON: %w", err)
			}
			stopping := false
			if !d.seen.has(m.ID) {
				if err := handle(m); errors.Is(err, ErrStop) {
					stopping = true
				} else if err != nil {
					return true, fmt.Errorf("%w: %w", errHandler, err)
				}
				d.seen.add(m.ID)
			}
			if qos > 0 {
				if err := write([]byte{0x40, 2, byte(pid >> 8), byte(pid)}); err != nil {
					return true, err
				}
			}
			if stopping {
				write([]byte{0xE0, 0}) // DISCONNECT
				return true, ErrStop
			}
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendRemaining(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// connectPacket is a 3.1.1 CONNECT with the device's credentials: client
// identifier and user name its registration ID, password its secret, clean
// session (the inbox is kept by the server whatever the flag says).
func connectPacket(id, secret string, keepAlive uint16) []byte {
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4, 0xC2) // level 4 (3.1.1); user name, password, clean session
	v = binary.BigEndian.AppendUint16(v, keepAlive)
	v = appendString(v, id)
	v = appendString(v, id)
	v = appendString(v, secret)
	return append(appendRemaining([]byte{0x10}, len(v)), v...)
}

func subscribePacket(pid uint16, topic string) []byte {
	v := binary.BigEndian.AppendUint16(nil, pid)
	v = appendString(v, topic)
	v = append(v, 1)
	return append(appendRemaining([]byte{0x82}, len(v)), v...)
}

// maxPacket bounds a packet from the server; Herald's messages are a few
// KiB.
const maxPacket = 1 << 20

// readPacket reads one packet and returns its first byte (type and flags)
// and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			break
		}
		if mult *= 128; i == 3 {
			return 0, nil, errors.New("client: malformed remaining length")
		}
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("client: packet of %d bytes is too large", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}

// parsePublish reads a PUBLISH body: topic, the packet ID at QoS 1 and 2,
// payload.
func parsePublish(body []byte, qos byte) (uint16, []byte, error) {
	if len(body) < 2 {
		return 0, nil, errors.New("client: short PUBLISH")
	}
	rest := body[2:]
	tl := int(binary.BigEndian.Uint16(body))
	if len(rest) < tl {
		return 0, nil, errors.New("client: short PUBLISH")
	}
	rest = rest[tl:]
	if qos == 0 {
		return 0, rest, nil
	}
	if len(rest) < 2 {
		return 0, nil, errors.New("client: short PUBLISH")
	}
	return binary.BigEndian.Uint16(rest), rest[2:], nil
}
