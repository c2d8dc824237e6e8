package netlimit

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// closer records that the limiter closed a connection.
type closer struct{ n atomic.Int32 }

func (c *closer) Close() error {
	c.n.Add(1)
	return nil
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestPerAddressCap(t *testing.T) {
	l := New(Options{PerAddr: 3, Log: quiet()})
	a, b := addr("192.0.2.1"), addr("192.0.2.2")
	var held []*Ticket
	for i := range 3 {
		tk, err := l.Admit(a)
		if err != nil {
			t.Fatalf("connection %d of a: %v", i+1, err)
		}
		held = append(held, tk)
	}
	if _, err := l.Admit(a); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("fourth connection of a: err %v, want ErrPerAddress", err)
	}
	// Another address is not affected, and neither is authentication.
	tb, err := l.Admit(b)
	if err != nil {
		t.Fatalf("first connection of b: %v", err)
	}
	held[0].Authenticated()
	if _, err := l.Admit(a); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("an authenticated connection still counts for its address: err %v", err)
	}
	held[1].Release()
	held[1].Release() // twice is once
	if got := l.Conns(a); got != 2 {
		t.Fatalf("Conns(a) = %d after one release, want 2", got)
	}
	if _, err := l.Admit(a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if got := l.Conns(a); got != 3 {
		t.Fatalf("Conns(a) = %d, want 3", got)
	}
	tb.Release()
	if got := l.Conns(b); got != 0 {
		t.Fatalf("Conns(b) = %d after its only release, want 0", got)
	}
	if _, ok := l.addrs[key(b)]; ok {
		t.Error("an address with no connection left keeps its map entry")
	}
}

