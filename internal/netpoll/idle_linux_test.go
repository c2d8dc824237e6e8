package netpoll

import (
	"sync"
	"testing"
	"time"
)

// The idle-timeout design, measured: a once-a-second sweep over the fd
// table (what the engine does) against a coarse timer wheel (a prototype
// here, kept only to be measured). At 19,000 conns:
//
//	go test -run=^$ -bench=Idle ./internal/netpoll
//
// The sweep's cost is one pass a second; the wheel's is a list move per
// OnData (and a link pair per conn). See docs/decisions/0002.

const idleConns = 19_000

func idleTable(b *testing.B) (*pollers, []*conn) {
	pp := &pollers{start: time.Now()}
	p := &poller{pp: pp}
	conns := make([]*conn, idleConns)
	for i := range conns {
		c := &conn{fd: int32(i + 10), p: p}
		c.idle.Store(int64(90 * time.Second))
		c.deadline.Store(int64(time.Hour))
		pp.table.set(c.fd, c)
		conns[i] = c
	}
	return pp, conns
}

// BenchmarkIdleSweep is one sweep over 19,000 conns none of which is due.
func BenchmarkIdleSweep(b *testing.B) {
	pp, _ := idleTable(b)
	for b.Loop() {
		pp.sweep(int64(time.Minute))
	}
}

// BenchmarkIdleTouch is what the sweep design costs on each OnData.
func BenchmarkIdleTouch(b *testing.B) {
	_, conns := idleTable(b)
	i := 0
	for b.Loop() {
		conns[i%idleConns].touch(int64(i))
		i++
	}
}

// wheel is a one-second-slot timing wheel with intrusive doubly linked
// lists: the alternative to the sweep. Touch moves an entry to the slot of
// its new deadline; a tick empties one slot.
type wheel struct {
	mu    sync.Mutex
	slots []wheelEntry // list heads
	now   int
}

type wheelEntry struct {
	prev, next *wheelEntry
	deadline   int // in ticks
}

func newWheel(n int) *wheel {
	w := &wheel{slots: make([]wheelEntry, n)}
	for i := range w.slots {
		w.slots[i].prev, w.slots[i].next = &w.slots[i], &w.slots[i]
	}
	return w
}

func (w *wheel) touch(e *wheelEntry, after int) {
	w.mu.Lock()
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
	}
	e.deadline = w.now + after
	head := &w.slots[e.deadline%len(w.slots)]
	e.prev, e.next = head, head.next
	head.next.prev = head
	head.next = e
	w.mu.Unlock()
}

// tick advances a second and returns how many entries were due.
func (w *wheel) tick() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now++
	head := &w.slots[w.now%len(w.slots)]
	due := 0
	for e := head.next; e != head; {
		next := e.next
		if e.deadline <= w.now {
			e.prev.next, e.next.prev = e.next, e.prev
			e.prev, e.next = nil, nil
			due++
		}
		e = next
	}
	return due
}

func BenchmarkIdleWheelTouch(b *testing.B) {
	w := newWheel(512)
	entries := make([]wheelEntry, idleConns)
	for i := range entries {
		w.touch(&entries[i], 90)
	}
	i := 0
	for b.Loop() {
		w.touch(&entries[i%idleConns], 90)
		i++
	}
}

// BenchmarkIdleWheelTick is one tick with 19,000 entries spread over 90
// slots, none due.
func BenchmarkIdleWheelTick(b *testing.B) {
	w := newWheel(512)
	entries := make([]wheelEntry, idleConns)
	for i := range entries {
		w.touch(&entries[i], 1000+i%90)
	}
	for b.Loop() {
		w.tick()
	}
}
