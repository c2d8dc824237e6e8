//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The cluster workload: Nodes `herald serve` processes in cluster mode on
// one PostgreSQL (a fresh schema each run) and one NATS, N devices on
// each, held by swarm workers (worker.go) since no one process may hold
// them all; then, in the same run, one node alone on the same services
// holding N devices. The figures that show scaling on a machine the nodes
// share are per node and per delivery, set against the one node's.

// clusterRun is one target of a cluster run: Nodes nodes, each with its
// devices, its workers, and what the bus carried.
type clusterRun struct {
	o       *Options
	label   string // "c5", "n1": names the run's directory
	schema  string
	prefix  string
	dir     string
	nodes   []*herald
	devs    [][]Device // per node
	workers []*worker
	bus     *busCounter
	debug   []string // each node's profiler address, with Options.Profile
	pgURL   string   // Options.Postgres, naming the nodes' connections (withAppName)
	pgLocal bool     // PostgreSQL's processes are on this machine, for their CPU
	nats    int      // the NATS server's process; 0 when not local
}

// runClusterWorkload runs the cluster workload o.Runs times, each a
// cluster of o.Nodes and a single node, alternating which goes first.
func runClusterWorkload(ctx context.Context, o *Options, rep *Report) error {
	rep.Nodes = o.Nodes
	rep.From = o.From
	cluster := &Target{Name: fmt.Sprintf("%d nodes", o.Nodes)}
	single := &Target{Name: "1 node"}
	targets := []*Target{cluster, single}
	for run := range o.Runs {
		order := []*Target{cluster, single}
		if run%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			nodes := o.Nodes
			if t == single {
				nodes = 1
			}
			fmt.Fprintf(o.Log, "%s: run %d of %d: %d × %d devices (load average %s)\n", t.Name, run+1, o.Runs, nodes, o.N, loadAverage())
			r, err := runCluster(ctx, o, nodes)
			t.Runs = append(t.Runs, r)
			if err != nil {
				finish(rep, targets)
				return fmt.Errorf("%s: %w", t.Name, err)
			}
		}
	}
	finish(rep, targets)
	return nil
}

// runCluster starts nodes nodes, runs the workload on them and stops them.
func runCluster(ctx context.Context, o *Options, nodes int) (r Result, err error) {
	id := randomHex(4)
	c := &clusterRun{o: o, label: fmt.Sprintf("c%d", nodes), schema: "bench_" + id, prefix: "bench" + id}
	c.pgURL = withAppName(o.Postgres, c.schema)
	if nodes == 1 {
		c.label = "n1"
	}
	c.dir = filepath.Join(o.Dir, "cluster", c.label)
	os.RemoveAll(c.dir)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return r, err
	}
	r.Notes = append(r.Notes, fmt.Sprintf("load average at the start: %s", loadAverage()))
	defer func() {
		c.stop()
		if derr := dropSchema(o.Postgres, c.schema); derr != nil {
			r.Notes = append(r.Notes, "dropping the schema: "+derr.Error())
		}
	}()
	if err := c.start(ctx, nodes); err != nil {
		return r, err
	}
	if err := c.register(ctx); err != nil {
		return r, err
	}
	holder := map[string]string{}
	for k, devs := range c.devs {
		for _, d := range devs {
			holder[d.ClientID] = nodeName(k)
		}
	}
	if c.bus, err = startBusCounter(o.NATS, c.prefix, nodes, holder); err != nil {
		return r, err
	}
	if err := c.startWorkers(ctx); err != nil {
		return r, err
	}
	c.findServices()
	m := &clusterMeasure{c: c, r: &r}
	err = m.run(ctx)
	if err == nil {
		// The load now, beside the load at the start: the run's own
		// processes are in both.
		r.Notes = append(r.Notes, fmt.Sprintf("load average at the end: %s", loadAverage()))
	}
	for _, w := range c.workers {
		if st, serr := w.call(ctx, workerRequest{Op: opStatus}); serr == nil {
			r.Errors = append(r.Errors, st.Errors...)
		}
	}
	return r, err
}

func nodeName(k int) string { return "n" + strconv.Itoa(k+1) }

