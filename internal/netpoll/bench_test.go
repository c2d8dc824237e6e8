package netpoll

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// funcHandler is a Handler with no bookkeeping, for benchmarks.
type funcHandler struct {
	open func(Conn)
	data func(Conn, []byte)
}

func (h funcHandler) OnOpen(c Conn) {
	if h.open != nil {
		h.open(c)
	}
}

func (h funcHandler) OnData(c Conn, b []byte) {
	if h.data != nil {
		h.data(c, b)
	}
}

func (h funcHandler) OnClose(Conn, error) {}

// BenchmarkBroadcast is the broadcast path: one goroutine writes a
// 100-byte packet to each of 1,000 connections, and the op ends when every
// client (in this process) has read its packet. It reports ns/delivery,
// the wall time per delivered packet, client reads included.
func BenchmarkBroadcast(b *testing.B) {
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			const n, size = 1000, 100
			var mu sync.Mutex
			var conns []Conn
			h := funcHandler{open: func(c Conn) {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}}
			e, err := New(h, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go e.Serve(eng.wrap(ln))
			var received atomic.Int64
			var wg sync.WaitGroup
			for range n {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 4096)
					for {
						k, err := c.Read(buf)
						received.Add(int64(k))
						if err != nil {
							return
						}
					}
				}()
			}
			for {
				mu.Lock()
				got := len(conns)
				mu.Unlock()
				if got == n {
					break
				}
				time.Sleep(time.Millisecond)
			}
			pkt := make([]byte, size)
			var want int64
			for b.Loop() {
				for _, c := range conns {
					if err := c.Write(pkt); err != nil {
						b.Fatal(err)
					}
				}
				want += n * size
				for received.Load() < want {
					runtime.Gosched()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			b.StopTimer()
			e.Shutdown()
			wg.Wait()
		})
	}
}

// BenchmarkEchoRoundTrip is one small request and its echo on one
// connection: the latency the engine adds to a PUBLISH/PUBACK exchange.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			e, err := New(funcHandler{data: echo}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go e.Serve(eng.wrap(ln))
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
