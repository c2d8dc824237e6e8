//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// target is a server under test for one run.
type target interface {
	name() string
	pid() int
	mqttAddr() netip.AddrPort
	// devices returns n identities to connect as for workload.
	devices(ctx context.Context, n int, workload string) ([]Device, error)
	// broadcast sends one QoS 1 message whose payload contains nonce to
	// every device; sent is when the request left, accept how long the
	// server took to acknowledge it.
	broadcast(ctx context.Context, nonce string) (sent time.Time, accept time.Duration, err error)
	stop() error
}

// deliveryNoter is a target that can check its own bookkeeping of a
// broadcast once the devices have acknowledged it.
type deliveryNoter interface {
	deliveryNote(ctx context.Context) string
}

// Interface guards
var (
	_ target        = (*herald)(nil)
	_ target        = (*mosquitto)(nil)
	_ deliveryNoter = (*herald)(nil)
)

// fileReserve is the file descriptors the bench keeps beside its N
// sockets: HTTP connections, epoll sets, pipes, logs.
const fileReserve = 100

// Run runs o.Workload o.Runs times against Herald and the peer broker,
// alternating which goes first, and returns the report. A target that
// cannot run (Herald without MQTT, a missing mosquitto) is reported as
// skipped rather than failing the run.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	if metricsOf(o.Workload) == nil {
		return nil, fmt.Errorf("bench: unknown workload %q (conns, fanout, relay, cluster)", o.Workload)
	}
	if o.N <= 0 {
		return nil, errors.New("bench: N must be positive")
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return nil, fmt.Errorf("bench: raising the file limit: %w", err)
	}
	// relay spreads N over relayDevices devices, not connections; cluster
	// spreads them over swarm workers, each with a limit of its own.
	if uint64(o.N+fileReserve) > limit && o.Workload != Relay && o.Workload != Cluster {
		return nil, fmt.Errorf("bench: %d devices need %d open files; this process may have %d (ulimit -n)", o.N, o.N+fileReserve, limit)
	}
	if o.Dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		o.Dir = filepath.Join(cache, "herald-bench")
	}
	if o.Fresh {
		os.RemoveAll(filepath.Join(o.Dir, "herald-data"))
		os.Remove(filepath.Join(o.Dir, "herald-devices.json"))
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}

	rep := &Report{Workload: o.Workload, N: o.N, Runs: o.Runs, MQTTVersion: o.MQTTVersion,
		CPUs: runtime.NumCPU(), ServerCPUs: o.ServerCPUs, Started: time.Now().Format("2006-01-02 15:04")}
	if o.Workload == Conns {
		rep.From = o.From
	}
	type entry struct {
		t     *Target
		start func() (target, error)
	}
	if o.Workload == Cluster {
		if o.Server != "" {
			return nil, errors.New("bench: cluster starts its nodes itself; it takes no --server")
		}
		if uint64(o.PerWorker+fileReserve) > limit {
			return nil, fmt.Errorf("bench: a swarm worker of %d devices needs %d open files; a process may have %d", o.PerWorker, o.PerWorker+fileReserve, limit)
		}
		return rep, runClusterWorkload(ctx, &o, rep)
	}
	if o.Workload == Relay {
		if o.Server != "" {
			return nil, errNoRelay
		}
		t := &Target{Name: "Herald"}
		for run := range o.Runs {
			fmt.Fprintf(o.Log, "Herald: run %d of %d: relay of %d notifications\n", run+1, o.Runs, o.N)
			r, err := runRelay(ctx, &o)
			t.Runs = append(t.Runs, r)
			if err != nil {
				finish(rep, []*Target{t})
				return rep, err
			}
		}
		finish(rep, []*Target{t})
		return rep, nil
	}
	var entries []entry
	if o.Herald {
		t := &Target{Name: "Herald"}
		entries = append(entries, entry{t, func() (target, error) { return startHerald(ctx, &o) }})
	}
	switch o.Broker {
	case "":
	case "mosquitto":
		t := &Target{Name: "Mosquitto"}
		version, err := mosquittoVersion(o.MosquittoBin)
		if err != nil {
			t.Skipped = err.Error()
			fmt.Fprintf(o.Log, "mosquitto: %v; measuring Herald only\n", err)
		} else {
			t.Name += " " + version
		}
		entries = append(entries, entry{t, func() (target, error) { return startMosquitto(ctx, &o, version) }})
	default:
		return nil, fmt.Errorf("bench: unknown broker %q (mosquitto)", o.Broker)
	}
	if len(entries) == 0 {
		return nil, errors.New("bench: nothing to measure")
	}
	var targets []*Target
	for _, e := range entries {
		targets = append(targets, e.t)
	}

	for run := range o.Runs {
		order := slices.Clone(entries)
		if run%2 == 1 {
			slices.Reverse(order)
		}
		for _, e := range order {
			if e.t.Skipped != "" {
				continue
			}
			fmt.Fprintf(o.Log, "%s: run %d of %d: %s with %d devices\n", e.t.Name, run+1, o.Runs, o.Workload, o.N)
			r, err := runOnce(ctx, &o, e.start)
			if errors.Is(err, ErrNoMQTT) {
				e.t.Skipped = err.Error()
				fmt.Fprintf(o.Log, "%s: skipped: %v\n", e.t.Name, err)
				continue
			}
			if err != nil {
				e.t.Runs = append(e.t.Runs, r)
				finish(rep, targets)
				return rep, fmt.Errorf("%s: %w", e.t.Name, err)
			}
			e.t.Runs = append(e.t.Runs, r)
		}
	}
	finish(rep, targets)
	return rep, nil
}

