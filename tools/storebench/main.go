// Command storebench measures the candidate engines for Herald's embedded
// store on Herald's own workload: durable appends of a message plus a few
// inbox entries, prefix reads of a device's inbox, deletes on ack, and a TTL
// sweep over an expiry index. It is its own module so that the main module
// carries only the winner's dependencies. See docs/decisions/0001-embedded-store.md.
//
//	go run . -dir /work/tmp/storebench -runs 3
package main

import (
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	flagDir     = flag.String("dir", os.TempDir(), "parent directory of the databases (put it on the disk you measure)")
	flagRuns    = flag.Int("runs", 3, "runs per engine; medians are reported")
	flagEngines = flag.String("engines", "pebble,bbolt,bbolt-batch,badger", "engines to measure")
	flagDur     = flag.Duration("d", 2*time.Second, "duration of each timed workload")
	flagLoad    = flag.Int("load", 100_000, "messages loaded before the read, ack and sweep workloads")
	flagDevices = flag.Int("devices", 10_000, "devices the inbox entries are spread over")
	flagRate    = flag.Int("rate", 5000, "paced appends per second for the latency workload")
)

// result is one figure of one run: name is the workload, unit its unit.
type result struct {
	name, unit string
	v          float64
}

func main() {
	flag.Parse()
	all := map[string]map[string][]float64{} // engine -> "name|unit" -> per-run values
	var order []string
	engines := strings.Split(*flagEngines, ",")
	for r := 0; r < *flagRuns; r++ {
		for _, name := range engines {
			res, err := runOnce(name)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
				os.Exit(1)
			}
			if all[name] == nil {
				all[name] = map[string][]float64{}
			}
			for _, x := range res {
				k := x.name + "|" + x.unit
				if !slices.Contains(order, k) {
					order = append(order, k)
				}
				all[name][k] = append(all[name][k], x.v)
				fmt.Fprintf(os.Stderr, "run %d %-11s %-34s %12.1f %s\n", r+1, name, x.name, x.v, x.unit)
			}
		}
	}
	fmt.Printf("medians of %d runs; each timed workload %s; %d messages over %d devices loaded for read/ack/sweep\n\n",
		*flagRuns, *flagDur, *flagLoad, *flagDevices)
	fmt.Printf("| workload | unit |")
	for _, e := range engines {
		fmt.Printf(" %s |", e)
	}
	fmt.Printf("\n|---|---|%s\n", strings.Repeat("---:|", len(engines)))
	for _, k := range order {
		name, unit, _ := strings.Cut(k, "|")
		fmt.Printf("| %s | %s |", name, unit)
		for _, e := range engines {
			fmt.Printf(" %s |", fmtNum(median(all[e][k])))
		}
		fmt.Println()
	}
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// runOnce measures one engine: the append workloads on one fresh database,
// then the read, ack and sweep workloads on a second fresh one holding the
// same loaded data for every engine (the first holds however many messages
// the engine managed to append, which would bias the reads).
func runOnce(name string) ([]result, error) {
	var out []result
	add := func(rs ...result) { out = append(out, rs...) }
	devices := makeDevices(*flagDevices)

	err := withDB(name, func(e engine, dir string) error {
		w := &workload{e: e, devices: devices, seq: new(atomic.Uint64)}
		// (a) one message per fsync, the engine's own concurrency.
		for _, c := range []int{1, 8, 64} {
			add(w.appendLoop(fmt.Sprintf("append 1/fsync, %d writers", c), c, 1, e.commit)...)
		}
		// (a) the same through one group-commit goroutine in front of
		// the engine, which is how the store will drive it.
		gc := newGroupCommitter(e)
		for _, c := range []int{1, 8, 64} {
			add(w.appendLoop(fmt.Sprintf("append 1/call, group commit, %d writers", c), c, 1, gc.commit)...)
		}
		// (a) batches per fsync, one writer.
		for _, n := range []int{100, 1000} {
			add(w.appendLoop(fmt.Sprintf("append batch of %d", n), 1, n, e.commit)...)
		}
		// (a) open loop at the product's rate.
		add(w.paced(fmt.Sprintf("append paced %d/s, group commit", *flagRate), *flagRate, gc.commit)...)
		add(w.paced(fmt.Sprintf("append paced %d/s, engine's own", *flagRate), *flagRate, e.commit)...)
		gc.close()
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = withDB(name, func(e engine, dir string) error {
		w := &workload{e: e, devices: devices, seq: new(atomic.Uint64)}
		t := time.Now()
		if err := w.load(*flagLoad); err != nil {
			return err
		}
		add(result{"load (unsynced batches of 1000)", "msgs/s", float64(*flagLoad) / time.Since(t).Seconds()})
		add(w.pending(4)...)
		add(w.ack(8)...)
		add(w.sweep()...)
		add(result{"disk after load, ack, sweep", "MiB", float64(dirSize(dir)) / (1 << 20)})
		return nil
	})
	return out, err
}

// withDB opens a fresh database of engine name, runs f and removes it.
func withDB(name string, f func(e engine, dir string) error) error {
	dir, err := os.MkdirTemp(*flagDir, name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e, err := openers[name](dir)
	if err != nil {
		return err
	}
	if err := f(e, dir); err != nil {
		e.close()
		return err
	}
	return e.close()
}

// Keys. Every number is big-endian so that key order is numeric order.
//
//	'm' seq                 -> message (~300 B)
//	'n' app id              -> seq
//	'i' device seq          -> collapse id (small)
//	'x' expires seq         -> the message's inbox keys' devices
func kMsg(seq uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'m'}, seq) }
func kID(id string) []byte   { return append([]byte("nak_benchapp0000000"), id...) }
func kInbox(dev string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{'i'}, dev...), seq)
}
func kExp(exp int64, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{'x'}, uint64(exp))
	return binary.BigEndian.AppendUint64(k, seq)
}

