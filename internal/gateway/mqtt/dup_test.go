package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
)

// dupClient is a device on the codec client that acknowledges every
// PUBLISH at once and counts, per message ID, the copies that came without
// the DUP flag.
type dupClient struct {
	dev    push.Device
	secret string
	v      byte
	nc     net.Conn

	mu    sync.Mutex
	first map[string]int // message ID -> PUBLISHes of it without DUP
	err   error
}

// open connects and subscribes; then a goroutine reads and acknowledges
// until the connection closes.
func (c *dupClient) open(addr string) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c.nc = nc
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := packet.WritePacket(nc, creds(c.dev, c.secret), c.v); err != nil {
		return err
	}
	if p, err := packet.ReadPacket(nc, c.v, 1<<20); err != nil {
		return err
	} else if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != packet.ReasonSuccess {
		return fmt.Errorf("answer to CONNECT: %+v", p)
	}
	sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "devices/" + c.dev.ID, QoS: 1}}}
	if err := packet.WritePacket(nc, sub, c.v); err != nil {
		return err
	}
	nc.SetDeadline(time.Time{})
	go c.read()
	return nil
}

func (c *dupClient) read() {
	suback := false
	for {
		p, err := packet.ReadPacket(c.nc, c.v, 1<<20)
		if err != nil {
			return // closed at the end of the test
		}
		switch p := p.(type) {
		case *packet.Suback:
			if suback {
				c.fail(fmt.Errorf("a second SUBACK"))
			}
			suback = true
		case *packet.Publish:
			var m struct{ ID string }
			if err := json.Unmarshal(p.Payload, &m); err != nil {
				c.fail(err)
				return
			}
			if !p.Dup {
				c.mu.Lock()
				c.first[m.ID]++
				c.mu.Unlock()
			}
			if err := packet.WritePacket(c.nc, &packet.Puback{PacketID: p.PacketID}, c.v); err != nil {
				return
			}
		default:
			c.fail(fmt.Errorf("unexpected %s", p.Type()))
		}
	}
}

func (c *dupClient) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *dupClient) received() (distinct, dups int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.first {
		if n > 1 {
			dups += n - 1
		}
	}
	return len(c.first), dups, c.err
}

// Devices that connect and subscribe while broadcasts are being offered to
// the devices already connected, and acknowledge everything at once, get
// each broadcast once: no PUBLISH of a message they have not acknowledged
// comes twice without DUP, with no reconnect.
func TestNoDuplicatesWhileConnectingDuringBroadcasts(t *testing.T) {
	const (
		connected  = 300
		connecting = 300
		broadcasts = 30
		pushers    = 4
	)
	e := startGateway(t, Options{Window: 8})
	ctx := context.Background()
	clients := make([]*dupClient, connected+connecting)
	errs := make(chan error, len(clients))
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			d, secret, err := e.reg.Register(ctx, registry.Registration{AppKey: e.app.Key, Platform: push.Android})
			if err != nil {
				errs <- err
				return
			}
			v := []byte{packet.Version311, packet.Version5}[i%2]
			clients[i] = &dupClient{dev: d, secret: secret, v: v, first: make(map[string]int)}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range clients {
			if c.nc != nil {
				c.nc.Close()
			}
		}
	})
	for _, c := range clients[:connected] {
		if err := c.open(e.addr); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the connected devices to subscribe", func() bool { return e.hub.Len() == connected })

	openErrs := make(chan error, connecting)
	var run sync.WaitGroup
	work := make(chan struct{})
	for range pushers {
		run.Go(func() {
			for range work {
				if _, err := e.svc.Push(ctx, e.app, &push.Request{Audience: &push.Audience{All: true}, Message: json.RawMessage(`"b"`)}); err != nil {
					openErrs <- err
				}
			}
		})
	}
	joining := make(chan *dupClient)
	for range 16 {
		run.Go(func() {
			for c := range joining {
				if err := c.open(e.addr); err != nil {
					openErrs <- err
				}
			}
		})
	}
	go func() {
		for range broadcasts {
			work <- struct{}{}
		}
		close(work)
	}()
	for _, c := range clients[connected:] {
		joining <- c
	}
	close(joining)
	run.Wait()
	close(openErrs)
	for err := range openErrs {
		t.Fatal(err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for _, c := range clients {
		for {
			n, _, err := c.received()
			if err != nil {
				t.Fatalf("device %s: %v", c.dev.ID, err)
			}
			if n == broadcasts && e.pending(c.dev) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %s received %d of %d broadcasts, %d still pending", c.dev.ID, n, broadcasts, e.pending(c.dev))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	total, affected := 0, 0
	for _, c := range clients {
		if _, dups, _ := c.received(); dups > 0 {
			total += dups
			affected++
		}
	}
	if total > 0 {
		t.Fatalf("%d PUBLISHes repeated a message without DUP, to %d of %d devices", total, affected, len(clients))
	}
}
