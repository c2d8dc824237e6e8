package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestIdleConnectionMemory measures what an idle WebSocket and an idle SSE
// connection cost the server: the RSS slope of a separate `herald serve`
// process between 2,000 and 10,000 idle connections, each of its own device,
// from client sockets bound to 127.0.0.2–127.0.0.254. It is a benchmark, not a
// test: it runs only with HERALD_MEMBENCH=1 (docs/BENCHMARKS.md), and prints
// the median slope of HERALD_MEMBENCH_RUNS runs (3) per transport.
func TestIdleConnectionMemory(t *testing.T) {
	if os.Getenv("HERALD_MEMBENCH") == "" {
		t.Skip("a benchmark: set HERALD_MEMBENCH=1 to run it")
	}
	runs := 3
	if n, err := strconv.Atoi(os.Getenv("HERALD_MEMBENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/herald")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building herald: %v", err)
	}
	steps := []int{2000, 4000, 6000, 8000, 10000}
	transports := []string{"ws", "sse"}
	if list := os.Getenv("HERALD_MEMBENCH_TRANSPORTS"); list != "" {
		transports = strings.Split(list, ",") // also mqtt-tls, mqtt-ws
	}
	for _, transport := range transports {
		var slopes []float64
		for run := range runs {
			slope, points := measureIdle(t, bin, transport, steps)
			t.Logf("%s run %d: %.2f KiB per connection; RSS KiB at %v: %v", transport, run+1, slope, steps, points)
			slopes = append(slopes, slope)
		}
		slices.Sort(slopes)
		t.Logf("%s: median %.2f KiB per idle connection over %d runs (%v)", transport, slopes[len(slopes)/2], runs, slopes)
	}
}

// measureIdle starts a server, opens connections up to each step, reads
// the server's RSS at each, and returns the least-squares slope in KiB per
// connection with the readings.
func measureIdle(t *testing.T, bin, transport string, steps []int) (float64, []int) {
	var extra []string
	var trust *x509.CertPool
	if transport == "mqtt-tls" {
		cert, key, der := selfSignedCert(t)
		extra = []string{"--mqtts", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key}
		c, _ := x509.ParseCertificate(der)
		trust = x509.NewCertPool()
		trust.AddCert(c)
	}
	srv := startBinary(t, bin, extra...)
	defer srv.stop()
	srv.roots = trust
	devs := srv.registerMany(t, steps[len(steps)-1])

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var rss []int
	open := 0
	for _, step := range steps {
		// Open in parallel batches; each client goroutine holds its socket
		// and answers pings until ctx ends.
		sem := make(chan struct{}, 64)
		errs := make(chan error, step)
		var batch sync.WaitGroup
		for i := open; i < step; i++ {
			sem <- struct{}{}
			batch.Add(1)
			go func(i int) {
				defer func() { <-sem; batch.Done() }()
				local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%253))}
				target := srv.url
				if transport == "mqtt-tls" {
					target = srv.mqtts
				}
				if err := holdIdle(ctx, &wg, target, transport, devs[i], local); err != nil {
					errs <- err
				}
			}(i)
		}
		batch.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("opening %s connection: %v", transport, err)
		}
		open = step
		rss = append(rss, settledRSS(t, srv.pid()))
	}
	return slopeKiB(steps, rss), rss
}

