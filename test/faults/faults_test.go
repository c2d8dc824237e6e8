// Package faults runs the real binary against faults of its disk: a full
// file system (a small tmpfs the test fills), a file system that turns
// read-only under it (ext4 on a loop device, remounted read-only by the
// kernel as after an I/O error), a data directory removed while it serves,
// a start on a full disk, and the starts that must be refused. The tests
// mount file systems, so they need root; they skip without it, and fail
// under CI=true, where they must run.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// needRoot skips the test, or fails it under CI=true, when the machine
// does not let it mount file systems.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("under CI=true this test must run, but %s", why)
	}
	t.Skipf("skipped: %s (the test mounts file systems, which needs root)", why)
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and returns
// the directory; it is unmounted when the test ends, after the servers the
// test started have stopped (cleanups run last first).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		needRoot(t, fmt.Sprintf("mount -t tmpfs failed: %v: %s", err, out))
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func unmount(t *testing.T, dir string) {
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		// Lazily, so that one leak does not hold the next run.
		t.Errorf("umount %s: %v: %s", dir, err, out)
		exec.Command("umount", "-l", dir).Run()
	}
}

// fill writes a file in dir until the file system is full and returns its
// path; removing it clears the fault.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{'f'}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	// The last pages: what a 64 KiB write could not take.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	return path
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outcome is the answer to one push.
type outcome struct {
	status  int
	code    string // the error code of a non-202 answer
	id      string // msg_id of a 202
	err     error  // a transport error: never expected
	started time.Time
	ended   time.Time
}

// stream pushes to one device from a few goroutines until stopped,
// recording every answer.
type stream struct {
	srv  *heraldtest.Server
	dev  *client.Registration
	hc   *http.Client
	stop chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	outs []outcome // guarded by mu
}

func startStream(srv *heraldtest.Server, dev *client.Registration, workers int) *stream {
	s := &stream{srv: srv, dev: dev, hc: &http.Client{Timeout: 30 * time.Second}, stop: make(chan struct{})}
	for w := range workers {
		s.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-s.stop:
					return
				default:
				}
				o := s.push(fmt.Sprintf("w%d-%d", w, i))
				s.mu.Lock()
				s.outs = append(s.outs, o)
				s.mu.Unlock()
				if o.status != http.StatusAccepted {
					// Refused pushes come back at once; do not spin on them.
					time.Sleep(2 * time.Millisecond)
				}
			}
		})
	}
	return s
}

func (s *stream) push(tag string) outcome {
	body, _ := json.Marshal(map[string]any{
		"audience": map[string]any{"registration_id": []string{s.dev.RegistrationID}},
		"message":  map[string]string{"tag": tag},
	})
	o := outcome{started: time.Now()}
	req, _ := http.NewRequest("POST", s.srv.URL+"/v1/push", bytes.NewReader(body))
	req.SetBasicAuth(s.srv.AppKey, s.srv.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	o.ended = time.Now()
	if err != nil {
		o.err = err
		return o
	}
	defer resp.Body.Close()
	o.status = resp.StatusCode
	var answer struct {
		MsgID string `json:"msg_id"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&answer)
	o.id, o.code = answer.MsgID, answer.Error.Code
	return o
}

// count returns how many answers so far match f.
func (s *stream) count(f func(outcome) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, o := range s.outs {
		if f(o) {
			n++
		}
	}
	return n
}

// end stops the stream and returns every answer. It closes the client's
// idle connections: one the transport dialled and never used counts for
// net/http's Shutdown as a request about to come, for 5 s.
func (s *stream) end() []outcome {
	close(s.stop)
	s.wg.Wait()
	s.hc.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outs
}

func accepted(o outcome) bool { return o.status == http.StatusAccepted }
func refused(o outcome) bool  { return o.status == http.StatusServiceUnavailable }

// checkAnswers asserts that every push got 202 or 503 store_unavailable,
// and that every push that began after the fault was seen and ended before
// it was cleared got 503. It returns the IDs of the accepted pushes.
func checkAnswers(t *testing.T, outs []outcome, faultSeen, cleared time.Time) (ids []string, during int) {
	t.Helper()
	for _, o := range outs {
		switch {
		case o.err != nil:
			t.Errorf("a push failed without an answer: %v", o.err)
		case o.status == http.StatusAccepted:
			if o.id == "" {
				t.Errorf("a 202 without a msg_id")
			}
			ids = append(ids, o.id)
		case o.status == http.StatusServiceUnavailable && o.code == "store_unavailable":
		default:
			t.Errorf("a push got %d %q; want 202, or 503 store_unavailable", o.status, o.code)
		}
		if o.started.After(faultSeen) && o.ended.Before(cleared) {
			during++
			if !refused(o) {
				t.Errorf("a push during the fault got %d %q (msg_id %q); want 503 store_unavailable", o.status, o.code, o.id)
			}
		}
	}
	return ids, during
}

// device is a device connected over MQTT 3.1.1 with a real client, which
// acknowledges what it receives.
type device struct {
	reg *client.Registration
	c   paho3.Client

	mu   sync.Mutex
	got  map[string]bool // message IDs received; guarded by mu
	lost []error         // connection losses; guarded by mu
}

func register(t *testing.T, srv *heraldtest.Server) *client.Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := client.Register(ctx, http.DefaultClient, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android"})
	if err != nil {
		t.Fatalf("registering a device: %v", err)
	}
	return reg
}

// connect connects reg over MQTT to srv and subscribes to its topic.
func connect(t *testing.T, srv *heraldtest.Server, reg *client.Registration) *device {
	t.Helper()
	d := &device{reg: reg, got: map[string]bool{}}
	opts := paho3.NewClientOptions().AddBroker(strings.Replace(srv.MQTTURL, "mqtt://", "tcp://", 1)).
		SetClientID(reg.RegistrationID).SetUsername(reg.RegistrationID).SetPassword(reg.DeviceSecret).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho3.Client, err error) {
			d.mu.Lock()
			d.lost = append(d.lost, err)
			d.mu.Unlock()
		})
	d.c = paho3.NewClient(opts)
	if tok := d.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect: %v", tok.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(100) })
	tok := d.c.Subscribe("devices/"+reg.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) {
		var msg client.Message
		if err := json.Unmarshal(m.Payload(), &msg); err != nil {
			return
		}
		d.mu.Lock()
		d.got[msg.ID] = true
		d.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT subscribe: %v", tok.Error())
	}
	return d
}

func (d *device) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got[id]
}

func (d *device) received() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

// connected fails the test if the device lost its connection.
func (d *device) connected(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.lost) > 0 || !d.c.IsConnectionOpen() {
		t.Fatalf("the MQTT device lost its connection: %v", d.lost)
	}
}

// waitDelivered waits until every id reached one of the devices.
func waitDelivered(t *testing.T, ids []string, devs ...*device) {
	t.Helper()
	missing := func() []string {
		var out []string
		for _, id := range ids {
			found := false
			for _, d := range devs {
				found = found || d.has(id)
			}
			if !found {
				out = append(out, id)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := missing()
		if len(m) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted pushes never reached the device, e.g. %v", len(m), len(ids), m[:min(len(m), 5)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyz returns /readyz's status and reason.
func readyz(t *testing.T, srv *heraldtest.Server) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status, Reason string
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Reason
}

// run runs the binary with args in dir until it exits, at most timeout,
// and returns its exit code and what it wrote to stderr.
func run(t *testing.T, dir string, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldtest.Bin(), args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("herald %v ran for more than %s; stderr: %s", args, timeout, stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("herald %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}
