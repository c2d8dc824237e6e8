//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
)

// The swarm is the client side of a workload: N MQTT devices driven by a
// few event loops over epoll, speaking MQTT through the codec. A goroutine
// and a bufio.Reader per device would cost the bench process far more than
// the server it measures and would compete with it for the machine's two
// cores; here an idle device costs a file descriptor and a small struct.

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h), missing from
// package syscall: with it, bind only fixes the source address and the
// port is chosen at connect time per 4-tuple, so ports are not reserved
// per address.
const ipBindAddressNoPort = 24

// Source addresses 127.0.0.2 to 127.0.0.254 each have their own ephemeral
// port range towards the server, so N connections never run out of ports.
const (
	firstSource = 2
	numSources  = 253
)

// swarmConfig configures a swarm.
type swarmConfig struct {
	Addr      netip.AddrPort // the server's MQTT listener (IPv4)
	Version   byte           // packet.Version311 or packet.Version5
	KeepAlive uint16         // seconds; the swarm pings idle devices in time
	Devices   []Device
	Loops     int           // event loops; default GOMAXPROCS
	InFlight  int           // handshakes under way at once, all loops together; default 32
	Timeout   time.Duration // one handshake's limit; default 30 s
	Nonce     []byte        // a PUBLISH whose payload contains it is the measured one; see swarm.expect
}

// expectation is the message a swarm counts: a PUBLISH whose payload
// contains nonce. gen tells one expectation from the next, so that a
// device that had the last one is not taken to have this one.
type expectation struct {
	nonce []byte
	gen   uint32
}

// connState is where a device is in its life.
type connState uint8

const (
	stateConnecting connState = iota // TCP connect under way
	stateConnack                     // CONNECT sent
	stateSuback                      // SUBSCRIBE sent
	stateIdle                        // subscribed
	stateClosed
)

// mconn is one device's connection. It is owned by loop index%len(loops):
// only that loop's goroutine touches it while the swarm runs.
type mconn struct {
	fd       int
	state    connState
	gen      uint32 // the expectation whose message arrived; 0: none yet
	started  int64  // unix ns the dial began
	lastSent int64  // unix ns of the last packet sent, for keepalive
	rbuf     []byte
}

// swarm drives the devices of one workload against one server.
type swarm struct {
	cfg   swarmConfig
	sa    syscall.SockaddrInet4
	bind  bool // spread source addresses (the server is on loopback)
	conns []*mconn
	loops []*loop
	wg    sync.WaitGroup

	dialTo atomic.Int64 // devices [0, dialTo) are to be connected
	want   atomic.Pointer[expectation]

	subscribed atomic.Int64 // handshakes completed
	failed     atomic.Int64 // handshakes failed
	dropped    atomic.Int64 // subscribed connections closed by the server
	lastDone   atomic.Int64 // unix ns of the latest completed handshake

	publishes atomic.Int64 // every PUBLISH received
	received  atomic.Int64 // devices that received the nonce message
	dups      atomic.Int64 // nonce messages received again
	firstRecv atomic.Int64 // unix ns
	lastRecv  atomic.Int64 // unix ns, after the PUBACK was written

	errMu sync.Mutex
	errs  map[string]int // guarded by errMu; error text -> count
}

