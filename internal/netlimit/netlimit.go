// Package netlimit admits connections before a server spends anything on
// them: it caps the open connections of one source address, and the
// connections of all addresses that have not authenticated yet. It is a
// leaf: the epoll engine (netpoll), the HTTP listener and the protocols use
// it through a Ticket per connection.
//
// The two caps answer different attacks. One host opening thousands of
// connections meets the per-address cap, and its excess is refused at
// accept. Many hosts each opening a few silent connections meet the cap on
// unauthenticated connections, which never refuses: it closes the oldest
// unauthenticated connection to make room, as nginx reuses the connections
// that wait for a request when it runs out. A refusal there would hand the
// door to whoever fills the cap first, locking out health checks and
// devices that are about to authenticate; closing the oldest keeps the
// descriptors unauthenticated connections hold bounded while a newcomer
// that authenticates within its turn gets in. Only when the closes run
// behind (a tenth of the cap told to close and not closed yet) are new
// connections refused, until they catch up.
package netlimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons Admit refuses a connection.
var (
	// ErrPerAddress refuses a connection whose source address already
	// holds Options.PerAddr connections.
	ErrPerAddress = errors.New("netlimit: too many connections from this address")
	// ErrBusy refuses a connection while the unauthenticated ones closed
	// to make room are still closing, as many of them as a tenth of
	// MaxUnauth: their descriptors are not free yet, and evicting more
	// would let a flood outrun the closes and exhaust the descriptors the
	// cap is there to keep.
	ErrBusy = errors.New("netlimit: too many connections closing; retry later")
)

// Options configure a Limiter. A zero cap is no cap.
type Options struct {
	// PerAddr is the most connections open at once from one source
	// address (an IPv6 address counts by its /64, which one host usually
	// holds whole), over every listener that shares the Limiter. 0: no cap.
	PerAddr int
	// MaxUnauth is the most connections, from all addresses together, that
	// have not authenticated yet; admitting one more closes the oldest.
	// 0: no cap.
	MaxUnauth int
	// Log gets one line per LogEvery at most while connections are refused
	// or closed. Default slog.Default().
	Log *slog.Logger
	// LogEvery spaces those lines. Default 10 s.
	LogEvery time.Duration
}

// Limiter is the admission state shared by a node's listeners. Its methods
// are safe for concurrent use; a nil *Limiter admits everything.
type Limiter struct {
	perAddr   int           // immutable
	maxUnauth int           // immutable
	log       *slog.Logger  // immutable
	logEvery  time.Duration // immutable

	mu sync.Mutex
	// addrs counts open connections per source key; guarded by mu. Kept
	// only while PerAddr is set, and a key leaves with its last connection.
	addrs map[[16]byte]int32
	// oldest and newest are the ends of the list of unauthenticated
	// tickets, in admission order; guarded by mu. Kept only while
	// MaxUnauth is set.
	oldest, newest *Ticket
	unauth         int // tickets not yet authenticated nor released; guarded by mu
	// closing counts evicted tickets not yet released: connections told
	// to close whose descriptors may still be open; guarded by mu.
	closing    int
	maxClosing int // immutable; a tenth of maxUnauth, at least 8

	// Counts since the last log line, and when that line was written
	// (Unix ns), so that a flood costs a line per LogEvery, not one per
	// connection.
	refused, busy, evicted atomic.Int64
	lastLog                atomic.Int64
}

// New returns a Limiter with o's caps.
func New(o Options) *Limiter {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.LogEvery <= 0 {
		o.LogEvery = 10 * time.Second
	}
	l := &Limiter{perAddr: max(o.PerAddr, 0), maxUnauth: max(o.MaxUnauth, 0), log: o.Log, logEvery: o.LogEvery}
	l.maxClosing = max(l.maxUnauth/10, 8)
	if l.perAddr > 0 {
		l.addrs = make(map[[16]byte]int32)
	}
	return l
}

// Ticket is one admitted connection's place in the Limiter: it holds a
// slot of its source address and, until Authenticated, a slot among the
// unauthenticated connections. Release gives both back. A nil *Ticket (from
// a nil Limiter) does nothing.
//
// It is kept to 64 bytes: every open connection has one.
type Ticket struct {
	l *Limiter // immutable

	// prev and next link the unauthenticated list while state is
	// queued; guarded by l.mu.
	prev, next *Ticket
	// closer ends the connection when the ticket is evicted; set by Bind,
	// dropped once the ticket leaves the list; guarded by l.mu.
	closer io.Closer

	key   [16]byte // immutable; the source address (IPv4 mapped), or its /64
	state state    // guarded by l.mu
}

