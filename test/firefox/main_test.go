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
	"testing"

	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// server is a `herald serve` process (test/heraldtest).
type server struct{ *heraldtest.Server }

// startServer runs `herald serve` on dataDir at addr ("127.0.0.1:0" for any
// port) and waits for its banner. It stops with SIGTERM at the test's end.
func startServer(t *testing.T, dataDir, addr string) *server {
	return &server{heraldtest.Start(t, dataDir, "--http", addr)}
}

// stop ends the server with SIGTERM and waits for it; idempotent.
func (s *server) stop() { s.Stop() }
