package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/heraldpush/herald/internal/bench"
)

const benchUsage = `Usage: herald bench conns|fanout|relay|cluster [flags]

  conns    N idle MQTT devices connect and subscribe: connect+subscribe rate,
           the server's RSS per connection (slope from --from to N settled
           connections) and its CPU per connection
  fanout   N connected devices, then one broadcast push: time from the request
           to the last delivery, deliveries per second, server CPU per delivery
  relay    N notifications relayed to APNs and to FCM (local servers in the
           bench process that answer at once), then to an APNs that takes
           50 ms an answer: notifications per second and server CPU each
  cluster  --nodes nodes in cluster mode (--postgres, a fresh schema each run;
           --nats) with N devices each, beside one node with N in the same
           run: connect rate, RSS per connection per node, one broadcast to
           all (deliveries/s, CPU per delivery over the nodes), NATS messages
           per broadcast and per direct push; the devices are held by child
           processes of the bench, at most --per-worker each

By default the bench starts its own "herald serve" on free ports for each run
(data directory and registration cache in --dir), and with --broker mosquitto
runs the same workload against a Mosquitto it starts, side by side.
Devices: N <= about 19,000 within a 20,000-file limit (cluster: per node).

Flags:
`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == bench.WorkerCommand {
		// Started by the cluster workload, which speaks to it over its
		// stdin and stdout; not for people.
		return bench.RunWorker(ctx, os.Stdin, stdout, stderr)
	}
	var o bench.Options
	var serveArgs, serveEnv repeatFlag
	fs := newFlags("bench", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	fs.IntVar(&o.N, "n", 1000, "devices")
	fs.IntVar(&o.Runs, "runs", 1, "runs, each on fresh server processes; figures are medians")
	fs.IntVar(&o.From, "from", 0, "lower point of the RSS slope (default 5000 when n >= 19000, else n/4)")
	fs.StringVar(&o.Broker, "broker", "", "also run the workload against this broker: mosquitto")
	fs.BoolVar(&o.Herald, "herald", true, "measure Herald (false: only the --broker)")
	fs.StringVar(&o.Server, "server", "", "an external Herald's base URL (default: start one)")
	fs.StringVar(&o.MQTTAddr, "mqtt", "", "the external Herald's MQTT address, host:port")
	fs.StringVar(&o.AppKey, "app-key", "", "the external Herald's app key (or HERALD_APP_KEY)")
	fs.StringVar(&o.MasterSecret, "master-secret", "", "that app's master secret (or HERALD_MASTER_SECRET)")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "the external Herald's PID (default: found by its MQTT port)")
	fs.Var(&serveArgs, "serve-arg", "extra flag for the herald serve the bench starts (repeatable)")
	fs.Var(&serveEnv, "serve-env", "KEY=VALUE for the servers the bench starts, e.g. GODEBUG=gctrace=1 (repeatable)")
	fs.StringVar(&o.ServerCPUs, "server-cpus", "", "run the servers under taskset -c on these CPUs, e.g. 1")
	fs.StringVar(&o.MosquittoBin, "mosquitto", "mosquitto", "the mosquitto binary")
	fs.StringVar(&o.Dir, "dir", "", "keeps Herald's data, the registration cache and server logs (default: the user cache directory)")
	fs.BoolVar(&o.Fresh, "fresh", false, "forget cached registrations and the spawned Herald's data first")
	version := fs.String("mqtt-version", "3.1.1", "MQTT version the devices speak: 3.1.1 or 5")
	fs.DurationVar(&o.KeepAlive, "keepalive", 0, "the devices' keepalive (default 5m)")
	fs.IntVar(&o.InFlight, "in-flight", 0, "handshakes under way at once (default 32)")
	fs.IntVar(&o.Register, "register-workers", 0, "concurrent registrations (default 32)")
	fs.DurationVar(&o.SettleMin, "settle-min", 0, "least wait before reading a settled RSS (default 2s)")
	fs.DurationVar(&o.SettleMax, "settle-max", 0, "longest wait for the RSS to settle (default 30s)")
	fs.DurationVar(&o.Timeout, "timeout", 0, "bound of each phase: connecting, delivering (default 2m)")
	fs.IntVar(&o.Nodes, "nodes", 5, "cluster: nodes in the cluster")
	fs.StringVar(&o.Postgres, "postgres", bench.DefaultPostgres, "cluster: the PostgreSQL the nodes share (each run makes and drops a schema of its own)")
	fs.StringVar(&o.NATS, "nats", bench.DefaultNATS, "cluster: the NATS the nodes share (each run has a subject prefix of its own)")
	fs.StringVar(&o.NATSMonitor, "nats-monitor", "", "cluster: that NATS's monitoring endpoint, e.g. http://127.0.0.1:8222, for its own message counters")
	fs.IntVar(&o.PerWorker, "per-worker", 15000, "cluster: most device sockets one child process of the bench holds")
	fs.DurationVar(&o.Profile, "profile", 0, "cluster: take a CPU profile of every node this long from the broadcast on, into --dir/cluster/*/nK.cpu.pprof (it costs the nodes CPU)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("bench: name one workload: conns, fanout, relay or cluster")
	}
	o.Workload, o.ServeArgs, o.ServeEnv = pos[0], serveArgs, serveEnv
	if o.AppKey == "" {
		o.AppKey = os.Getenv("HERALD_APP_KEY")
	}
	if o.MasterSecret == "" {
		o.MasterSecret = os.Getenv("HERALD_MASTER_SECRET")
	}
	switch strings.TrimPrefix(*version, "v") {
	case "3.1.1", "4":
		o.MQTTVersion = 4
	case "5", "5.0":
		o.MQTTVersion = 5
	default:
		return fmt.Errorf("bench: --mqtt-version %q: 3.1.1 or 5", *version)
	}
	o.Log = stderr

	rep, err := bench.Run(ctx, o)
	if rep != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if e := enc.Encode(rep); e != nil {
				return e
			}
		} else if e := bench.WriteTable(stdout, rep); e != nil {
			return e
		}
	}
	return err
}

// repeatFlag collects a repeatable flag whose values may hold commas
// (GODEBUG=gctrace=1,madvdontneed=1).
type repeatFlag []string

func (r *repeatFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(v string) error { *r = append(*r, v); return nil }