// newSwarm starts the event loops; nothing connects until dial.
func newSwarm(cfg swarmConfig) (*swarm, error) {
	if !cfg.Addr.Addr().Is4() {
		return nil, fmt.Errorf("bench: MQTT address %s: only IPv4 is supported", cfg.Addr)
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	s := &swarm{
		cfg:   cfg,
		sa:    syscall.SockaddrInet4{Port: int(cfg.Addr.Port()), Addr: cfg.Addr.Addr().As4()},
		bind:  cfg.Addr.Addr().IsLoopback(),
		conns: make([]*mconn, len(cfg.Devices)),
		errs:  map[string]int{},
	}
	s.expect(cfg.Nonce)
	for i := range cfg.Loops {
		l, err := newLoop(s, i, max(1, cfg.InFlight/cfg.Loops))
		if err != nil {
			s.close()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Go(l.run)
	}
	return s, nil
}

// phase is the outcome of one dial.
type phase struct {
	Devices int           // handshakes attempted in this phase
	Failed  int           // of which failed
	Elapsed time.Duration // from the start to the last completed handshake
}

// dial connects and subscribes devices up to index to (exclusive) and waits
// until every handshake has ended or ctx is done.
func (s *swarm) dial(ctx context.Context, to int) (phase, error) {
	to = min(to, len(s.conns))
	from := int(s.dialTo.Load())
	failed0 := s.failed.Load()
	start := time.Now()
	s.dialTo.Store(int64(to))
	s.wakeAll()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for s.subscribed.Load()+s.failed.Load() < int64(to) {
		select {
		case <-ctx.Done():
			return phase{}, fmt.Errorf("bench: connecting devices %d to %d: %w (%d of them done)",
				from, to, ctx.Err(), s.subscribed.Load()+s.failed.Load()-int64(from))
		case <-tick.C:
		}
	}
	p := phase{Devices: to - from, Failed: int(s.failed.Load() - failed0)}
	if last := s.lastDone.Load(); last > start.UnixNano() {
		p.Elapsed = time.Duration(last - start.UnixNano())
	}
	return p, nil
}

// expect makes a PUBLISH containing nonce the measured message, and
// forgets the counts of the last one. Call it while no measured message is
// on its way: one already under way may count for either.
func (s *swarm) expect(nonce []byte) {
	var gen uint32 = 1
	if old := s.want.Load(); old != nil {
		gen = old.gen + 1
	}
	s.received.Store(0)
	s.dups.Store(0)
	s.firstRecv.Store(0)
	s.lastRecv.Store(0)
	s.want.Store(&expectation{nonce: bytes.Clone(nonce), gen: gen})
}

// connected is the number of devices subscribed and still connected.
func (s *swarm) connected() int { return int(s.subscribed.Load() - s.dropped.Load()) }

// waitReceived waits until want devices have the nonce message, or ctx is
// done, and returns how many have it.
func (s *swarm) waitReceived(ctx context.Context, want int) int {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		got := int(s.received.Load())
		if got >= want || s.connected() < want && got >= s.connected() {
			return got
		}
		select {
		case <-ctx.Done():
			return got
		case <-tick.C:
		}
	}
}

// close disconnects every device and stops the loops.
func (s *swarm) close() {
	for _, l := range s.loops {
		l.stop.Store(true)
	}
	s.wakeAll()
	s.wg.Wait()
	for _, l := range s.loops {
		l.closeFDs()
	}
}

func (s *swarm) wakeAll() {
	for _, l := range s.loops {
		syscall.Write(l.wake[1], []byte{1})
	}
}

// noteErr counts err by its text, so that a thousand identical failures
// print as one line.
func (s *swarm) noteErr(err error) {
	s.errMu.Lock()
	if _, ok := s.errs[err.Error()]; ok || len(s.errs) < 20 {
		s.errs[err.Error()]++
	}
	s.errMu.Unlock()
}

// errors lists the distinct errors seen so far with their counts.
func (s *swarm) errors() []string {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	var out []string
	for e, n := range s.errs {
		out = append(out, fmt.Sprintf("%d× %s", n, e))
	}
	sort.Strings(out)
	return out
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// storeMin lowers a to v if a is 0 or larger.
func storeMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if old != 0 && old <= v || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// loop is one event loop: an epoll set, the devices index%L == id, and a
// pipe that wakes it when a phase starts or the swarm stops.
type loop struct {
	s        *swarm
	id       int
	sa       syscall.SockaddrInet4 // the server
	epfd     int
	wake     [2]int
	next     int // the next device this loop dials
	budget   int // its share of swarmConfig.InFlight
	inflight map[int]bool
	stop     atomic.Bool
	scratch  []byte
	wbuf     []byte
	lastPing time.Time
}

func newLoop(s *swarm, id, budget int) (*loop, error) {
	l := &loop{s: s, id: id, sa: s.sa, next: id, budget: budget, inflight: map[int]bool{},
		scratch: make([]byte, 64<<10), epfd: -1, wake: [2]int{-1, -1}, lastPing: time.Now()}
	var err error
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("bench: epoll: %w", err)
	}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(l.epfd)
		return nil, fmt.Errorf("bench: pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake[0]), Pad: -1}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("bench: epoll: %w", err)
	}
	return l, nil
}

func (l *loop) closeFDs() {
	for _, fd := range []int{l.epfd, l.wake[0], l.wake[1]} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
	l.epfd, l.wake = -1, [2]int{-1, -1}
}

func (l *loop) run() {
	events := make([]syscall.EpollEvent, 256)
	for !l.stop.Load() {
		l.dialMore()
		n, err := syscall.EpollWait(l.epfd, events, 100)
		if err != nil && err != syscall.EINTR {
			l.s.noteErr(fmt.Errorf("epoll_wait: %w", err))
			break
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Pad < 0 {
				l.drainWake()
				continue
			}
			l.handle(int(ev.Pad), ev.Events)
		}
		l.housekeep()
	}
	l.shutdown()
}

func (l *loop) drainWake() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(l.wake[0], b[:]); n <= 0 {
			return
		}
	}
}

