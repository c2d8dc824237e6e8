package netpoll

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The memory measurement behind docs/decisions/0002-connection-engine.md.
// It is not a test of behaviour and asserts nothing; it runs only when
// HERALD_NETPOLL_MEM is set:
//
//	HERALD_NETPOLL_MEM=1 go test -run=TestMemoryPerConn -v -timeout=60m ./internal/netpoll
//
// For each design it starts a server in another process (this test binary
// again, as TestMemServer), opens idle connections to it from this one,
// each bound to a source address in 127.0.0.2–127.0.0.254 so that ports
// never run out, sends one 16-byte packet on each (as a device sends its
// CONNECT), and reads the server's VmRSS at each step after settling
// (runtime.GC in the server, a pause, twice; the second reading counts).
// The result is the slope between the first and last step, in bytes per
// connection; the median of HERALD_NETPOLL_MEM_RUNS runs (default 3).
//
// Other variables: HERALD_NETPOLL_MEM_STEPS (default "5000,19000"),
// HERALD_NETPOLL_MEM_MODES (default every built-in design: epoll,
// goroutine (ServeConn on a TCP conn), goroutine-opaque (ServeConn on a
// conn that hides its socket), goroutine-bufio (the classic goroutine and
// bufio.Reader per conn), tls (ServeConn on crypto/tls)), and
// HERALD_NETPOLL_MEM_EXTERNAL, "name=/path/to/server,..." for servers
// built elsewhere that speak the same stdin protocol (testdata/nbioserver).

// memModes are the built-in designs TestMemServer can run.
var memModes = []string{"epoll", "goroutine", "goroutine-opaque", "goroutine-bufio", "tls"}

// nopHandler is the idle server: it counts connections and drops bytes.
type nopHandler struct{ open atomic.Int64 }

func (h *nopHandler) OnOpen(Conn)         { h.open.Add(1) }
func (h *nopHandler) OnData(Conn, []byte) {}
func (h *nopHandler) OnClose(Conn, error) { h.open.Add(-1) }
func (h *nopHandler) count() int64        { return h.open.Load() }
func (h *nopHandler) String() string      { return "nop" }
func memEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestMemServer is the server side, run in its own process by
// TestMemoryPerConn. Protocol: it prints "ADDR host:port", then answers
// "count" with "COUNT n", "gc" with "OK" and "heap" with "HEAP bytes" (Go
// heap and stacks in use, which an external server may not answer) on
// stdin, and exits at EOF.
func TestMemServer(t *testing.T) {
	mode := os.Getenv("HERALD_NETPOLL_MEM_SERVER")
	if mode == "" {
		t.Skip("the server side of TestMemoryPerConn")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &nopHandler{}
	var count func() int64 = h.count
	switch mode {
	case "goroutine-bufio":
		// The classic design: a goroutine and a 4 KiB bufio.Reader per
		// connection (mochi-mqtt, most Go brokers).
		var open atomic.Int64
		count = open.Load
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				open.Add(1)
				go func() {
					defer open.Add(-1)
					br := bufio.NewReader(c)
					buf := make([]byte, 16)
					for {
						if _, err := br.Read(buf); err != nil {
							c.Close()
							return
						}
					}
				}()
			}
		}()
	default:
		e, err := New(h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var l net.Listener = ln
		switch mode {
		case "goroutine":
			l = plainListener{ln}
		case "goroutine-opaque":
			l = opaqueListener{ln}
		case "tls":
			l = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
		}
		go e.Serve(l)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "count":
			fmt.Printf("COUNT %d\n", count())
		case "gc":
			runtime.GC()
			fmt.Println("OK")
		case "heap":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("HEAP %d\n", ms.HeapInuse+ms.StackInuse)
			fmt.Fprintf(os.Stderr, "server %s: heap in use %d, stacks %d\n", mode, ms.HeapInuse, ms.StackInuse)
		default:
			// "prof PATH" writes a heap profile, to see where the bytes go.
			if path, ok := strings.CutPrefix(sc.Text(), "prof "); ok {
				f, err := os.Create(path)
				if err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
				fmt.Println("OK")
			}
		}
	}
	os.Exit(0) // skip the testing epilogue: the parent only reads replies
}

// memServer is a running server process.
type memServer struct {
	cmd  *exec.Cmd
	in   *bufio.Writer
	out  *bufio.Scanner
	addr string
}

func startMemServer(t *testing.T, name string, argv []string, env []string) *memServer {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &memServer{cmd: cmd, in: bufio.NewWriter(stdin), out: bufio.NewScanner(stdout)}
	s.addr = strings.TrimPrefix(s.reply(t, "ADDR "), "ADDR ")
	return s
}

// reply returns the next output line that starts with prefix.
func (s *memServer) reply(t *testing.T, prefix string) string {
	t.Helper()
	for s.out.Scan() {
		if line := s.out.Text(); strings.HasPrefix(line, prefix) {
			return line
		}
	}
	t.Fatalf("server exited waiting for %q: %v", prefix, s.out.Err())
	return ""
}

