package mqtt

import (
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/netpoll"
)

// fakeConn is a netpoll.Conn that records what the gateway writes, so a
// test can feed OnData byte by byte on its own goroutine and look at the
// connection's state between calls.
type fakeConn struct {
	mu     sync.Mutex
	out    []byte
	closed bool
	idle   time.Duration
	ctx    any
	authed bool
}

func (f *fakeConn) Write(b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return netpoll.ErrClosed
	}
	f.out = append(f.out, b...)
	return nil
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func (f *fakeConn) SetIdleTimeout(d time.Duration) {
	f.mu.Lock()
	f.idle = d
	f.mu.Unlock()
}

func (f *fakeConn) SetContext(v any) { f.ctx = v }
func (f *fakeConn) Context() any     { return f.ctx }

func (f *fakeConn) Authenticated() {
	f.mu.Lock()
	f.authed = true
	f.mu.Unlock()
}

// take returns and forgets what was written.
func (f *fakeConn) take() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.out
	f.out = nil
	return b
}

var _ netpoll.Conn = (*fakeConn)(nil)

// settled waits until no worker handles c's packets (a CONNECT or
// SUBSCRIBE is handed to one), so that its read side can be looked at.
func settled(t *testing.T, c *conn) {
	t.Helper()
	waitFor(t, "the worker to give the connection back", func() bool {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return !c.busy
	})
}

// An idle connection holds no read buffer: the bytes of a packet are kept
// only while it is incomplete, and several packets in one read are all
// handled.
func TestPartialPacketBuffer(t *testing.T) {
	for _, offload := range []bool{false, true} {
		t.Run(map[bool]string{false: "poller", true: "offload"}[offload], func(t *testing.T) { testPartialPacketBuffer(t, offload) })
	}
}

func testPartialPacketBuffer(t *testing.T, offload bool) {
	e := startGateway(t, Options{Offload: offload})
	dev, secret := e.device()
	fc := &fakeConn{}
	e.gw.OnOpen(fc)
	c := fc.ctx.(*conn)
	defer e.gw.OnClose(fc, nil)

	connect, _ := creds(dev, secret).AppendTo(nil, packet.Version311)
	e.gw.OnData(fc, connect[:1]) // inside the fixed header
	if len(c.partial) != 1 {
		t.Fatalf("partial holds %d bytes after 1 byte, want 1", len(c.partial))
	}
	e.gw.OnData(fc, connect[1:10])
	if len(c.partial) != 10 {
		t.Fatalf("partial holds %d bytes, want 10", len(c.partial))
	}
	e.gw.OnData(fc, connect[10:])
	settled(t, c)
	if c.partial != nil {
		t.Errorf("partial still holds %d bytes after a whole CONNECT", len(c.partial))
	}
	if got := fc.take(); string(got) != "\x20\x02\x00\x00" {
		t.Fatalf("CONNACK % x", got)
	}
	if fc.idle != 90*time.Second {
		t.Errorf("idle timeout %s after CONNECT with keepalive 60, want 1.5 × 60 s", fc.idle)
	}

	// Two packets and the start of a third in one read.
	sub, _ := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + dev.ID, QoS: 1}}}).AppendTo(nil, packet.Version311)
	batch := append(append(sub, 0xc0, 0x00), 0xc0)
	e.gw.OnData(fc, batch)
	settled(t, c)
	if len(c.partial) != 1 {
		t.Errorf("partial holds %d bytes, want the 1 byte of the unfinished PINGREQ", len(c.partial))
	}
	// The engine reuses its buffer: what was kept must be a copy.
	for i := range batch {
		batch[i] = 0xff
	}
	e.gw.OnData(fc, []byte{0x00})
	if c.partial != nil {
		t.Errorf("partial holds %d bytes between packets, want none", len(c.partial))
	}
	if got := fc.take(); string(got) != "\x90\x03\x00\x01\x01\xd0\x00\xd0\x00" {
		t.Errorf("answers % x, want SUBACK and two PINGRESPs", got)
	}
}

// The per-connection state is what the memory target (≤ 2 KiB per idle
// device, issue 3) is spent on; keep it small.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 128 {
		t.Errorf("conn is %d bytes; keep it at most 128", n)
	}
}