type workload struct {
	e       engine
	devices []string
	seq     *atomic.Uint64
	// base is the expiry of the first loaded message; see load.
	base int64
}

func makeDevices(n int) []string {
	d := make([]string, n)
	for i := range d {
		b := make([]byte, 18)
		for j := range b {
			b[j] = byte(rand.Uint32())
		}
		d[i] = base64.RawURLEncoding.EncodeToString(b)
	}
	return d
}

// message returns the writes of one append: the message, its ID index row,
// 1–5 inbox entries and its expiry index row.
func (w *workload) message(ops []op, exp int64) []op {
	seq := w.seq.Add(1)
	body := make([]byte, 225) // base64 -> 300 B, as incompressible as a real payload's text
	for i := range body {
		body[i] = byte(rand.Uint32())
	}
	val := []byte(base64.StdEncoding.EncodeToString(body))
	id := fmt.Sprintf("m_%020d", seq)
	ops = append(ops, op{key: kMsg(seq), val: val}, op{key: kID(id), val: binary.BigEndian.AppendUint64(nil, seq)})
	n := 1 + rand.IntN(5)
	var targets []byte
	for range n {
		d := w.devices[rand.IntN(len(w.devices))]
		ops = append(ops, op{key: kInbox(d, seq), val: []byte("c")})
		targets = append(targets, d...)
	}
	return append(ops, op{key: kExp(exp, seq), val: targets})
}

func expiry() int64 { return time.Now().Add(24 * time.Hour).UnixNano() }

