package webpush_test

import (
	"fmt"
	"testing"

	"github.com/heraldpush/herald/internal/webpush"
)

// BenchmarkSubscribeAfterCycles measures one subscribe after a device has
// made and revoked many subscriptions: revoked subscriptions must not make
// later ones slower. Each subscription is revoked again with the timer
// stopped, so the device's live count stays at zero; run it with a fixed
// -benchtime (e.g. 200x), since every iteration adds a revoked one.
func BenchmarkSubscribeAfterCycles(b *testing.B) {
	for _, cycles := range []int{0, 5000} {
		b.Run(fmt.Sprintf("cycles=%d", cycles), func(b *testing.B) {
			f := newFixture(b, webpush.Options{})
			d := f.device(b)
			cycle := func() {
				c, err := f.svc.Subscribe(ctx, &d, "", "")
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := f.svc.Unsubscribe(ctx, &d, c.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			for range cycles {
				cycle()
			}
			b.ResetTimer()
			for b.Loop() {
				cycle()
			}
		})
	}
}
