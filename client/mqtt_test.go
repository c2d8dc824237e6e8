package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// The MQTT client against a scripted broker, for what a real server will
// not do on cue: drop the connection after a delivery, redeliver with DUP,
// refuse. Against Herald itself the client is tested in server_test.go,
// internal/server and test/e2e.

// bconn is the broker's side of one client connection.
type bconn struct {
	nc net.Conn
	r  *bufio.Reader
}

// expect reads the next packet, which must be of type typ.
func (b *bconn) expect(typ byte) (byte, []byte, error) {
	b.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, body, err := readPacket(b.r)
	if err != nil {
		return 0, nil, fmt.Errorf("waiting for packet type %d: %w", typ, err)
	}
	if first>>4 != typ {
		return 0, nil, fmt.Errorf("got packet type %d, want %d", first>>4, typ)
	}
	return first, body, nil
}

// handshake accepts the CONNECT of registration r1/s1 and its SUBSCRIBE.
func (b *bconn) handshake() error {
	_, body, err := b.expect(1)
	if err != nil {
		return err
	}
	want := connectPacket("r1", "s1", mqttKeepAlive)
	if !bytes.Equal(body, want[2:]) {
		return fmt.Errorf("CONNECT body % x, want % x", body, want[2:])
	}
	b.nc.Write([]byte{0x20, 2, 0, 0})
	if _, body, err = b.expect(8); err != nil {
		return err
	}
	if want := subscribePacket(1, "devices/r1"); !bytes.Equal(body, want[2:]) {
		return fmt.Errorf("SUBSCRIBE body % x, want % x", body, want[2:])
	}
	_, err = b.nc.Write([]byte{0x90, 3, 0, 1, 1})
	return err
}

// publish sends message id at QoS 1 (or 0 when pid is 0).
func (b *bconn) publish(pid uint16, id string, dup bool) {
	v := appendString(nil, "devices/r1")
	first := byte(0x30)
	if pid != 0 {
		first |= 0x02
		v = append(v, byte(pid>>8), byte(pid))
	}
	if dup {
		first |= 0x08
	}
	v = append(v, `{"id":"`+id+`"}`...)
	b.nc.Write(append(appendRemaining([]byte{first}, len(v)), v...))
}

// puback reads a PUBACK, which must be for pid.
func (b *bconn) puback(pid uint16) error {
	_, body, err := b.expect(4)
	if err != nil {
		return err
	}
	if len(body) != 2 || uint16(body[0])<<8|uint16(body[1]) != pid {
		return fmt.Errorf("PUBACK % x, want packet %d", body, pid)
	}
	return nil
}

// closed waits for the client to close the connection.
func (b *bconn) closed() error {
	b.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, _, err := readPacket(b.r)
	if err == nil {
		return fmt.Errorf("got packet type %d, want the connection closed", first>>4)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the client kept the connection open")
	}
	return nil
}

// scriptedBroker serves one script per connection, in order, and returns
// the broker's URL and a channel with each script's result.
func scriptedBroker(t *testing.T, scripts ...func(*bconn) error) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	results := make(chan error, len(scripts))
	go func() {
		for i, script := range scripts {
			nc, err := ln.Accept()
			if err != nil {
				results <- err
				return
			}
			err = script(&bconn{nc: nc, r: bufio.NewReader(nc)})
			nc.Close()
			if err != nil {
				err = fmt.Errorf("connection %d: %w", i+1, err)
			}
			results <- err
		}
	}()
	return "mqtt://" + ln.Addr().String(), results
}

func listenMQTT(t *testing.T, url string, handle func(Message) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	return d.ListenMQTT(ctx, url, handle)
}

func checkScripts(t *testing.T, results <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-results:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the broker's scripts did not finish")
		}
	}
}

