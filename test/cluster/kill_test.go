package cluster

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
)

// The node holding a device is killed (SIGKILL) while pushes stream in
// through another: the device, given every node's address, reconnects to
// a live one and receives every accepted push.
func TestKillHoldingNode(t *testing.T) {
	c := startCluster(t, 3)
	a, b, pusher := c.nodes[0], c.nodes[1], c.nodes[2]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait() // the devices end once cancel, deferred next, has run
	defer cancel()

	// One device over MQTT, one long-polling; a first, then b.
	mqttReg, pollReg := c.register(pusher), c.register(pusher)
	mqttIn, pollIn := newInbox(), newInbox()
	wg.Go(func() {
		client.NewDevice(*mqttReg, nil).ListenMQTTAny(ctx, []string{a.MQTTURL, b.MQTTURL}, func(m client.Message) error {
			mqttIn.add(m.ID)
			return nil
		})
	})
	pr := *pollReg
	pr.Server, pr.Servers = a.URL, []string{a.URL, b.URL}
	wg.Go(func() {
		client.NewDevice(pr, nil).Listen(ctx, func(m client.Message) error {
			pollIn.add(m.ID)
			return nil
		})
	})
	targets := to(mqttReg.RegistrationID, pollReg.RegistrationID)
	first := c.push(pusher, targets, "first")
	mqttIn.wait(t, 10*time.Second, "MQTT device on node a", first)
	pollIn.wait(t, 10*time.Second, "long-polling device on node a", first)

	stream := c.streamPushes(pusher, targets)
	count := stream.count
	waitFor(t, 10*time.Second, "pushes before the kill", func() bool { return count() >= 30 })
	a.Kill()
	killed := count()
	waitFor(t, 20*time.Second, "pushes after the kill", func() bool { return count() >= killed+60 })
	accepted := append([]string{first}, stream.end(t)...)

	mqttIn.wait(t, 30*time.Second, "MQTT device after its node was killed", accepted...)
	pollIn.wait(t, 30*time.Second, "long-polling device after its node was killed", accepted...)
	t.Logf("%d pushes accepted, %d after the kill", len(accepted), len(accepted)-killed)
}

// A node drained with SIGTERM sends its MQTT 5 devices to another node:
// DISCONNECT 0x9C with that node as Server Reference; the device connects
// there and gets what is pushed meanwhile.
func TestDrainSendsMQTT5DevicesElsewhere(t *testing.T) {
	c := startCluster(t, 1, noRecheck)
	other := c.nodes[0]
	otherAddr := strings.TrimPrefix(other.MQTTURL, "mqtt://")
	draining := c.start(1, noRecheck, "--mqtt-server-reference", otherAddr)
	c.nodes = append(c.nodes, draining)

	reg := c.register(other)
	in := newInbox()
	d := connectMQTT(t, draining, reg, in)
	draining.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case p := <-d.disconnect:
		if p.ReasonCode != 0x9C || p.Properties == nil || p.Properties.ServerReference != otherAddr {
			t.Fatalf("DISCONNECT %#x %+v on drain, want 0x9C with Server Reference %s", p.ReasonCode, p.Properties, otherAddr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT when the node drained")
	}
	<-draining.Done()
	if code := draining.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the drained node exited %d, want 0", code)
	}
	id := c.push(other, to(reg.RegistrationID), "after the drain")
	connectMQTT(t, other, reg, in)
	in.wait(t, 10*time.Second, "the device on the node it was sent to", id)
}