// appendLoop runs c writers, each committing batches of n messages through
// commit, for the workload duration.
func (w *workload) appendLoop(name string, c, n int, commit func([]op, bool) error) []result {
	var wg sync.WaitGroup
	lats := make([][]time.Duration, c)
	var failed atomic.Value
	deadline := time.Now().Add(*flagDur)
	start := time.Now()
	for g := range c {
		wg.Go(func() {
			var ops []op
			for time.Now().Before(deadline) {
				ops = ops[:0]
				for range n {
					ops = w.message(ops, expiry())
				}
				t := time.Now()
				if err := commit(ops, true); err != nil {
					failed.Store(err)
					return
				}
				lats[g] = append(lats[g], time.Since(t))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if err := failed.Load(); err != nil {
		panic(fmt.Sprint(name, ": ", err))
	}
	l := merge(lats)
	return []result{
		{name, "msgs/s", float64(len(l)*n) / el.Seconds()},
		{name + " p50", "ms", ms(pct(l, 50))},
		{name + " p99", "ms", ms(pct(l, 99))},
	}
}

// paced issues rate single appends per second, open loop: latency counts
// from when each append was due, so a stall is not hidden by the writers
// waiting for it (coordinated omission).
func (w *workload) paced(name string, rate int, commit func([]op, bool) error) []result {
	const workers = 256
	interval := time.Second / time.Duration(rate)
	total := int(float64(rate) * flagDur.Seconds())
	var next atomic.Int64
	lats := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if int(i) >= total {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				time.Sleep(time.Until(due))
				if err := commit(w.message(nil, expiry()), true); err != nil {
					panic(err)
				}
				lats[g] = append(lats[g], time.Since(due))
			}
		})
	}
	wg.Wait()
	l := merge(lats)
	return []result{
		{name + " achieved", "msgs/s", float64(len(l)) / time.Since(start).Seconds()},
		{name + " p50", "ms", ms(pct(l, 50))},
		{name + " p99", "ms", ms(pct(l, 99))},
	}
}

// load appends n messages in unsynced batches of 1000, expiring one
// microsecond apart from base, so that a sweep at base+n/2 µs purges half.
func (w *workload) load(n int) error {
	w.base = time.Now().Add(time.Hour).UnixNano()
	var ops []op
	for i := 0; i < n; i += 1000 {
		ops = ops[:0]
		for j := i; j < min(n, i+1000); j++ {
			ops = w.message(ops, w.base+int64(j)*1000)
		}
		if err := w.e.commit(ops, false); err != nil {
			return err
		}
	}
	return nil
}

// pending reads random devices' inboxes (up to 100 entries and each
// entry's message) from c readers.
func (w *workload) pending(c int) []result {
	var wg sync.WaitGroup
	lats := make([][]time.Duration, c)
	var entries atomic.Int64
	deadline := time.Now().Add(*flagDur)
	start := time.Now()
	for g := range c {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				d := w.devices[rand.IntN(len(w.devices))]
				t := time.Now()
				n := 0
				err := w.e.scan(append([]byte{'i'}, d...), 100, func(k, v []byte, get func([]byte) ([]byte, error)) {
					seq := binary.BigEndian.Uint64(k[len(k)-8:])
					if _, err := get(kMsg(seq)); err != nil {
						panic(fmt.Sprintf("message %d: %v", seq, err))
					}
					n++
				})
				if err != nil {
					panic(err)
				}
				lats[g] = append(lats[g], time.Since(t))
				entries.Add(int64(n))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	l := merge(lats)
	return []result{
		{"pending read, 4 readers", "reads/s", float64(len(l)) / el.Seconds()},
		{"pending read entries/read", "n", float64(entries.Load()) / float64(len(l))},
		{"pending read p50", "ms", ms(pct(l, 50))},
		{"pending read p99", "ms", ms(pct(l, 99))},
	}
}

// ack deletes up to 10 inbox entries of a random device per synced commit,
// from c concurrent callers.
func (w *workload) ack(c int) []result {
	var wg sync.WaitGroup
	lats := make([][]time.Duration, c)
	var deleted atomic.Int64
	deadline := time.Now().Add(*flagDur)
	start := time.Now()
	for g := range c {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				d := w.devices[rand.IntN(len(w.devices))]
				var ops []op
				w.e.scan(append([]byte{'i'}, d...), 10, func(k, v []byte, _ func([]byte) ([]byte, error)) {
					ops = append(ops, op{key: slices.Clone(k), del: true})
				})
				t := time.Now()
				if err := w.e.commit(ops, true); err != nil {
					panic(err)
				}
				lats[g] = append(lats[g], time.Since(t))
				deleted.Add(int64(len(ops)))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	l := merge(lats)
	return []result{
		{"ack (delete ≤10 entries), 8 callers", "entries/s", float64(deleted.Load()) / el.Seconds()},
		{"ack commit p99", "ms", ms(pct(l, 99))},
	}
}

// sweep walks the expiry index up to the cutoff and deletes each expired
// message with its index rows and inbox entries, 1000 messages per synced
// commit: half of the loaded messages.
func (w *workload) sweep() []result {
	cutoff := kExp(w.base+int64(*flagLoad/2)*1000, 0)
	start := time.Now()
	purged := 0
	for {
		var ops []op
		n := 0
		err := w.e.scan([]byte{'x'}, 1000, func(k, v []byte, _ func([]byte) ([]byte, error)) {
			if string(k) >= string(cutoff) {
				return
			}
			seq := binary.BigEndian.Uint64(k[9:])
			ops = append(ops, op{key: slices.Clone(k), del: true}, op{key: kMsg(seq), del: true},
				op{key: kID(fmt.Sprintf("m_%020d", seq)), del: true})
			for d := range slices.Chunk(v, 24) {
				ops = append(ops, op{key: kInbox(string(d), seq), del: true})
			}
			n++
		})
		if err != nil {
			panic(err)
		}
		if n == 0 {
			break
		}
		if err := w.e.commit(ops, true); err != nil {
			panic(err)
		}
		purged += n
	}
	el := time.Since(start)
	return []result{{"sweep (1000 msgs/commit)", "msgs/s", float64(purged) / el.Seconds()}}
}

// groupCommitter is the store's planned writer: one goroutine takes every
// waiting commit, writes them as one batch with one fsync, and answers all.
type groupCommitter struct {
	e    engine
	reqs chan gcReq
	done chan struct{}
}

type gcReq struct {
	ops []op
	res chan error
}

func newGroupCommitter(e engine) *groupCommitter {
	g := &groupCommitter{e: e, reqs: make(chan gcReq, 1024), done: make(chan struct{})}
	go g.run()
	return g
}

func (g *groupCommitter) commit(ops []op, sync bool) error {
	r := gcReq{ops, make(chan error, 1)}
	g.reqs <- r
	return <-r.res
}

func (g *groupCommitter) close() { close(g.reqs); <-g.done }

func (g *groupCommitter) run() {
	defer close(g.done)
	var waiting []gcReq
	var ops []op
	for r := range g.reqs {
		waiting = append(waiting[:0], r)
		ops = append(ops[:0], r.ops...)
	drain:
		for len(waiting) < 1000 {
			select {
			case r2, ok := <-g.reqs:
				if !ok {
					break drain
				}
				waiting = append(waiting, r2)
				ops = append(ops, r2.ops...)
			default:
				break drain
			}
		}
		err := g.e.commit(ops, true)
		for _, w := range waiting {
			w.res <- err
		}
	}
}

func merge(l [][]time.Duration) []time.Duration {
	var all []time.Duration
	for _, x := range l {
		all = append(all, x...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

func pct(l []time.Duration, p int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, len(l)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			// Blocks, not the apparent size: badger preallocates sparse files.
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}