// serveArgs are the flags of node k.
func (c *clusterRun) serveArgs(k, httpPort, mqttPort int) []string {
	args := []string{"serve", "--data", filepath.Join(c.dir, nodeName(k)), "--init",
		"--http", fmt.Sprintf("127.0.0.1:%d", httpPort), "--mqtt", fmt.Sprintf("127.0.0.1:%d", mqttPort),
		"--postgres", c.pgURL, "--postgres-schema", c.schema,
		"--nats", c.o.NATS, "--nats-prefix", c.prefix, "--node-name", nodeName(k),
		"--app-push-rate", "1e9", "--app-push-burst", "1000000000", "--log-level", "warn"}
	return append(args, c.o.ServeArgs...)
}

// start starts the first node alone (it creates the schema and the
// default app, whose credentials its banner shows), then the others at
// once.
func (c *clusterRun) start(ctx context.Context, nodes int) error {
	bin, err := c.bin()
	if err != nil {
		return err
	}
	// Every node of a cluster needs the same secret key and admin token.
	env := append([]string{"HERALD_ADMIN_TOKEN=" + randomHex(16), "HERALD_SECRET_KEY=" + randomHex(32)}, c.o.ServeEnv...)
	c.nodes = make([]*herald, nodes)
	c.debug = make([]string, nodes)
	startNode := func(k int) error {
		httpPort, err := freePort()
		if err != nil {
			return err
		}
		mqttPort, err := freePort()
		if err != nil {
			return err
		}
		h := &herald{hc: newHTTPClient(c.o.Register), workers: c.o.Register, log: c.o.Log,
			base: fmt.Sprintf("http://127.0.0.1:%d", httpPort),
			mqtt: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(mqttPort))}
		c.nodes[k] = h
		args := c.serveArgs(k, httpPort, mqttPort)
		if c.o.Profile > 0 {
			debugPort, err := freePort()
			if err != nil {
				return err
			}
			c.debug[k] = fmt.Sprintf("127.0.0.1:%d", debugPort)
			args = append(args, "--debug-addr", c.debug[k])
		}
		h.proc, err = startProcess(bin, args, env, c.o.ServerCPUs, filepath.Join(c.dir, nodeName(k)+".log"))
		if err != nil {
			return err
		}
		h.pidv = h.proc.pid()
		if err := h.waitReady(ctx, time.Minute); err != nil {
			return fmt.Errorf("node %s: %w", nodeName(k), err)
		}
		if err := waitDial(h.mqtt.String(), 2*time.Second, h.proc); err != nil {
			return fmt.Errorf("%w (node %s, --mqtt %s: %v)", ErrNoMQTT, nodeName(k), h.mqtt, err)
		}
		return nil
	}
	if err := startNode(0); err != nil {
		return err
	}
	b, err := os.ReadFile(c.nodes[0].proc.log)
	if err != nil {
		return err
	}
	key, secret, err := parseBanner(string(b))
	if err != nil {
		return fmt.Errorf("node n1: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for k := 1; k < nodes; k++ {
		wg.Go(func() { errs[k] = startNode(k) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, h := range c.nodes {
		h.cache = &regCache{AppKey: key, MasterSecret: secret}
		// The broadcast outlives its slowest acknowledgement, so that
		// none is refused as expired and the report counts them all.
		h.ttl = int(max(c.o.Timeout, time.Minute) / time.Second)
	}
	return nil
}

func (c *clusterRun) bin() (string, error) {
	if c.o.HeraldBin != "" {
		return c.o.HeraldBin, nil
	}
	return os.Executable()
}

// parseBanner finds the default app's key and master secret in what
// `herald serve` printed on its first start.
func parseBanner(s string) (appKey, masterSecret string, err error) {
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "app_key":
			appKey = f[1]
		case f[0] == "master_secret" && !strings.HasPrefix(f[1], "("):
			masterSecret = f[1]
		}
	}
	if appKey == "" || masterSecret == "" {
		return "", "", errors.New("bench: the banner shows no app_key and master_secret (was the schema not fresh?)")
	}
	return appKey, masterSecret, nil
}

// register registers N devices for each node, the calls spread over all
// nodes (any node takes any call).
func (c *clusterRun) register(ctx context.Context) error {
	total := len(c.nodes) * c.o.N
	all := make([]Device, total)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range c.o.Register {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= total || ctx.Err() != nil {
					return
				}
				h := c.nodes[i%len(c.nodes)]
				var out struct {
					RegistrationID string `json:"registration_id"`
					DeviceSecret   string `json:"device_secret"`
				}
				req := map[string]string{"app_key": h.cache.AppKey, "platform": "other"}
				if _, err := h.call(ctx, "POST", "/v1/devices", h.providerAuth, req, &out); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				all[i] = Device{ClientID: out.RegistrationID, Username: out.RegistrationID, Password: out.DeviceSecret, Topic: "devices/" + out.RegistrationID}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("bench: registering devices: %w", firstErr)
	}
	el := time.Since(start)
	fmt.Fprintf(c.o.Log, "  registered %d devices in %v (%.0f/s)\n", total, el.Round(time.Millisecond), float64(total)/el.Seconds())
	c.devs = make([][]Device, len(c.nodes))
	for k := range c.nodes {
		c.devs[k] = all[k*c.o.N : (k+1)*c.o.N]
	}
	return nil
}

// startWorkers starts, for each node, as many workers as hold its devices
// at PerWorker each.
func (c *clusterRun) startWorkers(ctx context.Context) error {
	bin, err := c.bin()
	if err != nil {
		return err
	}
	type spec struct {
		node int
		devs []Device
	}
	var specs []spec
	for k, devs := range c.devs {
		for _, chunk := range chunks(len(devs), c.o.PerWorker) {
			specs = append(specs, spec{k, devs[chunk[0]:chunk[1]]})
		}
	}
	c.workers = make([]*worker, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() {
			st := workerStart{Addr: c.nodes[s.node].mqtt.String(), Version: c.o.MQTTVersion,
				KeepAlive: uint16(c.o.KeepAlive / time.Second), InFlight: c.o.InFlight, Devices: s.devs}
			c.workers[i], errs[i] = startWorker(ctx, bin, filepath.Join(c.dir, fmt.Sprintf("worker%d.log", i+1)), s.node, st)
		})
	}
	wg.Wait()
	c.workers = slices.DeleteFunc(c.workers, func(w *worker) bool { return w == nil })
	return errors.Join(errs...)
}