// dialMore starts handshakes while the phase has devices left for this loop
// and the loop's share of in-flight handshakes allows.
func (l *loop) dialMore() {
	to := int(l.s.dialTo.Load())
	for l.next < to && len(l.inflight) < l.budget {
		i := l.next
		l.next += len(l.s.loops)
		if err := l.dial(i); err != nil {
			l.s.noteErr(err)
			l.s.failed.Add(1)
		}
	}
}

func (l *loop) dial(i int) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) error {
		syscall.Close(fd)
		return fmt.Errorf("%s: %w", what, err)
	}
	if l.s.bind {
		syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
		src := syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, byte(firstSource + i%numSources)}}
		if err := syscall.Bind(fd, &src); err != nil {
			return fail("bind", err)
		}
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	// Each loop has its own copy of the address: Connect writes into it.
	if err := syscall.Connect(fd, &l.sa); err != nil && err != syscall.EINPROGRESS {
		return fail("connect", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd), Pad: int32(i)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fail("epoll_ctl", err)
	}
	now := time.Now().UnixNano()
	l.s.conns[i] = &mconn{fd: fd, state: stateConnecting, started: now}
	l.inflight[i] = true
	return nil
}

func (l *loop) handle(i int, events uint32) {
	c := l.s.conns[i]
	if c == nil || c.state == stateClosed {
		return
	}
	if c.state == stateConnecting {
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		if errno, err := syscall.GetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_ERROR); err != nil || errno != 0 {
			if err == nil {
				err = syscall.Errno(errno)
			}
			l.fail(i, c, fmt.Errorf("connect: %w", err))
			return
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(c.fd), Pad: int32(i)}
		syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, c.fd, &ev)
		d := &l.s.cfg.Devices[i]
		connect := packet.Connect{CleanStart: true, KeepAlive: l.s.cfg.KeepAlive, ClientID: d.ClientID,
			Username: d.Username, HasUsername: d.Username != ""}
		if d.Password != "" {
			connect.Password, connect.HasPassword = []byte(d.Password), true
		}
		c.state = stateConnack
		l.send(i, c, &connect)
		return
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		l.read(i, c)
	}
}

// read takes what the socket has and handles every whole packet in it.
func (l *loop) read(i int, c *mconn) {
	n, err := syscall.Read(c.fd, l.scratch)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil:
		l.fail(i, c, fmt.Errorf("read: %w", err))
		return
	case n == 0:
		l.fail(i, c, errors.New("closed by the server"))
		return
	}
	data := l.scratch[:n]
	if len(c.rbuf) > 0 {
		data = append(c.rbuf, data...)
	}
	for c.state != stateClosed {
		fh, hn, err := packet.ParseFixedHeader(data, maxPacket)
		if errors.Is(err, packet.ErrNeedMore) || err == nil && len(data) < hn+fh.Remaining {
			break
		}
		if err != nil {
			l.fail(i, c, err)
			return
		}
		l.packet(i, c, fh, data[hn:hn+fh.Remaining])
		data = data[hn+fh.Remaining:]
	}
	if c.state == stateClosed || len(data) == 0 {
		c.rbuf = nil
	} else {
		// Only a device with half a packet pending keeps a buffer.
		c.rbuf = append([]byte(nil), data...)
	}
}

