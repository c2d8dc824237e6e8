package netpoll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingHandler counts the log records at warning level and above.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestAcceptEMFILE runs the server out of descriptors: the accept loop
// must back off and log rather than spin, and accept the waiting
// connection once descriptors are free again.
func TestAcceptEMFILE(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		logs := &countingHandler{}
		r := newRecorder()
		gate := &testGate{}
		_, addr := start(r, Options{Logger: slog.New(logs), Gate: gate})

		// The client's socket exists before the table is full, so that
		// connecting it needs no descriptor, and the server's accept4 finds
		// none free.
		host, port, _ := net.SplitHostPort(addr)
		portNum, _ := strconv.Atoi(port)
		cfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(cfd)

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
		release := func() {
			for _, f := range fillers {
				f.Close()
			}
			fillers = nil
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		}
		defer release()
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
		sa := &syscall.SockaddrInet4{Port: portNum}
		copy(sa.Addr[:], net.ParseIP(host).To4())
		if err := syscall.Connect(cfd, sa); err != nil {
			t.Fatal(err)
		}

		waitFor(t, 10*time.Second, func() error {
			if logs.n.Load() == 0 {
				return errors.New("no accept failure logged")
			}
			return nil
		})
		// Backing off from 5ms, doubling: a handful of attempts in 300ms;
		// a spinning loop would log thousands.
		time.Sleep(300 * time.Millisecond)
		if n := logs.n.Load(); n > 20 {
			t.Errorf("%d accept failures logged in 300ms: the loop spins", n)
		}
		if o, _, _ := r.counts(); o != 0 {
			t.Fatalf("accepted %d connections without a descriptor", o)
		}
		// Each failure asks the gate to free a descriptor.
		gate.mu.Lock()
		sheds := gate.sheds
		gate.mu.Unlock()
		if sheds == 0 {
			t.Error("the accept loop did not ask the gate to shed a connection")
		}
		release()
		r.waitCounts(t, 1, 0)
	})
}

func TestHalfClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, start func(Handler, Options) (*Engine, string)) {
		r := newRecorder()
		_, addr := start(r, Options{})
		c := dial(t, addr)
		c.Write([]byte("x"))
		c.(*net.TCPConn).CloseWrite()
		r.waitCounts(t, 1, 1)
		if got := r.reasonList()[0]; got == nil {
			t.Error("OnClose after the peer's FIN: nil error")
		}
		// The server closed its side too.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error(fmt.Errorf("read after server close succeeded"))
		}
	})
}