// holdIdle opens one connection for dev from local and keeps it until ctx
// ends, returning once the server has answered.
func holdIdle(ctx context.Context, wg *sync.WaitGroup, base, transport string, dev [2]string, local *net.TCPAddr) error {
	dialer := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
	if strings.HasPrefix(transport, "mqtt-") {
		return holdMQTT(ctx, wg, base, transport, dev, dialer)
	}
	q := url.Values{"registration_id": {dev[0]}, "device_secret": {dev[1]}}.Encode()
	if transport == "ws" {
		hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(dctx, strings.Replace(base, "http", "ws", 1)+"/v1/inbox/ws?"+q, &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			return err
		}
		if _, _, err := c.Read(dctx); err != nil { // the hello
			return err
		}
		wg.Go(func() {
			defer c.CloseNow()
			go func() { <-ctx.Done(); c.CloseNow() }()
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					return
				}
				if bytes.Contains(b, []byte(`"ping"`)) {
					c.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
				}
			}
		})
		return nil
	}
	u, _ := url.Parse(base)
	conn, err := dialer.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	fmt.Fprintf(conn, "GET /v1/inbox/stream?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", q, u.Host)
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		conn.Close()
		return fmt.Errorf("SSE answer %q: %v", status, err)
	}
	conn.SetReadDeadline(time.Time{})
	wg.Go(func() {
		go func() { <-ctx.Done(); conn.Close() }()
		io.Copy(io.Discard, br)
	})
	return nil
}

// settledRSS waits for the server's RSS to stop moving and returns it in
// KiB.
func settledRSS(t *testing.T, pid int) int {
	prev := -1
	for range 30 {
		time.Sleep(time.Second)
		cur := readRSS(t, pid)
		if prev >= 0 && abs(cur-prev) < 256 {
			return cur
		}
		prev = cur
	}
	return prev
}

func abs(n int) int { return max(n, -n) }

func readRSS(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// slopeKiB is the least-squares slope of rss (KiB) over conns.
func slopeKiB(conns, rss []int) float64 {
	var sx, sy, sxx, sxy float64
	n := float64(len(conns))
	for i := range conns {
		x, y := float64(conns[i]), float64(rss[i])
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// binary is a `herald serve` process.
type binary struct {
	cmd                 *exec.Cmd
	url, appKey, secret string
	mqtts               string         // host:port of the MQTT TLS listener, if any
	roots               *x509.CertPool // trusted for HTTPS, when the server has a certificate
	done                chan struct{}
}

var memBanner = regexp.MustCompile(`^\s+(HTTP API|app_key|master_secret|MQTT over TLS)\s+(\S+)`)

func startBinary(t *testing.T, bin string, extra ...string) *binary {
	cmd := exec.Command(bin, append([]string{"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--mqtt", ""}, extra...)...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &binary{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if m := memBanner.FindStringSubmatch(sc.Text()); m != nil {
				switch m[1] {
				case "HTTP API":
					b.url = m[2]
				case "app_key":
					b.appKey = m[2]
				case "master_secret":
					b.secret = m[2]
				case "MQTT over TLS":
					b.mqtts = strings.TrimPrefix(m[2], "mqtts://")
				}
			}
			if strings.HasPrefix(sc.Text(), "For the client commands") && !signalled {
				signalled = true
				close(ready)
			}
		}
	}()
	go func() { cmd.Wait(); close(b.done) }()
	select {
	case <-ready:
	case <-b.done:
		t.Fatal("herald exited before serving")
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("herald printed no banner in 30 s")
	}
	return b
}

func (b *binary) pid() int { return b.cmd.Process.Pid }

func (b *binary) stop() {
	b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
}

// registerMany registers n devices with the master secret (no rate limit)
// and returns their credentials.
func (b *binary) registerMany(t *testing.T, n int) [][2]string {
	out := make([][2]string, n)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, TLSClientConfig: &tls.Config{RootCAs: b.roots}}}
	body, _ := json.Marshal(map[string]string{"app_key": b.appKey, "platform": "web"})
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequest("POST", b.url+"/v1/devices", bytes.NewReader(body))
				req.SetBasicAuth(b.appKey, b.secret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var reg struct {
					ID     string `json:"registration_id"`
					Secret string `json:"device_secret"`
				}
				json.NewDecoder(resp.Body).Decode(&reg)
				resp.Body.Close()
				out[i] = [2]string{reg.ID, reg.Secret}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			t.Fatalf("registering: %v", err)
		}
	}
	close(next)
	wg.Wait()
	return out
}
