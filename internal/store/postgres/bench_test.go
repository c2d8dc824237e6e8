package postgres

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// benchStore is a store in a fresh schema with one app and devices d0..dN-1.
func benchStore(b *testing.B, devices int) *Store {
	s, _ := openTest(b, WithMaxConns(8))
	newApp(b, s, "app")
	for i := range devices {
		newDevice(b, s, "app", fmt.Sprintf("d%d", i), push.Android, "news")
	}
	return s
}

// unicast is a direct message to one device, as most API pushes are.
func unicast(n int64, devices int) store.Accept {
	dev := fmt.Sprintf("d%d", n%int64(devices))
	m := newMsg("app", fmt.Sprintf("m%d", n), push.Audience{RegistrationIDs: []string{dev}})
	m.Notification = &push.Notification{Title: "Hello", Body: "A message of a realistic size for a push notification."}
	return store.Accept{Msg: m, Targets: []string{dev}}
}

// BenchmarkAppend measures durable appends of unicast messages: one message
// per call and batches of 100, each from one goroutine and from several at
// once (group commit lets concurrent transactions share a WAL flush).
func BenchmarkAppend(b *testing.B) {
	const devices = 1000
	for _, size := range []int{1, 100} {
		for _, par := range []bool{false, true} {
			name := fmt.Sprintf("batch=%d", size)
			if par {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				s := benchStore(b, devices)
				var next atomic.Int64
				appendBatch := func() {
					batch := make([]store.Accept, size)
					for i := range batch {
						batch[i] = unicast(next.Add(1), devices)
					}
					if _, err := s.Append(ctx, batch); err != nil {
						b.Error(err)
					}
				}
				b.ResetTimer()
				start := time.Now()
				if par {
					b.SetParallelism(4) // 8 writers on 2 cores: enough to share WAL flushes
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							appendBatch()
						}
					})
				} else {
					for b.Loop() {
						appendBatch()
					}
				}
				b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkPending reads the first 100 pending messages of a device whose
// app holds 1,000 devices, 200 live broadcasts (half of them acknowledged
// by the device) and 200 direct messages for it among 10,000 for others.
func BenchmarkPending(b *testing.B) {
	const devices = 1000
	s := benchStore(b, devices)
	var batch []store.Accept
	var broadcasts []string
	for i := range 10_000 {
		a := unicast(int64(i), devices)
		batch = append(batch, a)
		if i%50 == 0 {
			m := newMsg("app", fmt.Sprintf("b%d", i), push.Audience{Tags: []string{"news"}})
			batch = append(batch, store.Accept{Msg: m})
			broadcasts = append(broadcasts, m.ID)
		}
		if len(batch) >= 500 {
			if _, err := s.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := s.Append(ctx, batch); err != nil {
		b.Fatal(err)
	}
	d, err := s.Device(ctx, "d0")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Ack(ctx, &d, broadcasts[:len(broadcasts)/2]); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	now := epoch.Add(time.Second)
	for b.Loop() {
		msgs, err := s.Pending(ctx, &d, now, 100, 0)
		if err != nil || len(msgs) != 100 {
			b.Fatalf("Pending = %d messages, %v", len(msgs), err)
		}
	}
}
