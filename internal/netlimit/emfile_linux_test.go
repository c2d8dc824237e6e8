package netlimit

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestListenerShedsOnEMFILE runs a real http.Server on the wrapped
// listener out of descriptors while a silent, unauthenticated connection
// holds one: the failed accept closes that connection, and the server,
// which backs off on the error rather than failing, accepts the waiting
// client with the descriptor it freed, with the file table still full.
func TestListenerShedsOnEMFILE(t *testing.T) {
	l := New(Options{MaxUnauth: 10, Log: quiet()})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		ConnContext: ConnContext,
		ErrorLog:    log.New(io.Discard, "", 0),
	}
	go srv.Serve(l.Listener(inner, nil))
	defer srv.Close()

	silent := dialFrom(t, "127.0.0.5", inner.Addr().String())
	waitFor(t, 5*time.Second, func() error {
		if n := l.Unauthenticated(); n != 1 {
			return fmt.Errorf("%d unauthenticated, want the silent one", n)
		}
		return nil
	})

	// The waiting client's socket exists before the table is full, so
	// connecting it needs no descriptor.
	cfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(cfd)
	syscall.SetsockoptTimeval(cfd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 10})

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(len(open) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	defer func() {
		for _, f := range fillers {
			f.Close()
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		fillers = append(fillers, f)
	}

	_, port, _ := net.SplitHostPort(inner.Addr().String())
	p, _ := strconv.Atoi(port)
	if err := syscall.Connect(cfd, &syscall.SockaddrInet4{Port: p, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Write(cfd, []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// The silent connection is closed to make room...
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the silent connection is still open: %v", err)
	}
	// ...and the waiting client is served, the table still full.
	buf := make([]byte, 512)
	n, err := syscall.Read(cfd, buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("the waiting client read %q, %v; want a 200", buf[:max(n, 0)], err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
