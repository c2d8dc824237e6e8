// Package cluster runs several real `herald serve` processes as one
// cluster: the real PostgreSQL at 127.0.0.1:5432 (skipped without it,
// failed under CI=true) and a NATS server the test starts in its own
// process (nats-server/v2), so that it can stop and start the bus.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// bus is an embedded NATS server on a port of its own, which Stop and
// Start take down and bring back on the same port.
type bus struct {
	t    *testing.T
	port int
	srv  *natsserver.Server
}

func startBus(t *testing.T) *bus {
	t.Helper()
	b := &bus{t: t, port: -1}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

func (b *bus) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", b.port) }

// Start runs the server, on the port of the last start if there was one.
func (b *bus) Start() {
	b.t.Helper()
	port := b.port
	if port < 0 {
		port = natsserver.RANDOM_PORT
	}
	var err error
	for try := 0; try < 50; try++ { // the old listener's port may linger a moment
		b.srv, err = natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			b.t.Fatal(err)
		}
		go b.srv.Start()
		if b.srv.ReadyForConnections(5 * time.Second) {
			b.port = b.srv.Addr().(*net.TCPAddr).Port
			return
		}
		b.srv.Shutdown()
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("NATS did not start on port %d", port)
}

// Stop shuts the server down; nodes see their connection drop.
func (b *bus) Stop() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// messagesIn is how many messages the bus has taken from its clients.
func (b *bus) messagesIn() int64 {
	v, err := b.srv.Varz(nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return v.InMsgs
}

// cluster is n nodes on one PostgreSQL schema and one bus.
type cluster struct {
	t      *testing.T
	bus    *bus
	pgURL  string
	schema string
	nodes  []*heraldtest.Server
	appKey string
	secret string
	proxy  *pgProxy // between the nodes and PostgreSQL, when a test cuts it
}

// startCluster starts n nodes one after another (the first creates the
// schema and the default app), each with extra flags.
func startCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	return startClusterWith(t, n, nil, extra...)
}

// startClusterWith is startCluster with setup run before the first node
// starts.
func startClusterWith(t *testing.T, n int, setup func(*cluster), extra ...string) *cluster {
	t.Helper()
	url, schema := heraldtest.PostgresSchema(t)
	c := &cluster{t: t, bus: startBus(t), pgURL: url, schema: schema}
	if setup != nil {
		setup(c)
	}
	for i := range n {
		c.nodes = append(c.nodes, c.start(i, extra...))
	}
	c.appKey, c.secret = c.nodes[0].AppKey, c.nodes[0].Secret
	if c.secret == "" {
		t.Fatal("the first node did not show the default app's master secret")
	}
	return c
}

func (c *cluster) start(i int, extra ...string) *heraldtest.Server {
	args := append([]string{"--postgres", c.pgURL, "--postgres-schema", c.schema, "--nats", c.bus.URL(),
		"--mqtt", "127.0.0.1:0", "--node-name", "n" + strconv.Itoa(i), "--log-level", "debug"}, extra...)
	return heraldtest.Start(c.t, c.t.TempDir(), args...)
}

// call makes an API call with the app's master secret and decodes the
// answer into out; it returns the status.
func (c *cluster) call(node *heraldtest.Server, method, path string, in, out any) int {
	c.t.Helper()
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, node.URL+path, &body)
	req.SetBasicAuth(c.appKey, c.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// register registers a device through node with the given tags.
func (c *cluster) register(node *heraldtest.Server, tags ...string) *client.Registration {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := client.Register(ctx, nil, node.URL, client.RegisterRequest{AppKey: c.appKey, Platform: "android", Tags: tags})
	if err != nil {
		c.t.Fatalf("register: %v", err)
	}
	return reg
}

// push sends a push through node and returns its message ID.
func (c *cluster) push(node *heraldtest.Server, audience any, body string) string {
	c.t.Helper()
	id, err := c.tryPush(node, audience, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// tryPush is push for a goroutine other than the test's, which may not
// fail the test itself.
func (c *cluster) tryPush(node *heraldtest.Server, audience any, body string) (string, error) {
	var in bytes.Buffer
	json.NewEncoder(&in).Encode(map[string]any{"audience": audience, "message": map[string]string{"body": body}})
	req, _ := http.NewRequest("POST", node.URL+"/v1/push", &in)
	req.SetBasicAuth(c.appKey, c.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("push through %s: %w", node.URL, err)
	}
	defer resp.Body.Close()
	var out struct {
		MsgID string `json:"msg_id"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("push through %s: %d %s", node.URL, resp.StatusCode, out.Error.Code)
	}
	return out.MsgID, nil
}

// pushStream pushes to audience through node, one push after another,
// until stop; it keeps the IDs of the pushes answered 202.
type pushStream struct {
	mu       sync.Mutex
	accepted []string
	err      error // the first push that was not accepted
	stop     chan struct{}
	done     chan struct{}
}

func (c *cluster) streamPushes(node *heraldtest.Server, audience any) *pushStream {
	p := &pushStream{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			id, err := c.tryPush(node, audience, "stream")
			p.mu.Lock()
			if err != nil {
				p.err = err
				p.mu.Unlock()
				return
			}
			p.accepted = append(p.accepted, id)
			p.mu.Unlock()
		}
	}()
	return p
}

// count is how many pushes were accepted so far.
func (p *pushStream) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.accepted)
}

// end stops the stream and returns the accepted pushes, failing t if one
// was refused.
func (p *pushStream) end(t *testing.T) []string {
	t.Helper()
	close(p.stop)
	<-p.done
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.accepted
}

func to(ids ...string) map[string]any { return map[string]any{"registration_id": ids} }

// inbox collects the message IDs a device receives, whatever its transport.
type inbox struct {
	mu   sync.Mutex
	got  map[string]int
	cond chan struct{} // closed and replaced on each arrival
}

func newInbox() *inbox { return &inbox{got: map[string]int{}, cond: make(chan struct{})} }

func (in *inbox) add(id string) {
	in.mu.Lock()
	in.got[id]++
	close(in.cond)
	in.cond = make(chan struct{})
	in.mu.Unlock()
}

func (in *inbox) has(id string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.got[id] > 0
}

// wait returns once every id has arrived, failing t after timeout with
// what is missing.
func (in *inbox) wait(t *testing.T, timeout time.Duration, what string, ids ...string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		in.mu.Lock()
		var missing []string
		for _, id := range ids {
			if in.got[id] == 0 {
				missing = append(missing, id)
			}
		}
		cond := in.cond
		in.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-cond:
		case <-deadline.C:
			t.Fatalf("%s: %d of %d messages missing after %v, e.g. %s", what, len(missing), len(ids), timeout, missing[0])
		}
	}
}

func (in *inbox) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logCount counts the lines of node's log that contain s.
func logCount(node *heraldtest.Server, s string) int {
	return strings.Count(node.Log.String(), s)
}