// A message redelivered on the next connection (DUP) is acknowledged but
// not handled twice; handle's ErrStop acknowledges and disconnects.
func TestListenMQTTReconnectsAndDropsDuplicates(t *testing.T) {
	url, results := scriptedBroker(t,
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(1, "m1", false)
			return b.puback(1) // then the connection drops
		},
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(5, "m1", true)
			if err := b.puback(5); err != nil {
				return err
			}
			b.publish(6, "m2", false)
			if err := b.puback(6); err != nil {
				return err
			}
			if _, _, err := b.expect(14); err != nil { // DISCONNECT
				return err
			}
			return nil
		})
	var got []string
	err := listenMQTT(t, url, func(m Message) error {
		got = append(got, m.ID)
		if m.ID == "m2" {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Errorf("ListenMQTT: %v", err)
	}
	if fmt.Sprint(got) != "[m1 m2]" {
		t.Errorf("handled %v, want [m1 m2]", got)
	}
	checkScripts(t, results, 2)
}

// A message the handler fails is not acknowledged: the client drops the
// connection so that it comes again on the next one.
func TestListenMQTTHandlerFailure(t *testing.T) {
	url, results := scriptedBroker(t,
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(1, "m1", false)
			return b.closed()
		},
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(1, "m1", true)
			return b.puback(1)
		})
	calls := 0
	err := listenMQTT(t, url, func(m Message) error {
		if calls++; calls == 1 {
			return errors.New("not now")
		}
		return ErrStop
	})
	if err != nil || calls != 2 {
		t.Errorf("ListenMQTT: %v after %d calls, want nil after 2", err, calls)
	}
	checkScripts(t, results, 2)
}

func TestListenMQTTQoS0(t *testing.T) {
	url, results := scriptedBroker(t, func(b *bconn) error {
		if err := b.handshake(); err != nil {
			return err
		}
		b.publish(0, "m1", false)
		_, _, err := b.expect(14) // DISCONNECT, with no PUBACK before it
		return err
	})
	var got []string
	err := listenMQTT(t, url, func(m Message) error { got = append(got, m.ID); return ErrStop })
	if err != nil || fmt.Sprint(got) != "[m1]" {
		t.Errorf("ListenMQTT: %v, handled %v; want nil, [m1]", err, got)
	}
	checkScripts(t, results, 1)
}

func TestListenMQTTRefused(t *testing.T) {
	for rc, refused := range map[byte]bool{4: true, 5: true, 3: false} {
		url, results := scriptedBroker(t, func(b *bconn) error {
			if _, _, err := b.expect(1); err != nil {
				return err
			}
			_, err := b.nc.Write([]byte{0x20, 2, 0, rc})
			return err
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
		err := d.ListenMQTT(ctx, url, func(Message) error { return nil })
		cancel()
		if got := errors.Is(err, ErrRefused); got != refused {
			t.Errorf("CONNACK %d: ListenMQTT returned %v; refused for good = %v, want %v", rc, err, got, refused)
		}
		checkScripts(t, results, 1)
	}
}

func TestListenMQTTBadURL(t *testing.T) {
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	for _, u := range []string{"http://h:1", "h:1883", "mqtt://"} {
		if err := d.ListenMQTT(context.Background(), u, nil); err == nil {
			t.Errorf("ListenMQTT(%q) accepted the URL", u)
		}
	}
}

// A message the app marked seen (it came through the device's vendor
// channel) is acknowledged without reaching the handler.
func TestListenMQTTDropsMarkedSeen(t *testing.T) {
	url, results := scriptedBroker(t,
		func(b *bconn) error {
			if err := b.handshake(); err != nil {
				return err
			}
			b.publish(1, "relayed", false)
			if err := b.puback(1); err != nil {
				return err
			}
			b.publish(2, "m2", false)
			if err := b.puback(2); err != nil {
				return err
			}
			_, _, err := b.expect(14) // DISCONNECT
			return err
		})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := NewDevice(Registration{RegistrationID: "r1", DeviceSecret: "s1"}, nil)
	d.MarkSeen("relayed")
	var got []string
	err := d.ListenMQTT(ctx, url, func(m Message) error {
		got = append(got, m.ID)
		return ErrStop
	})
	if err != nil {
		t.Errorf("ListenMQTT: %v", err)
	}
	if fmt.Sprint(got) != "[m2]" {
		t.Errorf("handled %v, want [m2]: the message marked seen was handed over", got)
	}
	checkScripts(t, results, 1)
}