// finish adds the targets with their medians, and the ratios, to rep.
func finish(rep *Report, targets []*Target) {
	for _, t := range targets {
		t.Median = medians(t.Runs)
		rep.Targets = append(rep.Targets, *t)
	}
	if len(rep.Targets) == 2 && rep.Targets[0].Median != nil && rep.Targets[1].Median != nil {
		rep.Ratio = ratios(rep.Workload, rep.Targets[0].Median, rep.Targets[1].Median)
	}
}

// runOnce starts a target, runs the workload on it and stops it.
func runOnce(ctx context.Context, o *Options, start func() (target, error)) (Result, error) {
	t, err := start()
	if err != nil {
		return Result{}, err
	}
	defer t.stop()
	pid := t.pid()
	if pid == 0 {
		if pid, err = findListener(int(t.mqttAddr().Port())); err != nil {
			return Result{}, err
		}
	}
	devs, err := t.devices(ctx, o.N, o.Workload)
	if err != nil {
		return Result{}, err
	}
	nonce := randomHex(8)
	sw, err := newSwarm(swarmConfig{Addr: t.mqttAddr(), Version: o.MQTTVersion,
		KeepAlive: uint16(o.KeepAlive / time.Second), Devices: devs, InFlight: o.InFlight, Nonce: []byte(nonce)})
	if err != nil {
		return Result{}, err
	}
	// Devices disconnect before the server stops (defers run last first),
	// so that the server's shutdown is not a storm of dropped connections.
	defer sw.close()
	m := measure{o: o, t: t, sw: sw, pid: pid}
	var r Result
	switch o.Workload {
	case Conns:
		r, err = m.conns(ctx)
	case Fanout:
		r, err = m.fanout(ctx, nonce)
	}
	r.Errors = sw.errors()
	return r, err
}

// measure runs one workload against one started target.
type measure struct {
	o   *Options
	t   target
	sw  *swarm
	pid int
}

// conns connects From devices, lets the server settle, reads its RSS,
// connects the rest, settles and reads again: the slope between the two is
// what one more idle connection costs.
func (m *measure) conns(ctx context.Context) (Result, error) {
	var r Result
	base, _, err := m.settle(ctx)
	if err != nil {
		return r, err
	}
	c0 := base.CPU
	p1, err := m.dial(ctx, m.o.From)
	if err != nil {
		return r, err
	}
	c1, err := readCPU(m.pid)
	if err != nil {
		return r, err
	}
	low, ok1, err := m.settle(ctx)
	if err != nil {
		return r, err
	}
	n1 := m.sw.connected()
	p2, err := m.dial(ctx, m.o.N)
	if err != nil {
		return r, err
	}
	c2, err := readCPU(m.pid)
	if err != nil {
		return r, err
	}
	high, ok2, err := m.settle(ctx)
	if err != nil {
		return r, err
	}
	n2 := m.sw.connected()
	if !ok1 || !ok2 {
		r.Notes = append(r.Notes, fmt.Sprintf("the server's RSS had not settled within %v", m.o.SettleMax))
	}
	ok := p1.Devices + p2.Devices - p1.Failed - p2.Failed
	r.Metrics = Metrics{
		"connected":    float64(n2),
		"rss_base_mib": float64(base.RSS) / (1 << 20),
		"rss_n_mib":    float64(high.RSS) / (1 << 20),
	}
	if el := p1.Elapsed + p2.Elapsed; el > 0 {
		r.Metrics["connect_rate"] = float64(ok) / el.Seconds()
	}
	if n2 > n1 {
		r.Metrics["rss_per_conn_kib"] = float64(high.RSS-low.RSS) / float64(n2-n1) / 1024
	}
	if ok > 0 {
		cpu := (c1 - c0) + (c2 - low.CPU)
		r.Metrics["cpu_per_conn_us"] = float64(cpu.Microseconds()) / float64(ok)
	}
	fmt.Fprintf(m.o.Log, "  %d connected; RSS %.1f MiB at %d, %.1f MiB at %d\n",
		n2, float64(low.RSS)/(1<<20), n1, float64(high.RSS)/(1<<20), n2)
	return r, nil
}