// chunks splits n into pieces of at most size, as even as may be: the
// [from, to) bounds of each.
func chunks(n, size int) [][2]int {
	if n <= 0 {
		return nil
	}
	k := (n + size - 1) / size
	out := make([][2]int, k)
	from := 0
	for i := range out {
		to := from + (n-from)/(k-i)
		out[i] = [2]int{from, to}
		from = to
	}
	return out
}

// findServices finds the local PostgreSQL's and NATS's processes, whose
// CPU the run reports beside the nodes'.
func (c *clusterRun) findServices() {
	c.pgLocal = len(pidsByName("postgres")) > 0
	if u, err := url.Parse(strings.Split(c.o.NATS, ",")[0]); err == nil {
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && ip.IsLoopback() {
			port := 4222
			if p, err := strconv.Atoi(u.Port()); err == nil {
				port = p
			}
			c.nats, _ = findListener(port)
		}
	}
}

// stop ends the workers (their devices disconnect first), then the nodes.
func (c *clusterRun) stop() {
	eachWorker(c.workers, func(_ int, w *worker) error { w.stop(30 * time.Second); return nil })
	if c.bus != nil {
		c.bus.close()
	}
	var wg sync.WaitGroup
	for _, h := range c.nodes {
		if h != nil && h.proc != nil {
			wg.Go(func() { h.stop() })
		}
	}
	wg.Wait()
}