func (s *memServer) ask(t *testing.T, cmd, prefix string) string {
	t.Helper()
	fmt.Fprintln(s.in, cmd)
	s.in.Flush()
	return s.reply(t, prefix)
}

func (s *memServer) count(t *testing.T) int {
	n, err := strconv.Atoi(strings.TrimPrefix(s.ask(t, "count", "COUNT "), "COUNT "))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rss settles the server and reads its VmRSS in bytes.
func (s *memServer) rss(t *testing.T) int64 {
	t.Helper()
	var v int64
	for range 2 {
		s.ask(t, "gc", "OK")
		time.Sleep(1500 * time.Millisecond)
		v = vmRSS(t, s.cmd.Process.Pid)
	}
	return v
}

func (s *memServer) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// dialIdle opens connections to addr until there are n in conns, each
// from its own source address in turn, and sends 16 bytes on each.
func dialIdle(t *testing.T, addr string, conns []net.Conn, n int, useTLS bool) []net.Conn {
	t.Helper()
	hello := []byte("\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
	for i := len(conns); i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%253))}}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if useTLS {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake %d: %v", i, err)
			}
			c = tc
		}
		if _, err := c.Write(hello); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	return conns
}

func TestMemoryPerConn(t *testing.T) {
	if os.Getenv("HERALD_NETPOLL_MEM") == "" {
		t.Skip("a measurement: set HERALD_NETPOLL_MEM=1 to run it")
	}
	var steps []int
	for _, f := range strings.Split(memEnv("HERALD_NETPOLL_MEM_STEPS", "5000,19000"), ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, n)
	}
	runs, _ := strconv.Atoi(memEnv("HERALD_NETPOLL_MEM_RUNS", "3"))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type design struct {
		name string
		argv []string
		env  []string
	}
	var designs []design
	for _, m := range strings.Split(memEnv("HERALD_NETPOLL_MEM_MODES", strings.Join(memModes, ",")), ",") {
		designs = append(designs, design{m, []string{self, "-test.run=^TestMemServer$"}, []string{"HERALD_NETPOLL_MEM_SERVER=" + m}})
	}
	if ext := os.Getenv("HERALD_NETPOLL_MEM_EXTERNAL"); ext != "" {
		for _, kv := range strings.Split(ext, ",") {
			name, path, _ := strings.Cut(kv, "=")
			designs = append(designs, design{name, []string{path}, nil})
		}
	}

	slopes := make(map[string][]float64)
	heapSlopes := make(map[string][]float64)
	for run := range runs {
		for _, d := range designs {
			s := startMemServer(t, d.name, d.argv, d.env)
			var conns []net.Conn
			var rss, heap []int64
			external := d.env == nil
			for _, n := range steps {
				conns = dialIdle(t, s.addr, conns, n, d.name == "tls")
				deadline := time.Now().Add(60 * time.Second)
				for s.count(t) < n {
					if time.Now().After(deadline) {
						t.Fatalf("%s: server holds %d of %d", d.name, s.count(t), n)
					}
					time.Sleep(50 * time.Millisecond)
				}
				rss = append(rss, s.rss(t))
				if p := os.Getenv("HERALD_NETPOLL_MEM_PROFILE"); p != "" && !external {
					s.ask(t, fmt.Sprintf("prof %s-%s-%d.pprof", p, d.name, n), "OK")
				}
				if !external {
					h, _ := strconv.ParseInt(strings.TrimPrefix(s.ask(t, "heap", "HEAP "), "HEAP "), 10, 64)
					heap = append(heap, h)
				}
			}
			first, last := 0, len(rss)-1
			slope := float64(rss[last]-rss[first]) / float64(steps[last]-steps[first])
			slopes[d.name] = append(slopes[d.name], slope)
			t.Logf("run %d %-18s RSS %v at %v: %.0f B/conn", run+1, d.name, mib(rss), steps, slope)
			if !external {
				heapSlope := float64(heap[last]-heap[first]) / float64(steps[last]-steps[first])
				heapSlopes[d.name] = append(heapSlopes[d.name], heapSlope)
				t.Logf("run %d %-18s Go heap+stacks in use %v: %.0f B/conn", run+1, d.name, mib(heap), heapSlope)
			}
			for _, c := range conns {
				c.Close()
			}
			s.stop()
		}
	}
	for _, d := range designs {
		v := slices.Clone(slopes[d.name])
		slices.Sort(v)
		t.Logf("median %-18s %6.0f B/conn (%.2f KiB) RSS over %d runs: %v", d.name, v[len(v)/2], v[len(v)/2]/1024, len(v), rounded(slopes[d.name]))
		if h := slices.Clone(heapSlopes[d.name]); len(h) > 0 {
			slices.Sort(h)
			t.Logf("median %-18s %6.0f B/conn Go heap+stacks: %v", d.name, h[len(h)/2], rounded(heapSlopes[d.name]))
		}
	}
}

// selfSigned makes a throwaway ECDSA certificate for the tls mode.
func selfSigned(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func mib(v []int64) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf("%.1fMiB", float64(x)/(1<<20))
	}
	return out
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}
