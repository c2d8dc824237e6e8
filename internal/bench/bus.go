package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// The bus counter measures what a cluster's nodes put on NATS: it
// subscribes to every subject of the run's prefix and classifies each
// message by its subject (prefix.fan, prefix.d.<device>) and by the
// envelope's kind ("k", the routers' wire format: m a message, a acks, ...).
// What NATS delivers onward to the nodes it cannot see; it is counted from
// the subscriptions the router documents (internal/router/nats): every node
// listens on prefix.fan, and only the node holding a device on its
// subject, and no node is sent its own messages (NoEcho). With a NATS
// monitoring endpoint (--nats-monitor) the server's own counters are read
// beside, as a check on that model; on a shared NATS they include others'
// traffic.

// busCounts are messages seen on the bus.
type busCounts struct {
	Fan    int64 // messages on prefix.fan (broadcasts and tag fan-outs)
	Direct int64 // messages on device subjects (direct pushes)
	Acks   int64 // acknowledgements on device subjects
	Other  int64 // everything else: changes, takeovers, presence
	// Delivered is what NATS hands on to nodes for the messages above,
	// by the subscription model (see above).
	Delivered int64
}

func (c busCounts) sub(d busCounts) busCounts {
	return busCounts{c.Fan - d.Fan, c.Direct - d.Direct, c.Acks - d.Acks, c.Other - d.Other, c.Delivered - d.Delivered}
}

// total is every message published.
func (c busCounts) total() int64 { return c.Fan + c.Direct + c.Acks + c.Other }

// busCounter counts one run's bus traffic.
type busCounter struct {
	nc     *natsgo.Conn
	sub    *natsgo.Subscription
	prefix string
	nodes  int               // nodes of the cluster, all of which listen on prefix.fan
	holder map[string]string // device ID -> name of the node it is connected to; read-only

	mu      sync.Mutex
	c       busCounts // guarded by mu
	lastAck time.Time // when the latest ack arrived; guarded by mu
}

// startBusCounter subscribes to prefix.> on the NATS at url.
func startBusCounter(url, prefix string, nodes int, holder map[string]string) (*busCounter, error) {
	nc, err := natsgo.Connect(url, natsgo.Name("herald bench counter"), natsgo.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("bench: the bus counter: %w", err)
	}
	b := &busCounter{nc: nc, prefix: prefix, nodes: nodes, holder: holder}
	if b.sub, err = nc.Subscribe(prefix+".>", b.count); err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench: the bus counter: %w", err)
	}
	// A broadcast's acknowledgements arrive as fast as the nodes take
	// them; none may be dropped as a slow consumer.
	b.sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench: the bus counter: %w", err)
	}
	return b, nil
}

func (b *busCounter) close() { b.nc.Close() }

// envelopeHead is what the counter reads of a bus message.
type envelopeHead struct {
	Kind string `json:"k"`
	Node string `json:"n"`
}

func (b *busCounter) count(m *natsgo.Msg) {
	var e envelopeHead
	json.Unmarshal(m.Data, &e) // an unreadable one counts as other
	d := classify(b.prefix, m.Subject, e, b.nodes, b.holder)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.c.add(d)
	if d.Acks > 0 {
		b.lastAck = time.Now()
	}
}

// waitAcks waits until n acks have arrived since base was taken, or ctx
// is done, and returns when the latest arrived. A node publishes an ack
// once the store has it, so this is when the nodes' work for a message
// is done.
func (b *busCounter) waitAcks(ctx context.Context, base busCounts, n int64) (time.Time, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		b.mu.Lock()
		got, at := b.c.Acks-base.Acks, b.lastAck
		b.mu.Unlock()
		if got >= n {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return at, fmt.Errorf("bench: %d of %d acks on the bus: %w", got, n, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *busCounts) add(d busCounts) {
	c.Fan += d.Fan
	c.Direct += d.Direct
	c.Acks += d.Acks
	c.Other += d.Other
	c.Delivered += d.Delivered
}

// classify counts one message on subject with envelope head e.
func classify(prefix, subject string, e envelopeHead, nodes int, holder map[string]string) busCounts {
	var c busCounts
	if subject == prefix+".fan" {
		if e.Kind == "m" {
			c.Fan = 1
		} else {
			c.Other = 1
		}
		c.Delivered = int64(max(nodes-1, 0))
		return c
	}
	id, ok := strings.CutPrefix(subject, prefix+".d.")
	switch {
	case ok && e.Kind == "m":
		c.Direct = 1
	case ok && e.Kind == "a":
		c.Acks = 1
	default:
		c.Other = 1
	}
	if h := holder[id]; ok && h != "" && h != e.Node {
		c.Delivered = 1
	}
	return c
}

// snapshot waits until the bus has passed on what was published before
// it, then returns the counts.
func (b *busCounter) snapshot() busCounts {
	// Other connections' messages that the server routed before our PONG
	// are written to us before it; a short wait covers the nodes'
	// publishes still in their own buffers.
	time.Sleep(100 * time.Millisecond)
	b.nc.FlushTimeout(5 * time.Second)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c
}

// varz is what the bench reads of a NATS server's /varz.
type varz struct {
	InMsgs  int64 `json:"in_msgs"`
	OutMsgs int64 `json:"out_msgs"`
}

// readVarz reads the monitoring endpoint at base (http://host:8222).
func readVarz(ctx context.Context, hc *http.Client, base string) (varz, error) {
	var v varz
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/varz", nil)
	if err != nil {
		return v, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("bench: %s/varz: %s", base, resp.Status)
	}
	return parseVarz(resp.Body)
}

func parseVarz(r io.Reader) (varz, error) {
	var v varz
	if err := json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&v); err != nil {
		return v, fmt.Errorf("bench: /varz: %w", err)
	}
	return v, nil
}
