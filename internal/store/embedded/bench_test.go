package embedded

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// benchMsg is a message of about the size the decision record measured:
// a 300-byte payload for three explicit targets.
func benchMsg(id string, devs []string) store.Accept {
	m := newMsg(id, push.Audience{RegistrationIDs: devs}, time.Hour)
	m.Notification = &push.Notification{Title: "Your order has shipped", Body: "Order 1234 left our warehouse and arrives on Tuesday."}
	m.Data = []byte(`{"order":1234,"carrier":"DHL","tracking":"JJD000390007712345678","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"eta":"2026-03-03"}`)
	return store.Accept{Msg: m, Targets: devs}
}

func benchDevices(b testing.TB, s *Store, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = push.NewRegistrationID()
	}
	setup(b, s, ids...)
	return ids
}

// BenchmarkAppend measures durable appends: one message per call from one
// caller (every call waits for its own fsync), from 64 callers (group
// commit shares fsyncs), and batches of 100 messages per call.
func BenchmarkAppend(b *testing.B) {
	run := func(b *testing.B, perCall int, parallel bool) {
		s := mustOpen(b, b.TempDir())
		defer s.Close()
		devs := benchDevices(b, s, 1000)
		var n atomic.Int64
		call := func() {
			batch := make([]store.Accept, perCall)
			for i := range batch {
				k := n.Add(1)
				batch[i] = benchMsg(fmt.Sprintf("m%d", k), []string{devs[k%1000], devs[(k+1)%1000], devs[(k+2)%1000]})
			}
			if _, err := s.Append(bg, batch); err != nil {
				b.Error(err)
			}
		}
		b.ResetTimer()
		if parallel {
			b.SetParallelism(32) // GOMAXPROCS × 32 callers: 64 on two cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
		} else {
			for b.Loop() {
				call()
			}
		}
		b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("single", func(b *testing.B) { run(b, 1, false) })
	b.Run("single-64callers", func(b *testing.B) { run(b, 1, true) })
	b.Run("batch100", func(b *testing.B) { run(b, 100, false) })
}

// BenchmarkPending reads a device's pending messages: 50 inbox entries
// interleaved with 50 broadcasts among 10,000 other messages of the app.
func BenchmarkPending(b *testing.B) {
	s := mustOpen(b, b.TempDir())
	defer s.Close()
	devs := benchDevices(b, s, 100)
	var batch []store.Accept
	for i := range 10_100 {
		id := fmt.Sprintf("m%d", i)
		switch {
		case i%101 == 0:
			batch = append(batch, store.Accept{Msg: newMsg(id, push.Audience{All: true}, time.Hour)})
		case i%101 == 50:
			batch = append(batch, benchMsg(id, devs[:1]))
		default:
			batch = append(batch, benchMsg(id, devs[1+i%99:2+i%99]))
		}
		if len(batch) == 1000 {
			if _, err := s.Append(bg, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := s.Append(bg, batch); err != nil {
		b.Fatal(err)
	}
	d, err := s.Device(bg, devs[0])
	if err != nil {
		b.Fatal(err)
	}
	now := epoch.Add(time.Second)
	for b.Loop() {
		msgs, err := s.Pending(bg, &d, now, 100, 0)
		if err != nil || len(msgs) != 100 {
			b.Fatalf("Pending = %d messages, %v; want 100", len(msgs), err)
		}
	}
}

// BenchmarkFaultCheck measures what every commit group pays for the fault
// checks: a statfs of the directory for the reserve and two stats for its
// identity.
func BenchmarkFaultCheck(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MinFree: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if err := s.faults.check(); err != nil {
			b.Fatal(err)
		}
	}
}