// state is where a ticket is in its life.
type state uint8

const (
	queued   state = iota // admitted, not yet authenticated
	authed                // authenticated: counts only for its address
	evicted               // closed to make room; its address slot is held until Release
	released              // given back
)

// key is the per-address key of a: IPv4 (also when mapped into IPv6) by
// address, IPv6 by its /64.
func key(a netip.Addr) [16]byte {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			a = p.Addr()
		}
	}
	return a.As16()
}

// Admit admits a connection from remote, or refuses it with ErrPerAddress
// when its address is at the per-address cap. Admitting it past the cap on
// unauthenticated connections closes the oldest of them (through the
// io.Closer its owner gave Bind), unless too many closed that way are
// still closing: then it is refused with ErrBusy. The caller releases the
// ticket when the connection closes.
func (l *Limiter) Admit(remote netip.Addr) (*Ticket, error) {
	if l == nil {
		return nil, nil
	}
	k := key(remote)
	l.mu.Lock()
	if l.perAddr > 0 && int(l.addrs[k]) >= l.perAddr {
		l.mu.Unlock()
		l.refused.Add(1)
		l.maybeLog(remote)
		return nil, ErrPerAddress
	}
	if l.maxUnauth > 0 && l.unauth >= l.maxUnauth && l.closing >= l.maxClosing {
		l.mu.Unlock()
		l.busy.Add(1)
		l.maybeLog(netip.Addr{})
		return nil, ErrBusy
	}
	if l.perAddr > 0 {
		l.addrs[k]++
	}
	t := &Ticket{l: l, key: k}
	l.unauth++
	var victim io.Closer
	evicted := false
	if l.maxUnauth > 0 {
		l.push(t)
		if l.unauth > l.maxUnauth {
			victim, evicted = l.evictLocked(), true
		}
	}
	l.mu.Unlock()
	if evicted {
		if victim != nil {
			victim.Close()
		}
		l.maybeLog(netip.Addr{})
	}
	return t, nil
}

// Shed closes the oldest unauthenticated connections, up to shedBatch of
// them, as admitting as many past the cap would; it reports whether there
// was one. An accept that failed for want of descriptors (EMFILE) while a
// client waits calls it: one descriptor per failed accept would let a
// backlog drain only as fast as the accept loop backs off, so it frees a
// batch, as nginx does when it runs out of connections.
func (l *Limiter) Shed() bool {
	if l == nil {
		return false
	}
	var victims [shedBatch]io.Closer
	n := 0
	l.mu.Lock()
	for ; n < shedBatch && l.oldest != nil; n++ {
		victims[n] = l.evictLocked()
	}
	l.mu.Unlock()
	for _, v := range victims[:n] {
		if v != nil {
			v.Close()
		}
	}
	if n > 0 {
		l.maybeLog(netip.Addr{})
	}
	return n > 0
}

// shedBatch is how many connections one Shed closes at most.
const shedBatch = 16

// evictLocked takes the oldest ticket off the list and returns what closes
// its connection (nil when its owner has not bound it yet: Bind then says
// so). l.mu must be held; the caller closes the victim after unlocking,
// since closing it releases its ticket, which takes l.mu.
func (l *Limiter) evictLocked() io.Closer {
	t := l.oldest
	l.unlink(t)
	l.unauth--
	l.closing++
	t.state = evicted
	c := t.closer
	t.closer = nil
	l.evicted.Add(1)
	return c
}

// push appends t to the unauthenticated list. l.mu must be held.
func (l *Limiter) push(t *Ticket) {
	t.prev = l.newest
	if l.newest != nil {
		l.newest.next = t
	} else {
		l.oldest = t
	}
	l.newest = t
}

