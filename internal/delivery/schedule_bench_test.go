package delivery_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// BenchmarkScheduledHeap measures what waiting costs: the heap (after GC)
// that 15,000 pushes of about 4 KB, scheduled 29 days ahead, add to a
// running service, the store included. Run it with -benchtime=1x; the
// figure is heap-MB, not the time.
func BenchmarkScheduledHeap(b *testing.B) {
	const pushes = 15000
	payload, _ := json.Marshal(strings.Repeat("x", 4000))
	for range b.N {
		b.StopTimer()
		st, err := embedded.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		reg := registry.New(st, time.Now, 10)
		hub := session.NewHub()
		svc := delivery.New(st, reg, router.Local{Hub: hub}, delivery.Options{Limits: push.DefaultLimits()})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() { svc.Run(ctx); close(ran) }()
		app, _, err := reg.CreateApp(ctx, "a")
		if err != nil {
			b.Fatal(err)
		}
		before := heapAfterGC()
		b.StartTimer()
		at := time.Now().Add(29 * 24 * time.Hour)
		for range pushes {
			if _, err := svc.Push(ctx, app, &push.Request{Audience: &push.Audience{All: true}, Message: payload,
				Options: push.Options{SendAt: &at}}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		held := heapAfterGC() - before
		b.ReportMetric(float64(held)/(1<<20), "heap-MB")
		cancel()
		<-ran
		st.Close()
	}
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