// fanout connects N devices, waits for the server to go quiet, sends one
// broadcast and waits until every connected device has it.
func (m *measure) fanout(ctx context.Context, nonce string) (Result, error) {
	var r Result
	if _, err := m.dial(ctx, m.o.N); err != nil {
		return r, err
	}
	c0, err := m.quiet(ctx)
	if err != nil {
		return r, err
	}
	want := m.sw.connected()
	sent, accept, err := m.t.broadcast(ctx, nonce)
	if err != nil {
		return r, fmt.Errorf("broadcast: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	got := m.sw.waitReceived(wctx, want)
	cancel()
	if got < want {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d of %d connected devices received the broadcast within %v", got, want, m.o.Timeout))
	}
	// The server's CPU is read once it is idle again, so that what the
	// acknowledgements cost it is counted too.
	c1, err := m.quiet(ctx)
	if err != nil {
		return r, err
	}
	r.Metrics = Metrics{
		"connected":  float64(want),
		"received":   float64(got),
		"duplicates": float64(m.sw.dups.Load()),
	}
	r.Metrics["accept_ms"] = float64(accept.Microseconds()) / 1000
	if got > 0 {
		last := time.Unix(0, m.sw.lastRecv.Load()).Sub(sent)
		first := time.Unix(0, m.sw.firstRecv.Load()).Sub(sent)
		r.Metrics["broadcast_ms"] = float64(last.Microseconds()) / 1000
		r.Metrics["first_ms"] = float64(first.Microseconds()) / 1000
		r.Metrics["deliveries_per_s"] = float64(got) / last.Seconds()
		r.Metrics["cpu_per_delivery_us"] = float64((c1 - c0).Microseconds()) / float64(got)
	}
	if d, ok := m.t.(deliveryNoter); ok {
		r.Notes = append(r.Notes, d.deliveryNote(ctx))
	}
	fmt.Fprintf(m.o.Log, "  %d of %d received in %v\n", got, want, time.Unix(0, m.sw.lastRecv.Load()).Sub(sent).Round(time.Millisecond))
	return r, nil
}

// dial connects devices up to to within the phase timeout.
func (m *measure) dial(ctx context.Context, to int) (phase, error) {
	ctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	defer cancel()
	p, err := m.sw.dial(ctx, to)
	if err != nil {
		return p, err
	}
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Devices-p.Failed) / p.Elapsed.Seconds()
	}
	fmt.Fprintf(m.o.Log, "  connected %d more in %v (%.0f/s), %d failed\n", p.Devices-p.Failed, p.Elapsed.Round(time.Millisecond), rate, p.Failed)
	return p, nil
}

// settle waits at least SettleMin, then until the server's RSS has stayed
// within 0.5% (or 64 KiB) for two seconds, or SettleMax has passed. It
// reports whether the RSS settled.
func (m *measure) settle(ctx context.Context) (procStat, bool, error) {
	const every, window = 250 * time.Millisecond, 8
	deadline := time.Now().Add(m.o.SettleMax)
	if err := sleep(ctx, m.o.SettleMin); err != nil {
		return procStat{}, false, err
	}
	var rss []int64
	for {
		st, err := readProc(m.pid)
		if err != nil {
			return st, false, err
		}
		rss = append(rss, st.RSS)
		if len(rss) > window {
			rss = rss[1:]
		}
		if len(rss) == window && slices.Max(rss)-slices.Min(rss) <= max(64<<10, st.RSS/200) {
			return st, true, nil
		}
		if time.Now().After(deadline) {
			return st, false, nil
		}
		if err := sleep(ctx, every); err != nil {
			return st, false, err
		}
	}
}

// quiet waits until the server has used at most one clock tick of CPU in
// each of two consecutive quarter seconds (or SettleMax has passed) and
// returns its CPU time then.
func (m *measure) quiet(ctx context.Context) (time.Duration, error) {
	const every = 250 * time.Millisecond
	deadline := time.Now().Add(m.o.SettleMax)
	prev, err := readCPU(m.pid)
	if err != nil {
		return 0, err
	}
	calm := 0
	for calm < 2 && time.Now().Before(deadline) {
		if err := sleep(ctx, every); err != nil {
			return 0, err
		}
		cpu, err := readCPU(m.pid)
		if err != nil {
			return 0, err
		}
		if cpu-prev <= clockTick {
			calm++
		} else {
			calm = 0
		}
		prev = cpu
	}
	return prev, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
