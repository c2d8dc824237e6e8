package cluster

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/test/heraldtest"
)

// leaders returns the nodes whose log says they took lease name since
// they started.
func leaders(c *cluster, name string) []*heraldtest.Server {
	var out []*heraldtest.Server
	for _, n := range c.nodes {
		if strings.Contains(n.Log.String(), `msg="this node leads" lease=`+name) {
			out = append(out, n)
		}
	}
	return out
}

// Cluster-wide work (scheduled messages, the sweep, the relay queue) runs
// on one node at a time, and another node takes it over when that one is
// killed: a message scheduled after the kill still fires.
func TestLeasesMoveOnKill(t *testing.T) {
	c := startCluster(t, 3, noRecheck)
	for _, lease := range []string{"schedule", "sweep", "relay"} {
		waitFor(t, 10*time.Second, "a node takes the "+lease+" lease", func() bool { return len(leaders(c, lease)) > 0 })
		if l := leaders(c, lease); len(l) != 1 {
			t.Fatalf("%d nodes lead %s, want exactly one", len(l), lease)
		}
	}
	dead := leaders(c, "schedule")[0]
	dead.Kill()
	var alive []*heraldtest.Server
	for _, n := range c.nodes {
		if n != dead {
			alive = append(alive, n)
		}
	}

	in := newInbox()
	reg := c.register(alive[0])
	connectWS(t, alive[0], reg, in)
	sendAt := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
	var out struct {
		MsgID string `json:"msg_id"`
	}
	if st := c.call(alive[1], "POST", "/v1/push", map[string]any{
		"audience": to(reg.RegistrationID), "message": map[string]string{"body": "scheduled"},
		"options": map[string]any{"send_at": sendAt},
	}, &out); st != http.StatusAccepted {
		t.Fatalf("scheduled push: %d", st)
	}
	in.wait(t, 15*time.Second, "a message scheduled after the schedule leader was killed", out.MsgID)
	if l := leaders(c, "schedule"); len(l) != 2 || l[0] != dead && l[1] != dead {
		t.Errorf("schedule leaders since start: %d nodes; want the killed one and one survivor", len(l))
	}
}