// TestIdleHeapPerDevice measures what an idle, subscribed device costs the
// Go heap above the engine: the gateway's conn, the device snapshot, the
// delivery stream and the hub's and gateway's index entries. The engine's
// own conn (about 100 bytes) and the kernel's socket are measured in
// internal/netpoll and by `herald bench conns`. It asserts nothing and runs
// only when HERALD_MQTT_MEM is set:
//
//	HERALD_MQTT_MEM=2000 go test -run=TestIdleHeapPerDevice -v ./internal/gateway/mqtt
//
// HERALD_MQTT_MEM_PROFILE=FILE also writes a heap profile of that moment.
func TestIdleHeapPerDevice(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HERALD_MQTT_MEM"))
	if n <= 0 {
		t.Skip("set HERALD_MQTT_MEM=N to measure N idle devices")
	}
	e := startGateway(t, Options{})
	type dev struct{ connect, subscribe []byte }
	devs := make([]dev, n)
	for i := range devs {
		d, secret := e.device()
		devs[i].connect, _ = creds(d, secret).AppendTo(nil, packet.Version311)
		devs[i].subscribe, _ = (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + d.ID, QoS: 1}}}).AppendTo(nil, packet.Version311)
	}
	// The fake conns are made before the baseline: they stand for the
	// engine's conns, which are not what is measured here.
	fcs := make([]fakeConn, n)
	heap := func() uint64 {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range devs {
		fc := &fcs[i]
		e.gw.OnOpen(fc)
		e.gw.OnData(fc, devs[i].connect)
		e.gw.OnData(fc, devs[i].subscribe)
		fc.out = nil
	}
	after := heap()
	if e.hub.Len() != n {
		t.Fatalf("%d sessions in the hub, want %d", e.hub.Len(), n)
	}
	t.Logf("%d idle subscribed devices: %.0f bytes of heap each above the engine", n, float64(after-before)/float64(n))
	if path := os.Getenv("HERALD_MQTT_MEM_PROFILE"); path != "" {
		// Where the bytes go: go tool pprof -sample_index=inuse_space PATH
		// (with GODEBUG=memprofilerate=1 for every allocation).
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	runtime.KeepAlive(devs)
}

// TestPartialGrowsWithWhatArrived: the buffer of an unfinished packet is
// sized by the bytes that arrived, not by the Remaining Length its fixed
// header claims, and grows as the rest comes. A CONNECT announcing 16 KiB
// used to get 16 KiB at its first byte.
func TestPartialGrowsWithWhatArrived(t *testing.T) {
	e := startGateway(t, Options{})
	dev, secret := e.device()
	fc := &fakeConn{}
	e.gw.OnOpen(fc)
	c := fc.ctx.(*conn)
	defer e.gw.OnClose(fc, nil)

	// A real CONNECT padded to 16 KiB with a long will payload.
	p := creds(dev, secret)
	p.Will = &packet.Will{Topic: "w", Payload: make([]byte, 16<<10-200)}
	connect, err := p.AppendTo(nil, packet.Version311)
	if err != nil {
		t.Fatal(err)
	}
	if len(connect) < 16<<10-100 || len(connect) > 16<<10 {
		t.Fatalf("the test CONNECT is %d bytes", len(connect))
	}
	const header = 8 // fixed header (3 bytes for this length) and a few more
	e.gw.OnData(fc, connect[:header])
	if got := cap(c.partial); got > 64 {
		t.Fatalf("after %d bytes of a %d-byte CONNECT the buffer holds %d bytes of room", header, len(connect), got)
	}
	for off := header; off < len(connect)-1; {
		n := min(700, len(connect)-1-off)
		e.gw.OnData(fc, connect[off:off+n])
		off += n
		if got, arrived := cap(c.partial), off; got > 2*arrived+64 {
			t.Fatalf("after %d bytes the buffer holds %d bytes of room, over twice what arrived", arrived, got)
		}
	}
	e.gw.OnData(fc, connect[len(connect)-1:])
	settled(t, c)
	if c.partial != nil {
		t.Fatalf("partial holds %d bytes after the whole CONNECT", len(c.partial))
	}
	if got := fc.take(); string(got) != "\x20\x02\x00\x00" {
		t.Fatalf("CONNACK % x, want success", got)
	}
	if !fc.authed {
		t.Error("an accepted CONNECT did not mark the connection authenticated")
	}
}