// unlink takes t off the unauthenticated list. l.mu must be held.
func (l *Limiter) unlink(t *Ticket) {
	if t.prev != nil {
		t.prev.next = t.next
	} else if l.oldest == t {
		l.oldest = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else if l.newest == t {
		l.newest = t.prev
	}
	t.prev, t.next = nil, nil
}

// Bind gives the ticket what closes its connection should it be evicted.
// It reports false when the ticket was evicted before it was bound: the
// owner must then close the connection itself. Binding again replaces the
// closer.
func (t *Ticket) Bind(c io.Closer) bool {
	if t == nil {
		return true
	}
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	switch t.state {
	case queued:
		if l.maxUnauth > 0 {
			t.closer = c
		}
	case evicted, released:
		return false
	}
	return true
}

// Authenticated moves the ticket out of the unauthenticated connections:
// from now on it counts only against its address. Later calls do nothing.
func (t *Ticket) Authenticated() {
	if t == nil {
		return
	}
	l := t.l
	l.mu.Lock()
	if t.state == queued {
		l.leaveQueueLocked(t)
		t.state = authed
	}
	l.mu.Unlock()
}

// leaveQueueLocked takes a queued t out of the unauthenticated count and
// list. l.mu must be held.
func (l *Limiter) leaveQueueLocked(t *Ticket) {
	if l.maxUnauth > 0 {
		l.unlink(t)
	}
	l.unauth--
	t.closer = nil
}

// Release gives back the ticket's slots when its connection is closed.
// Later calls do nothing.
func (t *Ticket) Release() {
	if t == nil {
		return
	}
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	switch t.state {
	case released:
		return
	case queued:
		l.leaveQueueLocked(t)
	case evicted:
		l.closing--
	}
	t.state = released
	if l.perAddr > 0 {
		if n := l.addrs[t.key] - 1; n > 0 {
			l.addrs[t.key] = n
		} else {
			delete(l.addrs, t.key)
		}
	}
}

// Unauthenticated is the number of admitted connections that have not
// authenticated and were not evicted.
func (l *Limiter) Unauthenticated() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unauth
}

// Closing is the number of connections evicted and not yet released.
func (l *Limiter) Closing() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// Conns is the number of open connections counted for a's address (0
// when there is no per-address cap).
func (l *Limiter) Conns(a netip.Addr) int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.addrs[key(a)])
}

// maybeLog writes what was refused and closed since the last line, if the
// last line is LogEvery old; refused is the address of the refusal that
// calls it (invalid for an eviction).
func (l *Limiter) maybeLog(refused netip.Addr) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if last != 0 && now-last < int64(l.logEvery) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	nRefused, nBusy, nEvicted := l.refused.Swap(0), l.busy.Swap(0), l.evicted.Swap(0)
	attrs := []any{"refused_over_address_cap", nRefused, "closed_unauthenticated", nEvicted,
		"refused_while_closing", nBusy, "per_address_cap", l.perAddr, "unauthenticated_cap", l.maxUnauth}
	if refused.IsValid() {
		attrs = append(attrs, "refused_address", refused.String())
	}
	if last != 0 {
		attrs = append(attrs, "since_last_line", time.Duration(now-last).Round(time.Second))
	}
	l.log.Warn("netlimit: connections refused or closed at their caps", attrs...)
}

// ticketHolder is a connection that carries its ticket.
type ticketHolder interface{ netlimitTicket() *Ticket }

// TicketOf returns the ticket of a connection Listener accepted, looking
// through wrappers that expose what they wrap (a *tls.Conn's NetConn), or
// nil.
func TicketOf(c net.Conn) *Ticket {
	for c != nil {
		if h, ok := c.(ticketHolder); ok {
			return h.netlimitTicket()
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

type ctxKey struct{}

// ConnContext is for http.Server.ConnContext: it puts the connection's
// ticket in the context of every request on it, for Authenticated.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if t := TicketOf(c); t != nil {
		return NewContext(ctx, t)
	}
	return ctx
}

// NewContext returns ctx carrying t.
func NewContext(ctx context.Context, t *Ticket) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the ticket ctx carries, or nil.
func FromContext(ctx context.Context) *Ticket {
	t, _ := ctx.Value(ctxKey{}).(*Ticket)
	return t
}

// Authenticated marks the connection whose ticket ctx carries as
// authenticated: a request on it presented valid credentials. Without a
// ticket it does nothing.
func Authenticated(ctx context.Context) { FromContext(ctx).Authenticated() }
