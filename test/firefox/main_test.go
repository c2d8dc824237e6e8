// Package firefox tests Herald as Firefox's push service: Mozilla's
// WebSocket push protocol (GET /mozpush) against the real herald binary,
// first from Go (protocol_test.go), then with a real headless Firefox ESR
// whose service worker receives a push that the npm web-push library
// encrypted and signed (firefox_test.go).
//
// The Firefox test needs Debian's firefox-esr (or FIREFOX=path), node and
// npm. Without them it skips, except under CI=true, where it fails.
// FIREFOX_LOG=1 prints Firefox's output (its push service logs at debug
// level) and Herald's log even when the test passes.
package firefox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-firefox")
	if err != nil {
		panic(err)
	}
	heraldBin = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-o", heraldBin, "../../cmd/herald")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a `herald serve` process.
type server struct {
	url, appKey string
	log         *syncBuffer
	stop        func() // SIGTERM, then wait; idempotent
}

var bannerLine = regexp.MustCompile(`^\s+(HTTP API|app_key)\s+(\S+)`)

// startServer runs `herald serve` on dataDir at addr ("127.0.0.1:0" for any
// port) and waits for its banner. It stops with SIGTERM at the test's end.
func startServer(t *testing.T, dataDir, addr string) *server {
	t.Helper()
	cmd := exec.Command(heraldBin, "serve", "--data", dataDir, "--http", addr, "--mqtt", "")
	stdout, _ := cmd.StdoutPipe()
	s := &server{log: &syncBuffer{}}
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting herald: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.stop = sync.OnceFunc(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	t.Cleanup(s.stop)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if m := bannerLine.FindStringSubmatch(sc.Text()); m != nil {
				switch m[1] {
				case "HTTP API":
					s.url = m[2]
				case "app_key":
					s.appKey = m[2]
				}
			}
			if strings.HasPrefix(sc.Text(), "For the client commands") && !signalled {
				signalled = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("herald exited before serving: %s", s.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("herald printed no banner in 30 s: %s", s.log)
	}
	return s
}

// syncBuffer is a bytes.Buffer that a process and the test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
