package nats

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// The measurements behind docs/decisions/0003-cluster-routing.md, against
// the NATS server at HERALD_BENCH_NATS (default nats://127.0.0.1:4222), a
// separate process whose memory can be read:
//
//	go test -run='^$' -bench=Routing -benchtime=1x ./internal/router/nats
//
// 75,000 devices over 5 nodes (5 connections of 15,000 subscriptions each,
// as per-device subjects make them), and the alternative of a presence map
// that every node keeps of every device.

const (
	costNodes   = 5
	costDevices = 15000 // per node
)

func benchBus(b *testing.B) string {
	url := os.Getenv("HERALD_BENCH_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second))
	if err != nil {
		b.Skipf("no NATS at %s: %v", url, err)
	}
	nc.Close()
	return url
}

// natsServerRSS is the resident memory of the local nats-server process, 0
// when there is none to read.
func natsServerRSS() int64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "nats-server" {
			continue
		}
		status, err := os.ReadFile(d + "/status")
		if err != nil {
			return 0
		}
		for line := range bytes.Lines(status) {
			if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkRoutingSubscriptions: what per-device subjects cost at 75,000
// connected devices — the subscriptions' memory in a node and in NATS, how
// fast a node subscribes (a connect storm), and a direct push's publish.
func BenchmarkRoutingSubscriptions(b *testing.B) {
	url := benchBus(b)
	for range b.N {
		prefix := fmt.Sprintf("herald_cost_%d", time.Now().UnixNano())
		rss0 := natsServerRSS()
		heap0 := heapInUse()
		in := make(chan *natsgo.Msg, inboxDepth)
		var conns []*natsgo.Conn
		var subs []*natsgo.Subscription
		start := time.Now()
		for n := range costNodes {
			nc, err := natsgo.Connect(url, natsgo.NoEcho())
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, nc)
			for d := range costDevices {
				s, err := nc.ChanSubscribe(fmt.Sprintf("%s.d.dev_%d_%05d_padpadpadpad", prefix, n, d), in)
				if err != nil {
					b.Fatal(err)
				}
				subs = append(subs, s)
			}
			if err := nc.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		took := time.Since(start)
		heap1 := heapInUse()
		time.Sleep(time.Second) // let the server's memory settle
		rss1 := natsServerRSS()
		total := float64(costNodes * costDevices)
		b.ReportMetric(total/took.Seconds(), "subscriptions/s")
		b.ReportMetric(float64(heap1-heap0)/total, "node-bytes/device")
		if rss0 > 0 {
			b.ReportMetric(float64(rss1-rss0)/total, "nats-bytes/device")
		}

		// A direct push: one publish to a device held by node 0, read by
		// that node's dispatcher.
		pub := conns[1]
		const pushes = 20000
		body := bytes.Repeat([]byte("x"), 300)
		start = time.Now()
		for i := range pushes {
			pub.Publish(fmt.Sprintf("%s.d.dev_0_%05d_padpadpadpad", prefix, i%costDevices), body)
		}
		for range pushes {
			<-in
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/pushes, "µs/direct-push")
		// A push to a device no node holds costs a publish that the
		// server drops.
		start = time.Now()
		for i := range pushes {
			pub.Publish(fmt.Sprintf("%s.d.offline_%d", prefix, i), body)
		}
		pub.Flush()
		b.ReportMetric(float64(time.Since(start).Microseconds())/pushes, "µs/push-to-offline")
		for _, s := range subs {
			s.Unsubscribe()
		}
		for _, nc := range conns {
			nc.Close()
		}
	}
}

// BenchmarkRoutingPresenceMap: the alternative, a map of every device of
// the cluster to its node that every node keeps (the other nodes'
// devices included), which a direct push would look up.
func BenchmarkRoutingPresenceMap(b *testing.B) {
	for range b.N {
		heap0 := heapInUse()
		m := make(map[string]uint16)
		for n := range costNodes {
			for d := range costDevices {
				m[fmt.Sprintf("dev_%d_%05d_padpadpadpad", n, d)] = uint16(n)
			}
		}
		heap1 := heapInUse()
		b.ReportMetric(float64(heap1-heap0)/float64(costDevices), "node-bytes/own-device")
		runtime.KeepAlive(m)
	}
}

// BenchmarkRoutingDeviceConn: the same 75,000 subscriptions through the
// node's own device connection (devices.go), which keeps nothing per
// device.
func BenchmarkRoutingDeviceConn(b *testing.B) {
	url := benchBus(b)
	servers, err := parseServers(url)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		prefix := fmt.Sprintf("herald_cost_%d.d.", time.Now().UnixNano())
		heap0 := heapInUse()
		var conns []*deviceConn
		start := time.Now()
		for n := range costNodes {
			d := &deviceConn{servers: servers, name: "cost", prefix: prefix, log: slog.New(slog.DiscardHandler),
				devices: func() []string { return nil }, hold: &sync.Mutex{},
				deliver: func(string, string, []byte) {}, reconnected: func() {}}
			if err := d.start(5 * time.Second); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, d)
			for i := range costDevices {
				d.subscribe(fmt.Sprintf("dev_%d_%05d_padpadpadpad", n, i))
			}
			if err := d.flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		took := time.Since(start)
		heap1 := heapInUse()
		total := float64(costNodes * costDevices)
		b.ReportMetric(total/took.Seconds(), "subscriptions/s")
		b.ReportMetric((float64(heap1)-float64(heap0))/total, "node-bytes/device")
		for _, d := range conns {
			d.close()
		}
	}
}