// TestAddressKeys: IPv4 counts by address however it is written; IPv6 by
// its /64, so that one host cannot walk its prefix past the cap.
func TestAddressKeys(t *testing.T) {
	l := New(Options{PerAddr: 2, Log: quiet()})
	for _, s := range []string{"198.51.100.7", "::ffff:198.51.100.7"} {
		if _, err := l.Admit(addr(s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := l.Admit(addr("198.51.100.7")); !errors.Is(err, ErrPerAddress) {
		t.Errorf("the IPv4-mapped form is a separate address: err %v", err)
	}
	for _, s := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"} {
		if _, err := l.Admit(addr(s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := l.Admit(addr("2001:db8:1:2:abcd::1")); !errors.Is(err, ErrPerAddress) {
		t.Errorf("a third address of the same /64: err %v, want ErrPerAddress", err)
	}
	if _, err := l.Admit(addr("2001:db8:1:3::1")); err != nil {
		t.Errorf("the next /64: %v", err)
	}
	if _, err := l.Admit(addr("fe80::1%eth0")); err != nil {
		t.Errorf("a zoned address: %v", err)
	}
}

func TestUnauthenticatedCapClosesTheOldest(t *testing.T) {
	l := New(Options{MaxUnauth: 3, Log: quiet()})
	var ts []*Ticket
	var cs []*closer
	admit := func() {
		t.Helper()
		tk, err := l.Admit(addr("203.0.113.1"))
		if err != nil {
			t.Fatal(err)
		}
		c := &closer{}
		if !tk.Bind(c) {
			t.Fatal("Bind on a fresh ticket reported it evicted")
		}
		ts, cs = append(ts, tk), append(cs, c)
	}
	for range 3 {
		admit()
	}
	ts[1].Authenticated()
	if got := l.Unauthenticated(); got != 2 {
		t.Fatalf("Unauthenticated = %d, want 2", got)
	}
	admit() // 3 unauthenticated: at the cap, nobody closed
	for i, c := range cs {
		if c.n.Load() != 0 {
			t.Fatalf("connection %d closed below the cap", i)
		}
	}
	admit() // 4: the oldest unauthenticated (0) goes
	if cs[0].n.Load() != 1 {
		t.Fatal("the oldest unauthenticated connection was not closed")
	}
	admit() // the next oldest is 2, not the authenticated 1
	if cs[1].n.Load() != 0 || cs[2].n.Load() != 1 {
		t.Fatalf("closed %d and %d; want the authenticated one kept and the next oldest closed", cs[1].n.Load(), cs[2].n.Load())
	}
	if got := l.Unauthenticated(); got != 3 {
		t.Fatalf("Unauthenticated = %d, want 3", got)
	}
	// An evicted ticket cannot be bound or authenticated back in.
	if ts[0].Bind(&closer{}) {
		t.Error("Bind on an evicted ticket reported true")
	}
	ts[0].Authenticated()
	if got := l.Unauthenticated(); got != 3 {
		t.Fatalf("authenticating an evicted ticket changed the count to %d", got)
	}
	for _, tk := range ts {
		tk.Release()
	}
	if got := l.Unauthenticated(); got != 0 || l.oldest != nil || l.newest != nil {
		t.Fatalf("after every release: %d unauthenticated, list %p..%p", got, l.oldest, l.newest)
	}
}

// TestBusyWhileClosesRunBehind: connections told to close count until
// released; while a tenth of the cap is still closing, newcomers past the
// cap are refused rather than evicting more, so that a flood cannot run
// the descriptors out faster than they are freed.
func TestBusyWhileClosesRunBehind(t *testing.T) {
	l := New(Options{MaxUnauth: 100, Log: quiet()})
	var ts []*Ticket
	for range 100 {
		tk, _ := l.Admit(addr("203.0.113.1"))
		tk.Bind(&closer{})
		ts = append(ts, tk)
	}
	for i := range 10 { // each evicts one; none of them releases yet
		if _, err := l.Admit(addr("203.0.113.2")); err != nil {
			t.Fatalf("admission %d past the cap: %v", i+1, err)
		}
	}
	if got := l.Closing(); got != 10 {
		t.Fatalf("Closing = %d, want 10", got)
	}
	if _, err := l.Admit(addr("203.0.113.3")); !errors.Is(err, ErrBusy) {
		t.Fatalf("with a tenth of the cap closing: err %v, want ErrBusy", err)
	}
	if got := l.Conns(addr("203.0.113.3")); got != 0 {
		t.Fatalf("a refused connection holds %d slots of its address", got)
	}
	ts[0].Release() // one close finished
	if _, err := l.Admit(addr("203.0.113.3")); err != nil {
		t.Fatalf("after a close finished: %v", err)
	}
	// Below the cap nothing is refused, however many are closing.
	ts[50].Authenticated()
	ts[51].Authenticated()
	if _, err := l.Admit(addr("203.0.113.4")); err != nil {
		t.Fatalf("below the cap: %v", err)
	}
}

// TestEvictedBeforeBind: a connection evicted between its admission and
// its Bind is closed by its owner, told so by Bind.
func TestEvictedBeforeBind(t *testing.T) {
	l := New(Options{MaxUnauth: 1, Log: quiet()})
	first, _ := l.Admit(addr("203.0.113.1"))
	second, _ := l.Admit(addr("203.0.113.2"))
	if first.Bind(&closer{}) {
		t.Error("Bind after eviction reported true")
	}
	if !second.Bind(&closer{}) {
		t.Error("Bind of the newest reported false")
	}
}

func TestShedClosesABatch(t *testing.T) {
	l := New(Options{MaxUnauth: 100, Log: quiet()})
	var cs []*closer
	for range 40 {
		tk, _ := l.Admit(addr("203.0.113.1"))
		c := &closer{}
		tk.Bind(c)
		cs = append(cs, c)
	}
	l.Shed()
	for i, c := range cs {
		if want := int32(0); i < shedBatch {
			want = 1
			if c.n.Load() != want {
				t.Fatalf("connection %d (of the oldest %d) not closed", i, shedBatch)
			}
		} else if c.n.Load() != want {
			t.Fatalf("connection %d closed; a shed closes the oldest %d", i, shedBatch)
		}
	}
	if got := l.Unauthenticated(); got != 40-shedBatch {
		t.Fatalf("Unauthenticated = %d, want %d", got, 40-shedBatch)
	}
}

func TestShed(t *testing.T) {
	l := New(Options{MaxUnauth: 10, Log: quiet()})
	if l.Shed() {
		t.Fatal("Shed with nothing to shed reported true")
	}
	tk, _ := l.Admit(addr("203.0.113.1"))
	c := &closer{}
	tk.Bind(c)
	if !l.Shed() || c.n.Load() != 1 {
		t.Fatal("Shed did not close the one unauthenticated connection")
	}
	if l.Shed() {
		t.Fatal("Shed closed something twice")
	}
}

func TestNoCaps(t *testing.T) {
	l := New(Options{Log: quiet()})
	for range 10_000 {
		tk, err := l.Admit(addr("192.0.2.1"))
		if err != nil {
			t.Fatal(err)
		}
		tk.Bind(&closer{})
	}
	if len(l.addrs) != 0 || l.oldest != nil {
		t.Error("a limiter with no caps keeps per-address or list state")
	}
	var nilL *Limiter
	tk, err := nilL.Admit(addr("192.0.2.1"))
	if tk != nil || err != nil {
		t.Fatalf("nil Limiter: %v, %v", tk, err)
	}
	tk.Authenticated()
	tk.Release()
	if !tk.Bind(&closer{}) {
		t.Error("nil Ticket: Bind false")
	}
}

// TestConcurrent admits, authenticates and releases from many goroutines
// at once, some connections evicted on the way; every count must return to
// zero (run it with -race).
func TestConcurrent(t *testing.T) {
	l := New(Options{PerAddr: 50, MaxUnauth: 40, Log: quiet()})
	var wg sync.WaitGroup
	var refused, admitted atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []*Ticket
			for range 5000 {
				switch {
				case len(mine) > 0 && r.IntN(3) == 0:
					i := r.IntN(len(mine))
					mine[i].Release()
					mine = append(mine[:i], mine[i+1:]...)
				case len(mine) > 0 && r.IntN(3) == 0:
					mine[r.IntN(len(mine))].Authenticated()
				default:
					tk, err := l.Admit(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(4))}))
					if err != nil {
						refused.Add(1)
						continue
					}
					admitted.Add(1)
					if tk.Bind(&closer{}) {
						mine = append(mine, tk)
					} else {
						tk.Release()
					}
				}
			}
			for _, tk := range mine {
				tk.Release()
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 || admitted.Load() == 0 {
		t.Fatalf("the mix did not exercise both paths: %d admitted, %d refused", admitted.Load(), refused.Load())
	}
	if got := l.Unauthenticated(); got != 0 || len(l.addrs) != 0 || l.oldest != nil || l.newest != nil {
		t.Fatalf("after every release: %d unauthenticated, %d addresses, list %p..%p", got, len(l.addrs), l.oldest, l.newest)
	}
}

// countingHandler counts log records.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestLogIsRateLimited: a flood of refusals and evictions writes one line
// per LogEvery, not one per connection.
func TestLogIsRateLimited(t *testing.T) {
	h := &countingHandler{}
	l := New(Options{PerAddr: 1, MaxUnauth: 5, Log: slog.New(h), LogEvery: time.Hour})
	for range 1000 {
		l.Admit(addr("192.0.2.1"))
		l.Admit(netip.AddrFrom4([4]byte{10, 1, byte(rand.IntN(256)), byte(rand.IntN(256))}))
	}
	if n := h.n.Load(); n != 1 {
		t.Fatalf("%d log lines for 1,000 refusals and evictions in an hour's window, want 1", n)
	}
}

// TestTicketSize: every open connection holds a ticket; 64 bytes is its
// size class.
func TestTicketSize(t *testing.T) {
	if n := unsafe.Sizeof(Ticket{}); n > 64 {
		t.Errorf("Ticket is %d bytes, over its 64-byte size class", n)
	}
}

func TestContext(t *testing.T) {
	l := New(Options{MaxUnauth: 5, Log: quiet()})
	tk, _ := l.Admit(addr("192.0.2.1"))
	ctx := NewContext(context.Background(), tk)
	if FromContext(ctx) != tk {
		t.Fatal("FromContext lost the ticket")
	}
	Authenticated(context.Background()) // no ticket: nothing
	Authenticated(ctx)
	if got := l.Unauthenticated(); got != 0 {
		t.Fatalf("Authenticated(ctx) left %d unauthenticated", got)
	}
}

func BenchmarkAdmitRelease(b *testing.B) {
	l := New(Options{PerAddr: 1000, MaxUnauth: 10_000, Log: quiet()})
	a := addr("192.0.2.1")
	c := &closer{}
	b.ReportAllocs()
	for b.Loop() {
		tk, _ := l.Admit(a)
		tk.Bind(c)
		tk.Authenticated()
		tk.Release()
	}
}

// BenchmarkRefuse is the limiter's side of refusing a connection over its
// address's cap.
func BenchmarkRefuse(b *testing.B) {
	l := New(Options{PerAddr: 1, Log: quiet()})
	a := addr("192.0.2.1")
	l.Admit(a)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Admit(a); err == nil {
			b.Fatal("admitted over the cap")
		}
	}
}
