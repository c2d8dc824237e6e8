package cluster

import (
	"net/http"
	"testing"
	"time"
)

// The periodic recheck is off (an hour) in these tests, so that what a
// device gets can only have come through the bus or its first inbox read.
const noRecheck = "--recheck-interval=1h"

// A push accepted on one node reaches a device connected to another at
// once, on every transport; a tag push and a broadcast reach matching
// devices on every node.
func TestPushThroughAnotherNode(t *testing.T) {
	c := startCluster(t, 3, noRecheck)
	a, b, third := c.nodes[0], c.nodes[1], c.nodes[2]

	type dev struct {
		name string
		in   *inbox
		id   string
	}
	var devs []dev
	for _, transport := range []string{"mqtt", "ws", "sse", "poll"} {
		reg := c.register(third, "news")
		in := newInbox()
		switch transport {
		case "mqtt":
			connectMQTT(t, a, reg, in)
		case "ws":
			connectWS(t, a, reg, in)
		case "sse":
			// Acks go to another node than the stream's: the window
			// still refills (the ack reaches the stream through the bus).
			connectSSE(t, a, third, reg, in)
		case "poll":
			listenPoll(t, a, reg, in)
		}
		devs = append(devs, dev{transport, in, reg.RegistrationID})
	}
	// A device on node b too, for the fan-out pushes.
	onB := newInbox()
	regB := c.register(a, "news")
	connectWS(t, b, regB, onB)

	for _, d := range devs {
		// More than one window's worth would need acks to come back
		// through the bus; 70 > the WebSocket and SSE window of 64.
		var ids []string
		for i := range 70 {
			ids = append(ids, c.push(b, to(d.id), "direct "+d.name+" "+string(rune('a'+i%26))))
		}
		d.in.wait(t, 10*time.Second, d.name+" device on node a, pushes through node b", ids...)
	}

	tagged := c.push(third, map[string]any{"tag": []string{"news"}}, "tagged")
	all := c.push(a, "all", "broadcast")
	for _, d := range devs {
		d.in.wait(t, 10*time.Second, d.name+" device, fan-out pushes through other nodes", tagged, all)
	}
	onB.wait(t, 10*time.Second, "device on node b", tagged, all)
}

// A direct push costs bus messages only toward the node holding its
// target; a broadcast one per other node. Each count is read once a
// sentinel push, published after it on the same connection, has arrived:
// NATS handles one connection's messages in order, so by then every
// delivery of the push measured is counted, and no wait is guessed.
func TestBusCost(t *testing.T) {
	c := startCluster(t, 3, noRecheck)
	a, b, third := c.nodes[0], c.nodes[1], c.nodes[2]
	in, sentinelIn := newInbox(), newInbox()
	reg, sentinel := c.register(a), c.register(a)
	connectWS(t, a, reg, in)
	connectWS(t, third, sentinel, sentinelIn)
	first := c.push(b, to(reg.RegistrationID), "warm up")
	in.wait(t, 10*time.Second, "warm-up push", first)

	out := func() int64 {
		v, err := c.bus.srv.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.OutMsgs
	}
	// Acks travel on the device's subject, which only the node sending
	// them listens on: they cost nothing past the bus.
	before := out()
	direct := c.push(b, to(reg.RegistrationID), "direct")
	after := c.push(b, to(sentinel.RegistrationID), "sentinel")
	in.wait(t, 10*time.Second, "direct push", direct)
	sentinelIn.wait(t, 10*time.Second, "sentinel push", after)
	if n := out() - before - 1; n != 1 {
		t.Errorf("a direct push to a device on one node cost %d bus deliveries, want 1", n)
	}

	before = out()
	all := c.push(b, "all", "broadcast")
	again := c.push(b, "all", "sentinel broadcast")
	in.wait(t, 10*time.Second, "broadcast", all, again)
	sentinelIn.wait(t, 10*time.Second, "sentinel broadcast", all, again)
	if n := out() - before; n != 4 {
		t.Errorf("two broadcasts in a cluster of 3 cost %d bus deliveries, want 4 (one per other node each)", n)
	}
}

// A device that connects again on another node keeps one live session:
// the old one is closed with MQTT 5's 0x8E, and pushes reach the new one.
func TestTakeOverAcrossNodes(t *testing.T) {
	c := startCluster(t, 3, noRecheck)
	a, b, third := c.nodes[0], c.nodes[1], c.nodes[2]
	reg := c.register(third)
	oldIn, newIn := newInbox(), newInbox()
	old := connectMQTT(t, a, reg, oldIn)
	connectMQTT(t, b, reg, newIn)
	select {
	case rc := <-old.disconnected:
		if rc != 0x8E {
			t.Errorf("the connection on node a got DISCONNECT %#x, want 0x8E (session taken over)", rc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection on node a was not closed when the device connected to node b")
	}
	id := c.push(third, to(reg.RegistrationID), "after the takeover")
	newIn.wait(t, 10*time.Second, "the new connection", id)
	if oldIn.has(id) {
		t.Error("the closed connection got the push too")
	}
}

// A device deleted through one node loses its connection on another.
func TestDeleteAcrossNodes(t *testing.T) {
	c := startCluster(t, 2, noRecheck)
	a, b := c.nodes[0], c.nodes[1]
	reg := c.register(a)
	d := connectWS(t, a, reg, newInbox())
	if st := c.call(b, "DELETE", "/v1/devices/"+reg.RegistrationID, nil, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE: %d", st)
	}
	select {
	case code := <-d.closed:
		if code != 4004 {
			t.Errorf("close code %d after the device was deleted on another node, want 4004", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the WebSocket on node a stayed open after the device was deleted through node b")
	}
}
