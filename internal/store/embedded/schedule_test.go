package embedded

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/store"
)

// BenchmarkDueAfterFired is the scheduler's look at the store right after
// 15,000 messages due at once were fired: their schedule rows are deletion
// tombstones until a compaction drops them, and Due steps over them to
// reach the one still waiting.
func BenchmarkDueAfterFired(b *testing.B) {
	s := mustOpen(b, b.TempDir())
	defer s.Close()
	devs := benchDevices(b, s, 1)
	const n = 15000
	var batch []store.Accept
	for i := range n + 1 {
		a := benchMsg(fmt.Sprintf("m%d", i), devs)
		a.Msg.SendAt = epoch.Add(time.Minute)
		if i == n {
			a.Msg.SendAt = epoch.Add(time.Hour)
		}
		a.Msg.ExpiresAt = a.Msg.SendAt.Add(time.Hour)
		batch = append(batch, a)
		if len(batch) == 1000 || i == n {
			if _, err := s.Append(bg, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for {
		due, _, err := s.Due(bg, epoch.Add(time.Minute), 64)
		if err != nil {
			b.Fatal(err)
		}
		if len(due) == 0 {
			break
		}
		if err := s.Fired(bg, due); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		due, next, err := s.Due(bg, epoch.Add(time.Minute), 64)
		if err != nil || len(due) != 0 || !next.Equal(epoch.Add(time.Hour)) {
			b.Fatalf("Due = %v, %v, %v", due, next, err)
		}
	}
}
