package exhaust

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// perAddrDefault is --max-conns-per-addr's default, which these tests run
// with.
const perAddrDefault = 1000

// fillHTTP opens n keep-alive connections from src, each confirmed by an
// answer to GET /healthz (so each is known to be admitted and counted),
// and returns them, idle and open.
func fillHTTP(t *testing.T, src, base string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := dialFrom(src, hostPort(base))
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = c
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("connection %d: %s", i, resp.Status)
			}
			c.SetDeadline(time.Time{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			closeAll(conns)
			t.Fatalf("filling %s's share over HTTP, connection %d of %d: %v", src, i+1, n, err)
		}
	}
	return conns
}

// silent opens n connections from src to addr that send nothing. The
// accept loop takes a listener's connections in order, so once a later
// probe is answered these are counted.
func silent(t *testing.T, src, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := dialFrom(src, addr)
		if err != nil {
			closeAll(conns)
			t.Fatalf("silent connection %d of %d from %s: %v", i+1, n, src, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// TestOneAddressOverItsCap: one address holds as many connections as its
// cap allows, over HTTP and over MQTT; its next connection is refused on
// both listeners (HTTP with a canned 503 too_many_connections), while a
// device connected before goes on receiving and a new device from another
// address registers, connects over MQTT and receives a push. The address's
// slots come back as its connections close.
func TestOneAddressOverItsCap(t *testing.T) {
	// Silent MQTT connections are held for the test's length, not the
	// default 5 s CONNECT timeout.
	n := start(t, nil, "--mqtt-connect-timeout", "2m")
	before := connect(t, "tcp://"+n.mqttAddr, n.register())

	// 127.0.0.2 fills its share over HTTP.
	held := fillHTTP(t, "127.0.0.2", n.URL, perAddrDefault)
	defer func() { closeAll(held) }()
	status, code, closes := httpProbe(t, "127.0.0.2", n.URL)
	if status != http.StatusServiceUnavailable || code != "too_many_connections" || !closes {
		t.Fatalf("HTTP connection %d from one address: status %d, code %q, Connection: close %v; want 503 too_many_connections, close",
			perAddrDefault+1, status, code, closes)
	}
	if mqttAdmitted(t, "127.0.0.2", n.mqttAddr) {
		t.Fatal("an MQTT connection from an address that holds its cap over HTTP was served")
	}

	// 127.0.0.3 fills its share with silent MQTT connections.
	quiet := silent(t, "127.0.0.3", n.mqttAddr, perAddrDefault)
	defer func() { closeAll(quiet) }()
	if mqttAdmitted(t, "127.0.0.3", n.mqttAddr) {
		t.Fatalf("MQTT connection %d from one address was served", perAddrDefault+1)
	}
	if status, code, _ := httpProbe(t, "127.0.0.3", n.URL); status != http.StatusServiceUnavailable || code != "too_many_connections" {
		t.Fatalf("an HTTP connection from an address that holds its cap over MQTT: status %d, code %q", status, code)
	}

	// Meanwhile 127.0.0.1 is served: health, a new device, pushes to both.
	if err := n.healthz(); err != nil {
		t.Fatal(err)
	}
	during := connect(t, "tcp://"+n.mqttAddr, n.register())
	during.receive(t, n.push(during.reg.RegistrationID, "during the attack"))
	before.receive(t, n.push(before.reg.RegistrationID, "to the device connected before"))
	before.stillConnected(t)

	// Closing connections gives their slots back, to either listener.
	closeAll(held[:10])
	eventually(t, 10*time.Second, "127.0.0.2 served again after closing some connections", func() error {
		if status, _, _ := httpProbe(t, "127.0.0.2", n.URL); status != http.StatusOK {
			return fmt.Errorf("status %d", status)
		}
		return nil
	})
	closeAll(quiet[:10])
	eventually(t, 10*time.Second, "127.0.0.3 served again over MQTT", func() error {
		if !mqttAdmitted(t, "127.0.0.3", n.mqttAddr) {
			return fmt.Errorf("still refused")
		}
		return nil
	})
}

// TestNoCapWhenZero: --max-conns-per-addr 0 lifts the cap.
func TestNoCapWhenZero(t *testing.T) {
	n := start(t, nil, "--max-conns-per-addr", "0")
	held := fillHTTP(t, "127.0.0.4", n.URL, perAddrDefault+50)
	defer closeAll(held)
	if status, _, _ := httpProbe(t, "127.0.0.4", n.URL); status != http.StatusOK {
		t.Fatalf("with no cap, connection %d from one address: status %d", perAddrDefault+51, status)
	}
}
