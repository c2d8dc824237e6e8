// Package exhaust attacks the real herald binary with connections: one
// address over its cap, many addresses holding silent connections under a
// lowered file limit. Each test shows the attack refused or contained while
// a legitimate device registers, connects over MQTT with Paho and receives a
// push, and that the server's memory returns to its baseline after.
package exhaust

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// node is a running `herald serve` and what the tests need of it.
type node struct {
	*heraldtest.Server
	t        *testing.T
	mqttAddr string // host:port of the MQTT TCP listener
	// hc is a legitimate client's: every request on a fresh connection, so
	// that each one shows a newcomer getting in.
	hc *http.Client
}

func start(t *testing.T, launcher []string, args ...string) *node {
	t.Helper()
	srv := heraldtest.StartUnder(t, launcher, t.TempDir(), append([]string{"--mqtt", "127.0.0.1:0"}, args...)...)
	if srv.Secret == "" || srv.MQTTURL == "" {
		t.Fatalf("the banner gave no master secret or MQTT URL: %s", srv.Log)
	}
	return &node{Server: srv, t: t, mqttAddr: strings.TrimPrefix(srv.MQTTURL, "mqtt://"),
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// eventually runs f until it succeeds or d passes. Under an attack a
// legitimate client's connection may be one of those closed to make room;
// it tries again, as a real client does.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *node) healthz() error {
	resp, err := n.hc.Get(n.URL + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	return nil
}

func (n *node) register() *client.Registration {
	n.t.Helper()
	var reg *client.Registration
	eventually(n.t, 30*time.Second, "registering a device", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		reg, err = client.Register(ctx, n.hc, n.URL, client.RegisterRequest{AppKey: n.AppKey, Platform: "android"})
		return err
	})
	return reg
}

// push sends text to one device with the master secret and returns the
// message ID.
func (n *node) push(regID, text string) string {
	n.t.Helper()
	var id string
	eventually(n.t, 30*time.Second, "pushing", func() error {
		body := fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"text":%q}}`, regID, text)
		req, _ := http.NewRequest("POST", n.URL+"/v1/push", strings.NewReader(body))
		req.SetBasicAuth(n.AppKey, n.Secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := n.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			MsgID string `json:"msg_id"`
		}
		if resp.StatusCode != http.StatusAccepted {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("push: %s %s", resp.Status, b)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		id = out.MsgID
		return nil
	})
	return id
}

// device is a registered device connected over MQTT with Paho.
type device struct {
	reg  *client.Registration
	c    paho3.Client
	lost chan error     // the connection was lost
	msgs chan string    // IDs of the messages received
	mu   sync.Mutex     // guards seen
	seen map[string]int // times each ID arrived
}

// connect connects reg's device over MQTT 3.1.1 (Paho) to broker and
// subscribes it, trying again while the server closes its connection
// before the CONNACK (a newcomer can be one of the unauthenticated
// connections closed to make room).
func connect(t *testing.T, broker string, reg *client.Registration) *device {
	t.Helper()
	d := &device{reg: reg, lost: make(chan error, 1), msgs: make(chan string, 100), seen: map[string]int{}}
	eventually(t, 30*time.Second, "connecting over MQTT", func() error {
		opts := paho3.NewClientOptions().AddBroker(broker).SetClientID(reg.RegistrationID).
			SetUsername(reg.RegistrationID).SetPassword(reg.DeviceSecret).SetProtocolVersion(4).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
			SetConnectionLostHandler(func(_ paho3.Client, err error) {
				select {
				case d.lost <- err:
				default:
				}
			})
		c := paho3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			return fmt.Errorf("connect: %v", tok.Error())
		}
		tok := c.Subscribe("devices/"+reg.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) {
			var msg struct {
				ID string `json:"id"`
			}
			json.Unmarshal(m.Payload(), &msg)
			d.mu.Lock()
			d.seen[msg.ID]++
			d.mu.Unlock()
			d.msgs <- msg.ID
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			return fmt.Errorf("subscribe: %v", tok.Error())
		}
		d.c = c
		return nil
	})
	t.Cleanup(func() { d.c.Disconnect(100) })
	return d
}

// receive waits for message id.
func (d *device) receive(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-d.msgs:
			if got == id {
				return
			}
		case err := <-d.lost:
			t.Fatalf("device %s lost its MQTT connection waiting for %s: %v", d.reg.RegistrationID, id, err)
		case <-timeout:
			t.Fatalf("device %s did not receive %s in 30 s", d.reg.RegistrationID, id)
		}
	}
}

// stillConnected fails if the device's connection was lost.
func (d *device) stillConnected(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.lost:
		t.Fatalf("device %s lost its MQTT connection: %v", d.reg.RegistrationID, err)
	default:
	}
	if !d.c.IsConnectionOpen() {
		t.Fatalf("device %s is not connected", d.reg.RegistrationID)
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// hostPort is the host:port of an http:// URL.
func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// httpProbe asks GET /healthz from src on a connection of its own and
// returns the answer's status, its error code (for a JSON error) and
// whether it said Connection: close. A connection reset before any answer
// is status 0.
func httpProbe(t *testing.T, src, base string) (status int, code string, closes bool) {
	t.Helper()
	c, err := dialFrom(src, hostPort(base))
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return 0, "", false
		}
		t.Fatalf("dialing from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", false
	}
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code, resp.Close
}

// mqttAdmitted tells whether an MQTT connection from src is served: it
// sends a CONNECT with a wrong password, which an admitted connection has
// refused with a CONNACK; a refused connection is reset with no answer.
func mqttAdmitted(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return false
		}
		t.Fatalf("dialing from %s: %v", src, err)
	}
	defer c.Close()
	connect, _ := (&packet.Connect{ClientID: "probe", Username: "probe", Password: []byte("wrong"), KeepAlive: 60, CleanStart: true}).AppendTo(nil, packet.Version311)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(connect); err != nil {
		return false
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("an MQTT connection from %s was neither answered nor closed in 10 s", src)
		}
		return false
	}
	if ack[0] != 0x20 {
		t.Fatalf("the answer to a CONNECT from %s is % x, not a CONNACK", src, ack)
	}
	return true
}

// rss is the process's resident set in KiB.
func rss(t *testing.T, pid int) int {
	t.Helper()
	return procStatus(t, pid, "VmRSS:")
}

func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("%s %q: %v", field, line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// openFDs is the number of descriptors the process has open.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// closeAll closes every connection of cs.
func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}
