package cluster

import (
	"context"
	"sync"
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
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
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

	var (
		mu       sync.Mutex
		accepted = []string{first}
	)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := c.push(pusher, targets, "stream")
			mu.Lock()
			accepted = append(accepted, id)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted)
	}
	waitFor(t, 10*time.Second, "pushes before the kill", func() bool { return count() >= 30 })
	a.Kill()
	killed := count()
	waitFor(t, 20*time.Second, "pushes after the kill", func() bool { return count() >= killed+60 })
	close(stop)
	<-done

	mqttIn.wait(t, 30*time.Second, "MQTT device after its node was killed", accepted...)
	pollIn.wait(t, 30*time.Second, "long-polling device after its node was killed", accepted...)
	t.Logf("%d pushes accepted, %d after the kill", len(accepted), len(accepted)-killed)
}