func (l *loop) packet(i int, c *mconn, fh packet.FixedHeader, body []byte) {
	v := l.s.cfg.Version
	switch fh.Type {
	case packet.TypeConnack:
		var ack packet.Connack
		if err := ack.Decode(v, fh, body, packet.Limits{}); err != nil {
			l.fail(i, c, fmt.Errorf("CONNACK: %w", err))
			return
		}
		if c.state != stateConnack {
			l.fail(i, c, errors.New("unexpected CONNACK"))
			return
		}
		if ack.ReasonCode.IsError() {
			l.fail(i, c, fmt.Errorf("CONNACK refused: %v", ack.ReasonCode))
			return
		}
		c.state = stateSuback
		l.send(i, c, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: l.s.cfg.Devices[i].Topic, QoS: 1}}})
	case packet.TypeSuback:
		var ack packet.Suback
		if err := ack.Decode(v, fh, body, packet.Limits{}); err != nil {
			l.fail(i, c, fmt.Errorf("SUBACK: %w", err))
			return
		}
		if c.state != stateSuback || len(ack.ReasonCodes) != 1 {
			l.fail(i, c, errors.New("unexpected SUBACK"))
			return
		}
		if ack.ReasonCodes[0] != packet.ReasonGrantedQoS1 {
			l.fail(i, c, fmt.Errorf("SUBACK: %v, not Granted QoS 1", ack.ReasonCodes[0]))
			return
		}
		c.state = stateIdle
		delete(l.inflight, i)
		l.s.subscribed.Add(1)
		storeMax(&l.s.lastDone, time.Now().UnixNano())
	case packet.TypePublish:
		var pub packet.Publish
		if err := pub.Decode(v, fh, body, packet.Limits{}); err != nil {
			l.fail(i, c, fmt.Errorf("PUBLISH: %w", err))
			return
		}
		l.s.publishes.Add(1)
		if pub.QoS > 0 {
			// Every message is acknowledged, including ones left from an
			// earlier run, so that Herald's inbox is empty after each.
			if !l.send(i, c, &packet.Puback{PacketID: pub.PacketID}) {
				return
			}
		}
		if w := l.s.want.Load(); len(w.nonce) > 0 && bytes.Contains(pub.Payload, w.nonce) {
			if c.gen == w.gen {
				l.s.dups.Add(1)
				return
			}
			c.gen = w.gen
			now := time.Now().UnixNano()
			storeMin(&l.s.firstRecv, now)
			storeMax(&l.s.lastRecv, now)
			l.s.received.Add(1)
		}
	case packet.TypeDisconnect:
		var d packet.Disconnect
		d.Decode(v, fh, body, packet.Limits{})
		l.fail(i, c, fmt.Errorf("DISCONNECT from the server: %v", d.ReasonCode))
	case packet.TypePingresp:
	default:
		l.fail(i, c, fmt.Errorf("unexpected %v", fh.Type))
	}
}

// send writes p whole. Packets are small and the socket buffer nearly
// empty, so a short write means the connection is in trouble.
func (l *loop) send(i int, c *mconn, p packet.Packet) bool {
	var err error
	l.wbuf, err = p.AppendTo(l.wbuf[:0], l.s.cfg.Version)
	if err != nil {
		l.fail(i, c, fmt.Errorf("encode %v: %w", p.Type(), err))
		return false
	}
	n, err := syscall.Write(c.fd, l.wbuf)
	if err == nil && n < len(l.wbuf) {
		err = errors.New("short write")
	}
	if err != nil {
		l.fail(i, c, fmt.Errorf("write %v: %w", p.Type(), err))
		return false
	}
	c.lastSent = time.Now().UnixNano()
	return true
}

// fail closes c and counts it: as a failed handshake, or as a subscribed
// device the server dropped.
func (l *loop) fail(i int, c *mconn, err error) {
	syscall.Close(c.fd)
	if c.state == stateIdle {
		l.s.dropped.Add(1)
		err = fmt.Errorf("after subscribing: %w", err)
	} else {
		l.s.failed.Add(1)
		delete(l.inflight, i)
	}
	c.state, c.rbuf = stateClosed, nil
	l.s.noteErr(err)
}

// housekeep times out slow handshakes and keeps idle devices alive.
func (l *loop) housekeep() {
	now := time.Now()
	deadline := now.Add(-l.s.cfg.Timeout).UnixNano()
	for i := range l.inflight {
		if c := l.s.conns[i]; c.started < deadline {
			l.fail(i, c, fmt.Errorf("no answer within %v (state %d)", l.s.cfg.Timeout, c.state))
		}
	}
	ka := time.Duration(l.s.cfg.KeepAlive) * time.Second
	if ka == 0 || now.Sub(l.lastPing) < time.Second {
		return
	}
	l.lastPing = now
	// A device pings when three quarters of its keepalive have passed in
	// silence, as client libraries do.
	quiet := now.Add(-ka * 3 / 4).UnixNano()
	for i := l.id; i < l.next; i += len(l.s.loops) {
		if c := l.s.conns[i]; c != nil && c.state == stateIdle && c.lastSent < quiet {
			l.send(i, c, &packet.Pingreq{})
		}
	}
}

// shutdown sends DISCONNECT to every device still connected and closes it,
// so that the server sees a normal end rather than a reset.
func (l *loop) shutdown() {
	for i := l.id; i < l.next; i += len(l.s.loops) {
		c := l.s.conns[i]
		if c == nil || c.state == stateClosed {
			continue
		}
		if c.state == stateIdle {
			syscall.Write(c.fd, []byte{0xE0, 0x00})
		}
		syscall.Close(c.fd)
		c.state = stateClosed
	}
}