// dropSchema removes a run's schema, so that runs do not fill the shared
// PostgreSQL.
func dropSchema(pgURL, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// withAppName sets the application_name of a PostgreSQL URL, so that the
// nodes' connections can be told from others' on a shared server. A
// key=value connection string is returned as it is.
func withAppName(pgURL, name string) string {
	u, err := url.Parse(pgURL)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return pgURL
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// pgProcesses lists the server processes working for the nodes of one
// run: the backends of their connections (application_name app) and
// PostgreSQL's own background processes (WAL writer, checkpointer, ...),
// which every writer shares; the other clients' backends are left out.
func pgProcesses(pgURL, app string) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1 OR backend_type <> 'client backend'`, app)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// clusterMeasure runs the phases of one cluster run.
type clusterMeasure struct {
	c *clusterRun
	r *Result
}

func (m *clusterMeasure) pids() []int {
	var out []int
	for _, h := range m.c.nodes {
		out = append(out, h.pid())
	}
	return out
}

func (m *clusterMeasure) workerPids() []int {
	var out []int
	for _, w := range m.c.workers {
		out = append(out, w.pid())
	}
	return out
}

// run: connect From devices a node, settle, connect the rest, settle (the
// RSS slope); read the idle CPU; one broadcast; direct pushes for the bus.
func (m *clusterMeasure) run(ctx context.Context) error {
	o, c := m.c.o, m.c
	nodes := len(c.nodes)
	met := Metrics{"nodes": float64(nodes)}
	m.r.Metrics = met

	base, _, err := settleAll(ctx, o, m.pids())
	if err != nil {
		return err
	}
	c0 := sumCPU(base)
	s0 := m.serviceCPU()
	p1, err := m.dial(ctx, o.From)
	if err != nil {
		return err
	}
	c1, err := cpuOf(m.pids())
	if err != nil {
		return err
	}
	s1 := m.serviceCPU()
	low, ok1, err := settleAll(ctx, o, m.pids())
	if err != nil {
		return err
	}
	n1, _ := m.connected(ctx)
	s2 := m.serviceCPU()
	p2, err := m.dial(ctx, o.N)
	if err != nil {
		return err
	}
	c2, err := cpuOf(m.pids())
	if err != nil {
		return err
	}
	s3 := m.serviceCPU()
	high, ok2, err := settleAll(ctx, o, m.pids())
	if err != nil {
		return err
	}
	n2, perWorker := m.connected(ctx)
	if !ok1 || !ok2 {
		m.r.Notes = append(m.r.Notes, fmt.Sprintf("a node's RSS had not settled within %v", o.SettleMax))
	}
	ok := p1.Devices + p2.Devices - p1.Failed - p2.Failed
	met["connected"] = float64(n2)
	if el := p1.Elapsed + p2.Elapsed; el > 0 {
		met["connect_rate"] = float64(ok) / el.Seconds()
		met["connect_rate_per_node"] = met["connect_rate"] / float64(nodes)
	}
	if n2 > n1 {
		met["rss_per_conn_kib"] = float64(sumRSS(high)-sumRSS(low)) / float64(n2-n1) / 1024
	}
	met["rss_n_mib"] = float64(sumRSS(high)) / float64(nodes) / (1 << 20)
	if ok > 0 {
		met["cpu_per_conn_us"] = float64(((c1 - c0) + (c2 - sumCPU(low))).Microseconds()) / float64(ok)
		if c.pgLocal {
			met["pg_cpu_per_conn_us"] = float64(((s1.pg - s0.pg) + (s3.pg - s2.pg)).Microseconds()) / float64(ok)
		}
	}
	fmt.Fprintf(o.Log, "  %d connected; RSS per node %.1f MiB at %d, %.1f MiB at %d\n", n2,
		float64(sumRSS(low))/float64(nodes)/(1<<20), n1/nodes, float64(sumRSS(high))/float64(nodes)/(1<<20), n2/nodes)

	m.heapProfiles(ctx)
	// Long enough that a node's few clock ticks of idle CPU are counted
	// to better than a tick in ten.
	i0, it0 := m.serviceCPU(), time.Now()
	idle, err := idleRate(ctx, m.pids(), 5*time.Second)
	if err != nil {
		return err
	}
	met["idle_cpu_pct"] = idle / float64(nodes) * 100
	if c.pgLocal {
		met["pg_idle_cpu_pct"] = float64(m.serviceCPU().pg-i0.pg) / float64(time.Since(it0)) * 100
	}

	if err := m.broadcast(ctx, n2, perWorker, idle); err != nil {
		return err
	}
	return m.direct(ctx, idle)
}

// dial connects each worker's devices up to its share of perNode devices
// a node, all workers at once; the phase lasts from the first request to
// the last handshake done in any worker.
func (m *clusterMeasure) dial(ctx context.Context, perNode int) (phase, error) {
	o := m.c.o
	var devices, failed atomic.Int64
	var last atomic.Int64
	start := time.Now()
	err := eachWorker(m.c.workers, func(_ int, w *worker) error {
		to := min(w.devs, (perNode*w.devs+o.N-1)/o.N)
		rep, err := w.call(ctx, workerRequest{Op: opDial, To: to, Timeout: o.Timeout})
		if err != nil {
			return err
		}
		devices.Add(int64(rep.Devices))
		failed.Add(int64(rep.Failed))
		storeMax(&last, rep.LastDone)
		return nil
	})
	if err != nil {
		return phase{}, err
	}
	p := phase{Devices: int(devices.Load()), Failed: int(failed.Load())}
	if l := last.Load(); l > start.UnixNano() {
		p.Elapsed = time.Duration(l - start.UnixNano())
	}
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Devices-p.Failed) / p.Elapsed.Seconds()
	}
	fmt.Fprintf(o.Log, "  connected %d more in %v (%.0f/s), %d failed\n", p.Devices-p.Failed, p.Elapsed.Round(time.Millisecond), rate, p.Failed)
	return p, nil
}

// connected asks every worker how many of its devices are connected.
func (m *clusterMeasure) connected(ctx context.Context) (int, []int) {
	per := make([]int, len(m.c.workers))
	eachWorker(m.c.workers, func(i int, w *worker) error {
		rep, err := w.call(ctx, workerRequest{Op: opStatus})
		per[i] = rep.Connected
		return err
	})
	total := 0
	for _, n := range per {
		total += n
	}
	return total, per
}

// expect makes every worker count the message carrying nonce.
func (m *clusterMeasure) expect(ctx context.Context, nonce string) error {
	return eachWorker(m.c.workers, func(_ int, w *worker) error {
		_, err := w.call(ctx, workerRequest{Op: opExpect, Nonce: nonce})
		return err
	})
}

// delivered is the outcome of one measured message over all workers.
type delivered struct {
	received, dups int
	first, last    int64 // Unix ns
}

// wait waits until each worker has want[i] devices with the measured
// message, or the phase timeout.
func (m *clusterMeasure) wait(ctx context.Context, want []int) (delivered, error) {
	var mu sync.Mutex
	var d delivered
	err := eachWorker(m.c.workers, func(i int, w *worker) error {
		rep, err := w.call(ctx, workerRequest{Op: opWait, Want: want[i], Timeout: m.c.o.Timeout})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		d.received += rep.Received
		d.dups += rep.Dups
		if rep.FirstRecv != 0 && (d.first == 0 || rep.FirstRecv < d.first) {
			d.first = rep.FirstRecv
		}
		d.last = max(d.last, rep.LastRecv)
		return nil
	})
	return d, err
}

// broadcast sends one broadcast through the first node and waits until
// every connected device has it; the nodes' CPU is read from before the
// request until they are back to their idle rate, which is then taken off.
func (m *clusterMeasure) broadcast(ctx context.Context, want int, perWorker []int, idle float64) error {
	o, c, met := m.c.o, m.c, m.r.Metrics
	nonce := randomHex(8)
	if err := m.expect(ctx, nonce); err != nil {
		return err
	}
	bus0 := c.bus.snapshot()
	var v0 varz
	if o.NATSMonitor != "" {
		v0, _ = readVarz(ctx, http.DefaultClient, o.NATSMonitor)
	}
	cpu0, t0, err := cpuAt(m.pids())
	if err != nil {
		return err
	}
	svc0 := m.serviceCPU()
	if f := strings.Fields(loadAverage()); len(f) > 0 {
		if l, err := strconv.ParseFloat(f[0], 64); err == nil {
			met["load1"] = l
		}
	}
	profiled := m.profile(ctx)
	defer profiled()
	sent, accept, err := c.nodes[0].broadcast(ctx, nonce)
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	d, err := m.wait(ctx, perWorker)
	if err != nil {
		return err
	}
	if d.received < want {
		m.r.Notes = append(m.r.Notes, fmt.Sprintf("only %d of %d connected devices received the broadcast within %v", d.received, want, o.Timeout))
	}
	actx, cancel := context.WithTimeout(ctx, o.Timeout)
	lastAck, err := c.bus.waitAcks(actx, bus0, int64(d.received))
	cancel()
	if err != nil {
		m.r.Notes = append(m.r.Notes, err.Error())
	}
	cpu1, t1, err := quietAll(ctx, o, m.pids(), idle)
	if err != nil {
		return err
	}
	svc1 := m.serviceCPU()
	bus := c.bus.snapshot().sub(bus0)
	met["received"] = float64(d.received)
	met["duplicates"] = float64(d.dups)
	met["accept_ms"] = float64(accept.Microseconds()) / 1000
	if d.received > 0 {
		last := time.Unix(0, d.last).Sub(sent)
		met["broadcast_ms"] = float64(last.Microseconds()) / 1000
		met["first_ms"] = float64(time.Unix(0, d.first).Sub(sent).Microseconds()) / 1000
		met["deliveries_per_s"] = float64(d.received) / last.Seconds()
		if !lastAck.IsZero() {
			met["acked_ms"] = float64(lastAck.Sub(sent).Microseconds()) / 1000
		}
		busy := float64(cpu1-cpu0) - idle*float64(t1.Sub(t0))
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / met["received"] }
		met["cpu_per_delivery_us"] = busy / float64(time.Microsecond) / float64(d.received)
		if c.pgLocal {
			met["pg_cpu_per_delivery_us"] = per(svc1.pg - svc0.pg)
		}
		if c.nats != 0 {
			met["nats_cpu_per_delivery_us"] = per(svc1.nats - svc0.nats)
		}
		met["bench_cpu_per_delivery_us"] = per(svc1.workers - svc0.workers)
		met["bus_acks_per_delivery"] = float64(bus.Acks) / float64(d.received)
	}
	// What NATS carries for the broadcast itself: the message in, and one
	// copy out to each node that did not send it (acks aside: they go to
	// no other node).
	met["bus_fan_per_broadcast"] = float64(bus.Fan)
	met["bus_out_per_broadcast"] = float64(bus.Delivered)
	if o.NATSMonitor != "" {
		if v1, err := readVarz(ctx, http.DefaultClient, o.NATSMonitor); err == nil {
			// The counter's own copies are not the nodes'.
			met["varz_out_per_broadcast"] = float64(v1.OutMsgs - v0.OutMsgs - bus.total())
			met["varz_in_per_broadcast"] = float64(v1.InMsgs - v0.InMsgs)
		}
	}
	m.r.Notes = append(m.r.Notes, c.nodes[0].deliveryNote(ctx))
	if bus.Other > 0 {
		m.r.Notes = append(m.r.Notes, fmt.Sprintf("the broadcast's window also saw %d other bus messages", bus.Other))
	}
	fmt.Fprintf(o.Log, "  broadcast: %d of %d received in %v; bus: %d fan-out, %d to nodes, %d acks\n",
		d.received, want, time.Unix(0, d.last).Sub(sent).Round(time.Millisecond), bus.Fan, bus.Delivered, bus.Acks)
	return nil
}

// directRounds is how many times each direct push is sent; the bus
// figures are per push.
const directRounds = 5

// profile starts a CPU profile of Options.Profile on every node, saved as
// nK.cpu.pprof in the run's directory; the function it returns waits for
// them. Fetching and writing a profile costs the nodes CPU, which the
// broadcast's figures then include: it is for finding where the time
// goes, not for the figures.
func (m *clusterMeasure) profile(ctx context.Context) func() {
	c := m.c
	if c.o.Profile <= 0 {
		return func() {}
	}
	var wg sync.WaitGroup
	for k, addr := range c.debug {
		wg.Go(func() {
			path := filepath.Join(c.dir, nodeName(k)+".cpu.pprof")
			if err := fetchProfile(ctx, addr, c.o.Profile, path); err != nil {
				fmt.Fprintf(c.o.Log, "  profile of %s: %v\n", nodeName(k), err)
			}
		})
	}
	return func() {
		wg.Wait()
		fmt.Fprintf(c.o.Log, "  CPU profiles in %s/n*.cpu.pprof\n", c.dir)
	}
}

// heapProfiles saves every node's heap profile, with all devices
// connected, as nK.heap.pprof, when Options.Profile is set.
func (m *clusterMeasure) heapProfiles(ctx context.Context) {
	c := m.c
	if c.o.Profile <= 0 {
		return
	}
	for k, addr := range c.debug {
		if err := fetch(ctx, "http://"+addr+"/debug/pprof/heap", time.Minute, filepath.Join(c.dir, nodeName(k)+".heap.pprof")); err != nil {
			fmt.Fprintf(c.o.Log, "  heap profile of %s: %v\n", nodeName(k), err)
		}
	}
}

func fetchProfile(ctx context.Context, addr string, d time.Duration, path string) error {
	secs := max(1, int(d/time.Second))
	return fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), d+30*time.Second, path)
}

// fetch saves what GET u answers in the file path.
func fetch(ctx context.Context, u string, timeout time.Duration, path string) error {
	hc := &http.Client{Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// directCase is one kind of direct push the cluster run sends: to the
// targets, each a node's index-th device.
type directCase struct {
	key     string
	targets [][2]int // node, index
}

// directCases are the direct pushes sent through the first node of a
// cluster of n: to a device on that node, to one on another node, to one
// on every node, and to ten on one other node (a subject per device, so
// ten messages to the one node holding them).
func directCases(n int) []directCase {
	cases := []directCase{{"bus_direct_same", [][2]int{{0, 1}}}}
	if n == 1 {
		return cases
	}
	every := directCase{key: "bus_direct_every"}
	for k := range n {
		every.targets = append(every.targets, [2]int{k, 2})
	}
	ten := directCase{key: "bus_direct_ten"}
	for i := range 10 {
		ten.targets = append(ten.targets, [2]int{n - 1, 10 + i})
	}
	return append(cases, directCase{"bus_direct_other", [][2]int{{n - 1, 1}}}, every, ten)
}

// direct sends each of directCases directRounds times and counts what the
// bus carries per push: messages published, copies NATS hands on to
// nodes, acknowledgements published.
func (m *clusterMeasure) direct(ctx context.Context, idle float64) error {
	c, met := m.c, m.r.Metrics
	for _, tc := range directCases(len(c.nodes)) {
		var ids []string
		want := make([]int, len(c.workers))
		for _, t := range tc.targets {
			if t[1] >= len(c.devs[t[0]]) {
				continue // too few devices a node for this case
			}
			ids = append(ids, c.devs[t[0]][t[1]].ClientID)
			// A node's first worker holds its first devices.
			for i, w := range c.workers {
				if w.node == t[0] {
					want[i]++
					break
				}
			}
		}
		if len(ids) < len(tc.targets) {
			continue
		}
		var total busCounts
		for range directRounds {
			nonce := randomHex(8)
			if err := m.expect(ctx, nonce); err != nil {
				return err
			}
			before := c.bus.snapshot()
			_, err := c.nodes[0].call(ctx, "POST", "/v1/push", c.nodes[0].providerAuth, map[string]any{
				"audience":     map[string]any{"registration_id": ids},
				"notification": map[string]string{"title": "herald bench", "body": nonce},
				"options":      map[string]any{"ttl": 30},
			}, nil)
			if err != nil {
				return fmt.Errorf("direct push: %w", err)
			}
			d, err := m.wait(ctx, want)
			if err != nil {
				return err
			}
			if d.received < len(ids) {
				m.r.Notes = append(m.r.Notes, fmt.Sprintf("%s: %d of %d targets received a direct push", tc.key, d.received, len(ids)))
			}
			actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
			_, err = c.bus.waitAcks(actx, before, int64(d.received))
			cancel()
			if err != nil {
				return err
			}
			total.add(c.bus.snapshot().sub(before))
		}
		met[tc.key+"_pub"] = float64(total.Direct) / directRounds
		met[tc.key+"_out"] = float64(total.Delivered) / directRounds
		met[tc.key+"_acks"] = float64(total.Acks) / directRounds
		fmt.Fprintf(c.o.Log, "  %s (%d targets): per push %.1f published, %.1f to nodes, %.1f acks\n", tc.key, len(ids),
			float64(total.Direct)/directRounds, float64(total.Delivered)/directRounds, float64(total.Acks)/directRounds)
	}
	return nil
}

// services is the CPU used so far by the processes beside the nodes.
type services struct{ pg, nats, workers time.Duration }

func (m *clusterMeasure) serviceCPU() services {
	var s services
	if m.c.pgLocal {
		pids, err := pgProcesses(m.c.o.Postgres, m.c.schema)
		if err != nil {
			m.c.pgLocal = false
			m.r.Notes = append(m.r.Notes, "PostgreSQL's CPU is not reported: "+err.Error())
		}
		s.pg = sumCPUOf(pids)
	}
	if m.c.nats != 0 {
		s.nats = sumCPUOf([]int{m.c.nats})
	}
	s.workers = sumCPUOf(m.workerPids())
	return s
}

// cpuOf is the nodes' CPU so far, summed.
func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, p := range pids {
		cpu, err := readCPU(p)
		if err != nil {
			return 0, err
		}
		sum += cpu
	}
	return sum, nil
}

// cpuAt is cpuOf and when it was read.
func cpuAt(pids []int) (time.Duration, time.Time, error) {
	cpu, err := cpuOf(pids)
	return cpu, time.Now(), err
}

func sumCPU(st []procStat) time.Duration {
	var sum time.Duration
	for _, s := range st {
		sum += s.CPU
	}
	return sum
}

func sumRSS(st []procStat) int64 {
	var sum int64
	for _, s := range st {
		sum += s.RSS
	}
	return sum
}

// settleAll is measure.settle for several processes at once: it waits
// until every one's RSS has settled (or SettleMax), and reports whether
// all did.
func settleAll(ctx context.Context, o *Options, pids []int) ([]procStat, bool, error) {
	const every, window = 250 * time.Millisecond, 8
	deadline := time.Now().Add(o.SettleMax)
	if err := sleep(ctx, o.SettleMin); err != nil {
		return nil, false, err
	}
	rss := make([][]int64, len(pids))
	for {
		st := make([]procStat, len(pids))
		settled := true
		for i, p := range pids {
			var err error
			if st[i], err = readProc(p); err != nil {
				return nil, false, err
			}
			rss[i] = append(rss[i], st[i].RSS)
			if len(rss[i]) > window {
				rss[i] = rss[i][1:]
			}
			settled = settled && len(rss[i]) == window && slices.Max(rss[i])-slices.Min(rss[i]) <= max(64<<10, st[i].RSS/200)
		}
		if settled {
			return st, true, nil
		}
		if time.Now().After(deadline) {
			return st, false, nil
		}
		if err := sleep(ctx, every); err != nil {
			return nil, false, err
		}
	}
}

// idleRate is the CPU the nodes use while nothing is sent, in cores: with
// a bus, each live session reads its inbox once a recheck interval.
func idleRate(ctx context.Context, pids []int, over time.Duration) (float64, error) {
	c0, t0, err := cpuAt(pids)
	if err != nil {
		return 0, err
	}
	if err := sleep(ctx, over); err != nil {
		return 0, err
	}
	c1, t1, err := cpuAt(pids)
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(t1.Sub(t0)), nil
}

// quietAll waits until the nodes together have used no more than their
// idle rate (and a clock tick each) in each of two consecutive quarter
// seconds, or SettleMax has passed, and returns their CPU then.
func quietAll(ctx context.Context, o *Options, pids []int, idle float64) (time.Duration, time.Time, error) {
	const every = 250 * time.Millisecond
	allowed := time.Duration(idle*float64(every)) + clockTick*time.Duration(len(pids))
	deadline := time.Now().Add(o.SettleMax)
	prev, at, err := cpuAt(pids)
	if err != nil {
		return 0, at, err
	}
	for calm := 0; calm < 2 && time.Now().Before(deadline); {
		if err := sleep(ctx, every); err != nil {
			return 0, at, err
		}
		cpu, now, err := cpuAt(pids)
		if err != nil {
			return 0, at, err
		}
		if cpu-prev <= allowed {
			calm++
		} else {
			calm = 0
		}
		prev, at = cpu, now
	}
	return prev, at, nil
}
