// Package heraldtest runs the real herald binary for black-box tests: it
// builds cmd/herald once per test process and starts `herald serve`
// processes on free ports, reading their addresses and credentials from the
// start-up banner as a user would.
package heraldtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	bin     string
	srcRoot string // the module's root, which bin is built from

	touched sync.Once
)

// Main builds the binary, runs the tests and removes the binary. Call it
// from TestMain.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "herald")
	_, here, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", bin, "./cmd/herald")
	build.Dir = filepath.Join(filepath.Dir(here), "..", "..")
	build.Stderr = os.Stderr
	srcRoot = build.Dir
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// touchSources opens (once per test process, from within a test, where go
// test records it) every file the binary is built from. go test caches a
// test's result keyed on its own package's inputs and on the files the test
// process opened; the binary is built by another process, so without this
// a change to the server alone would replay a cached pass of these tests.
func touchSources(root string) {
	for _, dir := range []string{"cmd", "internal", "client", "web"} {
		filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			if f, err := os.Open(path); err == nil {
				f.Close()
			}
			return nil
		})
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		if f, err := os.Open(filepath.Join(root, name)); err == nil {
			f.Close()
		}
	}
}

// Bin is the path of the binary Main built.
func Bin() string {
	touched.Do(func() { touchSources(srcRoot) })
	return bin
}

// Server is one `herald serve` process.
type Server struct {
	Cmd      *exec.Cmd
	URL      string // HTTP API base URL
	AppKey   string // the default app's key
	Secret   string // its master secret; empty when the app existed before this start
	MQTTURL  string // mqtt://host:port, empty when MQTT is off
	MQTTSURL string // mqtts://host:port, empty when MQTT over TLS is off
	// MetricsURL is where /metrics is served.
	MetricsURL string
	Log        *SyncBuffer // what the server wrote to stderr
	done       chan struct{}
	stopOnce   sync.Once
}

var bannerLine = regexp.MustCompile(`^\s+(HTTP API|app_key|master_secret|MQTT over TLS|MQTT over WS|MQTT|metrics)\s+(\S+)`)

// Start runs `herald serve --data dataDir --http 127.0.0.1:0 --mqtt ""` plus
// args (a later flag overrides an earlier one) and waits for its banner. The
// process is stopped with SIGTERM when the test ends. A dataDir that is
// missing or empty gets --init, as a first start needs; a restart on the
// same directory does not, so it finds what the last start left.
func Start(t testing.TB, dataDir string, args ...string) *Server {
	t.Helper()
	return StartUnder(t, nil, dataDir, args...)
}

// StartUnder is Start with the server run by a launcher that execs its
// last argument and the rest, such as []string{"prlimit",
// "--nofile=1024:1024", "--"}. Server.PID is then the launcher's, which is
// the server's once the launcher has exec'd it.
func StartUnder(t testing.TB, launcher []string, dataDir string, args ...string) *Server {
	t.Helper()
	return start(t, launcher, nil, dataDir, args...)
}

// StartEnv is Start with env (KEY=value) added to the server's
// environment, such as SSL_CERT_FILE for a local vendor's certificate.
func StartEnv(t testing.TB, env []string, dataDir string, args ...string) *Server {
	t.Helper()
	return start(t, nil, env, dataDir, args...)
}

func start(t testing.TB, launcher, env []string, dataDir string, args ...string) *Server {
	t.Helper()
	touched.Do(func() { touchSources(srcRoot) })
	base := []string{"serve", "--data", dataDir, "--http", "127.0.0.1:0", "--mqtt", ""}
	if entries, err := os.ReadDir(dataDir); err != nil || len(entries) == 0 {
		base = append(base, "--init")
	}
	argv := append(append(append([]string(nil), launcher...), bin), append(base, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stdout, _ := cmd.StdoutPipe()
	s := &Server{Cmd: cmd, Log: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting herald: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if m := bannerLine.FindStringSubmatch(sc.Text()); m != nil {
				switch m[1] {
				case "HTTP API":
					s.URL = m[2]
				case "app_key":
					s.AppKey = m[2]
				case "master_secret":
					if !strings.HasPrefix(m[2], "(") {
						s.Secret = m[2]
					}
				case "MQTT":
					s.MQTTURL = m[2]
				case "MQTT over TLS":
					s.MQTTSURL = m[2]
				case "metrics":
					s.MetricsURL = m[2]
				}
			}
			if strings.HasPrefix(sc.Text(), "For the client commands") && !signalled {
				signalled = true
				close(ready)
			}
		}
	}()
	go func() { cmd.Wait(); close(s.done) }()
	select {
	case <-ready:
	case <-s.done:
		t.Fatalf("herald exited before serving: %s", s.Log)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("herald printed no banner in 30 s: %s", s.Log)
	}
	t.Cleanup(s.Stop)
	return s
}

// PID is the server's process ID.
func (s *Server) PID() int { return s.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop ends the server as an operator does, with SIGTERM, killing it if it
// has not exited in 15 s. Later calls wait for the same exit.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.Cmd.Process.Kill()
		}
	})
	<-s.done
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	s.stopOnce.Do(func() { s.Cmd.Process.Signal(syscall.SIGKILL) })
	<-s.done
}

// SyncBuffer is a bytes.Buffer that a process and the test may use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
