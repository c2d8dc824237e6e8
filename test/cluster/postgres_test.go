package cluster

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// pgProxy stands between the nodes and PostgreSQL, so that a test can take
// the database away (every connection cut, new ones refused) and give it
// back on the same address without touching the machine's server.
type pgProxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func startPGProxy(t *testing.T, target string) *pgProxy {
	p := &pgProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Start listens, on the address of the last start if there was one.
func (p *pgProxy) Start() {
	p.t.Helper()
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for try := 0; try < 50; try++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
}

func (p *pgProxy) relay(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// Stop refuses new connections and cuts the open ones, as a database that
// went down would.
func (p *pgProxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// through returns pgURL with its host replaced by the proxy's.
func (p *pgProxy) through(pgURL string) string {
	u, err := url.Parse(pgURL)
	if err != nil {
		p.t.Fatal(err)
	}
	p.target = u.Host
	if !strings.Contains(p.target, ":") {
		p.target += ":5432"
	}
	u.Host = p.addr
	return u.String()
}

// PostgreSQL down: pushes are answered 503 store_unavailable (never 202),
// /readyz says why, connected devices stay connected, and everything works
// again when the database is back.
func TestPostgresDown(t *testing.T) {
	c := startClusterWith(t, 2, func(c *cluster) {
		proxy := startPGProxy(t, "")
		c.pgURL = proxy.through(c.pgURL)
		c.proxy = proxy
	}, noRecheck)
	a, b := c.nodes[0], c.nodes[1]
	in := newInbox()
	reg := c.register(b)
	ws := connectWS(t, a, reg, in)
	first := c.push(b, to(reg.RegistrationID), "before")
	in.wait(t, 10*time.Second, "a push before the outage", first)

	c.proxy.Stop()
	for i := range 5 {
		var out struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		st := c.call(b, "POST", "/v1/push", map[string]any{"audience": to(reg.RegistrationID), "message": map[string]int{"n": i}}, &out)
		if st != http.StatusServiceUnavailable || out.Error.Code != "store_unavailable" {
			t.Fatalf("push %d with PostgreSQL down: %d %q, want 503 store_unavailable", i, st, out.Error.Code)
		}
	}
	for _, n := range c.nodes {
		resp, err := http.Get(n.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz with PostgreSQL down: %d, want 503", resp.StatusCode)
		}
	}

	c.proxy.Start()
	var back string
	waitFor(t, 30*time.Second, "pushes accepted again once PostgreSQL is back", func() bool {
		var out struct {
			MsgID string `json:"msg_id"`
		}
		if c.call(b, "POST", "/v1/push", map[string]any{"audience": to(reg.RegistrationID), "message": "after"}, &out) == http.StatusAccepted {
			back = out.MsgID
			return true
		}
		return false
	})
	in.wait(t, 10*time.Second, "a push after the outage", back)
	select {
	case code := <-ws.closed:
		t.Errorf("the WebSocket device was disconnected during the outage (%d)", code)
	default:
	}
	for _, n := range c.nodes {
		waitFor(t, 10*time.Second, "/readyz 200 again", func() bool {
			resp, err := http.Get(n.URL + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
}
