package mqtt

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/netpoll"
	"github.com/heraldpush/herald/internal/push"
)

// heldCore holds the store's answer for one device, as a database far away
// would: its CONNECT look-up or its SUBSCRIBE's first inbox read waits until
// the test lets it go.
type heldCore struct {
	Registry
	Inbox
	slow    atomic.Value  // the ID of the device whose calls are held
	auth    bool          // hold AuthDevice (else Attach)
	entered chan struct{} // closed when the held call has begun
	release chan struct{} // closed by let
	once    sync.Once
}

func (h *heldCore) let() { h.once.Do(func() { close(h.release) }) }

func (h *heldCore) hold(id string, auth bool) {
	if slow, _ := h.slow.Load().(string); id == slow && auth == h.auth {
		close(h.entered)
		<-h.release
	}
}

func (h *heldCore) AuthDevice(ctx context.Context, id, secret string) (push.Device, error) {
	h.hold(id, true)
	return h.Registry.AuthDevice(ctx, id, secret)
}

func (h *heldCore) AttachExclusive(ctx context.Context, d *push.Device, send delivery.Sender, window int) (*delivery.Stream, error) {
	h.hold(d.ID, false)
	return h.Inbox.AttachExclusive(ctx, d, send, window)
}

// TestSlowStoreDoesNotStallPoller: while the store keeps one device waiting
// (at CONNECT, then at SUBSCRIBE), another device served by the same poller
// connects, subscribes and gets its PINGRESP; the waiting device then gets
// its answers, in the order of its packets, including those it sent while
// it waited.
func TestSlowStoreDoesNotStallPoller(t *testing.T) {
	for _, auth := range []bool{true, false} {
		name := map[bool]string{true: "connect", false: "subscribe"}[auth]
		t.Run(name, func(t *testing.T) {
			h := &heldCore{auth: auth, entered: make(chan struct{}), release: make(chan struct{})}
			e := startGatewayWith(t, Options{Offload: true}, netpoll.Options{Pollers: 1}, func(r Registry, i Inbox) (Registry, Inbox) {
				h.Registry, h.Inbox = r, i
				return h, h
			})
			// A poller that waited would stay stuck in the held call:
			// the engine's shutdown needs it let go when the test fails.
			t.Cleanup(h.let)
			slow, slowSecret := e.device()
			h.slow.Store(slow.ID)
			other, otherSecret := e.device()
			e.pushTo(slow, `"waiting"`)

			a := e.dial(packet.Version311)
			if !auth {
				if ack := a.connect(creds(slow, slowSecret)); ack.ReasonCode != packet.ReasonSuccess {
					t.Fatalf("CONNACK %s", ack.ReasonCode)
				}
			} else {
				a.send(creds(slow, slowSecret))
			}
			a.send(&packet.Subscribe{PacketID: 7, Subscriptions: []packet.Subscription{{Filter: "devices/" + slow.ID, QoS: 1}}})
			a.send(&packet.Pingreq{})
			<-h.entered

			b := e.dial(packet.Version311)
			b.session(other, otherSecret, 1)
			b.send(&packet.Pingreq{})
			if p := b.read(); p.Type() != packet.TypePingresp {
				t.Fatalf("the other device got %s, want PINGRESP", p.Type())
			}

			h.let()
			if auth {
				if ack, ok := a.read().(*packet.Connack); !ok || ack.ReasonCode != packet.ReasonSuccess {
					t.Fatalf("first answer to the held device: %+v, want a successful CONNACK", ack)
				}
			}
			// SUBACK, then the inbox and the PINGRESP: the inbox is sent
			// by the stream as it attaches, before the packets that came
			// after the SUBSCRIBE are read.
			if sa, ok := a.read().(*packet.Suback); !ok || sa.PacketID != 7 {
				t.Fatalf("got %+v, want the SUBACK of packet 7", sa)
			}
			if _, id := a.publish(); id == "" {
				t.Fatal("the waiting message has no id")
			}
			if p := a.read(); p.Type() != packet.TypePingresp {
				t.Fatalf("got %s, want PINGRESP last", p.Type())
			}
		})
	}
}
