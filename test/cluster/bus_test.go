package cluster

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// NATS stopped and started again during a stream of pushes: every
// accepted push reaches the online devices, which stay connected; each
// node's sessions read their inboxes once the bus is back.
func TestBusOutage(t *testing.T) {
	c := startCluster(t, 3, noRecheck)
	a, b, pusher := c.nodes[0], c.nodes[1], c.nodes[2]
	regA, regB := c.register(pusher), c.register(pusher)
	inA, inB := newInbox(), newInbox()
	mq := connectMQTT(t, a, regA, inA)
	ws := connectWS(t, b, regB, inB)

	stream := c.streamPushes(pusher, to(regA.RegistrationID, regB.RegistrationID))
	count := stream.count
	waitFor(t, 10*time.Second, "pushes before the outage", func() bool { return count() >= 30 })
	c.bus.Stop()
	during := count()
	waitFor(t, 10*time.Second, "pushes during the outage", func() bool { return count() >= during+30 })
	c.bus.Start()
	waitFor(t, 15*time.Second, "the nodes reconnect to the bus", func() bool {
		return logCount(a, "bus: reconnected to NATS") > 0 && logCount(b, "bus: reconnected to NATS") > 0
	})
	after := count()
	waitFor(t, 10*time.Second, "pushes after the outage", func() bool { return count() >= after+30 })
	accepted := stream.end(t)

	inA.wait(t, 20*time.Second, "MQTT device on node a", accepted...)
	inB.wait(t, 20*time.Second, "WebSocket device on node b", accepted...)
	select {
	case rc := <-mq.disconnected:
		t.Errorf("the MQTT device was disconnected (%#x)", rc)
	default:
	}
	if mq.closed.Load() {
		t.Error("the MQTT device's connection broke")
	}
	select {
	case code := <-ws.closed:
		t.Errorf("the WebSocket device was disconnected (%d)", code)
	default:
	}
	for _, n := range []string{"a", "b"} {
		node := map[string]int{"a": 0, "b": 1}[n]
		if logCount(c.nodes[node], "bus: live sessions read their inboxes") == 0 {
			t.Errorf("node %s did not have its sessions read their inboxes after the bus came back", n)
		}
	}
	t.Logf("%d pushes accepted, %d of them during the outage", len(accepted), after-during)
}

// A node that cannot reach NATS at start says so and exits before it
// creates anything: the next start, with the bus up, still shows the
// default app's master secret.
func TestStartWithoutBus(t *testing.T) {
	url, schema := heraldtest.PostgresSchema(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "nats://" + dead.Addr().String()
	dead.Close()
	dir := t.TempDir()
	cmd := exec.Command(heraldtest.Bin(), "serve", "--data", dir, "--init", "--http", "127.0.0.1:0", "--mqtt", "",
		"--postgres", url, "--postgres-schema", schema, "--nats", deadURL)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("herald served without its bus:\n%s", out)
	}
	if !strings.Contains(string(out), "is NATS running at --nats "+deadURL) {
		t.Errorf("the refusal does not say what is wrong:\n%s", out)
	}
	b := startBus(t)
	node := heraldtest.Start(t, dir, "--init", "--postgres", url, "--postgres-schema", schema, "--nats", b.URL())
	if node.Secret == "" {
		t.Error("after a start refused for its bus, the next start did not show the default app's master secret")
	}
}
