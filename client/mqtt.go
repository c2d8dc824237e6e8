package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// This file is a small MQTT 3.1.1 client, just what a Herald device needs:
// CONNECT with its credentials, SUBSCRIBE to devices/{registration_id} at
// QoS 1, PUBLISH in, PUBACK out, PINGREQ to keep the connection alive. It is
// hand-written because client/ must stand alone (no Herald internals) and a
// general client library would bring far more than these few packets.

// ErrRefused is returned when the server refuses the connection for good
// (bad credentials, a deleted device): reconnecting will not help.
var ErrRefused = errors.New("client: connection refused by the server")

// ListenMQTT holds an MQTT connection to server (mqtt://host:port) until
// ctx ends, calling handle once per new message and acknowledging (PUBACK)
// each after handle returns nil. Dropped connections are re-established
// with jittered exponential back-off; messages not acknowledged come again
// and duplicates are dropped by id. A handler returning ErrStop ends
// ListenMQTT after that message is acknowledged.
func (d *Device) ListenMQTT(ctx context.Context, server string, handle func(Message) error) error {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "mqtt" || u.Host == "" {
		return fmt.Errorf("client: MQTT URL %q: want mqtt://host:port", server)
	}
	backoff := newBackoff(250*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		connected, err := d.mqttSession(ctx, u.Host, handle)
		if errors.Is(err, ErrStop) {
			return nil
		}
		if errors.Is(err, ErrRefused) {
			return err
		}
		if connected {
			backoff.reset()
		}
		if !sleep(ctx, backoff.next()) {
			break
		}
	}
	return ctx.Err()
}

// mqttSession runs one connection; connected reports whether it got as far
// as a successful CONNACK.
func (d *Device) mqttSession(ctx context.Context, addr string, handle func(Message) error) (connected bool, err error) {
	var dialer net.Dialer
	nc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	const keepAlive = 60 // seconds; a mobile-friendly default
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := nc.Write(b)
		return err
	}
	if err := write(connectPacket(d.reg.RegistrationID, d.reg.DeviceSecret, keepAlive)); err != nil {
		return false, err
	}
	r := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	typ, body, err := readPacket(r)
	if err != nil {
		return false, err
	}
	if typ != 2 || len(body) < 2 {
		return false, fmt.Errorf("client: expected CONNACK, got packet type %d", typ)
	}
	if rc := body[1]; rc != 0 {
		if rc == 4 || rc == 5 {
			return false, fmt.Errorf("%w (CONNACK return code %d)", ErrRefused, rc)
		}
		return false, fmt.Errorf("client: CONNACK return code %d", rc)
	}
	if err := write(subscribePacket(1, "devices/"+d.reg.RegistrationID)); err != nil {
		return true, err
	}

	pinger := time.NewTicker(keepAlive * time.Second / 2)
	defer pinger.Stop()
	go func() {
		for {
			select {
			case <-pinger.C:
				if write([]byte{0xC0, 0}) != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		nc.SetReadDeadline(time.Now().Add(keepAlive * 2 * time.Second))
		typ, body, err := readPacket(r)
		if err != nil {
			return true, err
		}
		switch typ {
		case 9: // SUBACK
			if len(body) >= 3 && body[2] >= 0x80 {
				return true, fmt.Errorf("%w: subscription refused", ErrRefused)
			}
		case 3: // PUBLISH, QoS 1 (the flags were in the first byte; Herald always sends QoS 1)
			pid, payload, err := parsePublish(body)
			if err != nil {
				return true, err
			}
			var m Message
			if err := json.Unmarshal(payload, &m); err != nil {
				return true, fmt.Errorf("client: message is not JSON: %w", err)
			}
			var stopping bool
			if !d.seen.has(m.ID) {
				err := handle(m)
				if errors.Is(err, ErrStop) {
					stopping = true
				} else if err != nil {
					continue // not acknowledged: it comes again
				}
				d.seen.add(m.ID)
			}
			if err := write([]byte{0x40, 2, byte(pid >> 8), byte(pid)}); err != nil {
				return true, err
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

// readPacket reads one packet and returns its type and body.
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
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("client: packet of %d bytes is too large", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return first >> 4, body, nil
}

// parsePublish reads a QoS 1 PUBLISH body: topic, packet ID, payload.
func parsePublish(body []byte) (uint16, []byte, error) {
	if len(body) < 2 {
		return 0, nil, errors.New("client: short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl+2 {
		return 0, nil, errors.New("client: short PUBLISH")
	}
	pid := binary.BigEndian.Uint16(body[2+tl:])
	return pid, body[2+tl+2:], nil
}
