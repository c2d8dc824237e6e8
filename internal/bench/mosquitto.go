package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
)

// fanoutTopic is the one topic every peer device subscribes to in the
// fanout workload; Herald's equivalent is the broadcast audience "all".
const fanoutTopic = "bench/all"

// mosquitto is a Mosquitto broker the bench started for one run.
type mosquitto struct {
	proc    *process
	mqtt    netip.AddrPort
	version string
	mqttVer byte
}

// mosquittoVersion returns "2.0.11" from `mosquitto -h`, or an error when
// the binary is missing.
func mosquittoVersion(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found (Debian: apt-get install mosquitto)", bin)
	}
	// -h prints the usage and exits with status 3; only the text matters.
	out, _ := exec.Command(path, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if v, ok := strings.CutPrefix(strings.TrimSpace(line), "mosquitto version "); ok {
		return v, nil
	}
	return "", fmt.Errorf("%s -h: no version in %q", path, line)
}

// startMosquitto runs Mosquitto on a free port with a configuration made
// for the workload: no connection limit, no persistence, a queue long
// enough, and no per-connection log lines (Herald runs at log level warn).
func startMosquitto(ctx context.Context, o *Options, version string) (*mosquitto, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		"max_connections -1",
		"persistence false",
		"max_queued_messages 100000",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"connection_messages false",
		"sys_interval 0",
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto would switch to the user "mosquitto"; staying
		// root keeps it readable in /proc and its file limit as raised.
		conf = append(conf, "user root")
	}
	path := filepath.Join(o.Dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	proc, err := startProcess(o.MosquittoBin, []string{"-c", path}, o.ServeEnv, o.ServerCPUs, filepath.Join(o.Dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	m := &mosquitto{proc: proc, version: version, mqttVer: o.MQTTVersion,
		mqtt: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	if err := waitDial(m.mqtt.String(), 10*time.Second, proc); err != nil {
		m.stop()
		return nil, fmt.Errorf("bench: mosquitto did not listen on %s: %v%s", m.mqtt, err, proc.tail())
	}
	return m, nil
}

func (m *mosquitto) name() string             { return "Mosquitto " + m.version }
func (m *mosquitto) pid() int                 { return m.proc.pid() }
func (m *mosquitto) mqttAddr() netip.AddrPort { return m.mqtt }
func (m *mosquitto) stop() error              { return m.proc.stop(10 * time.Second) }

// devices returns anonymous identities: for conns each device has its own
// topic, as a Herald device does; for fanout all share one topic.
func (m *mosquitto) devices(_ context.Context, n int, workload string) ([]Device, error) {
	out := make([]Device, n)
	for i := range out {
		id := fmt.Sprintf("bench-%d", i)
		out[i] = Device{ClientID: id, Topic: "devices/" + id}
		if workload == Fanout {
			out[i].Topic = fanoutTopic
		}
	}
	return out, nil
}

// broadcast publishes one QoS 1 message carrying nonce to fanoutTopic from
// a connection of its own, made before the clock starts. The payload has
// the shape and size of the JSON Herald delivers for the same push.
func (m *mosquitto) broadcast(ctx context.Context, nonce string) (sent time.Time, accept time.Duration, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", m.mqtt.String())
	if err != nil {
		return sent, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	if err := packet.WritePacket(c, &packet.Connect{CleanStart: true, ClientID: "bench-publisher", KeepAlive: 60}, m.mqttVer); err != nil {
		return sent, 0, err
	}
	p, err := packet.ReadPacket(r, m.mqttVer, maxPacket)
	if err != nil {
		return sent, 0, fmt.Errorf("publisher CONNACK: %w", err)
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode.IsError() {
		return sent, 0, fmt.Errorf("publisher: unexpected %v", p.Type())
	}
	payload := fmt.Sprintf(`{"id":"%s","notification":{"title":"herald bench","body":"%s"},"priority":"normal","accepted_at":"%s","expires_at":"%s"}`,
		randomHex(13), nonce, time.Now().UTC().Format(time.RFC3339Nano), time.Now().Add(30*time.Second).UTC().Format(time.RFC3339Nano))
	pub := &packet.Publish{Topic: fanoutTopic, Payload: []byte(payload), QoS: 1, PacketID: 1}
	sent = time.Now()
	if err := packet.WritePacket(c, pub, m.mqttVer); err != nil {
		return sent, 0, err
	}
	for {
		p, err := packet.ReadPacket(r, m.mqttVer, maxPacket)
		if err != nil {
			return sent, 0, fmt.Errorf("publisher PUBACK: %w", err)
		}
		if ack, ok := p.(*packet.Puback); ok && ack.PacketID == 1 {
			return sent, time.Since(sent), nil
		}
	}
}
