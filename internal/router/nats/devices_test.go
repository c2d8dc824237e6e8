package nats

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
)

func TestParseMsg(t *testing.T) {
	for _, c := range []struct {
		line, subject, reply string
		size                 int
		ok                   bool
	}{
		{"herald.d.x x 12", "herald.d.x", "", 12, true},
		{"herald.d.x x _INBOX.abc 1", "herald.d.x", "_INBOX.abc", 1, true},
		{"herald.d.x x", "", "", 0, false},
		{"herald.d.x x -1", "", "", 0, false},
		{"herald.d.x x 99999999999", "", "", 0, false},
		{"a b c d e", "", "", 0, false},
	} {
		subject, reply, size, err := parseMsg(c.line)
		if (err == nil) != c.ok || subject != c.subject || reply != c.reply || size != c.size {
			t.Errorf("parseMsg(%q) = %q %q %d %v", c.line, subject, reply, size, err)
		}
	}
}

func FuzzParseMsg(f *testing.F) {
	for _, s := range []string{"herald.d.x x 12", "s sid reply 0", "", " ", "a b 1 2 3", "x y 18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		_, _, size, err := parseMsg(line)
		if err == nil && (size < 0 || size > 64<<20) {
			t.Fatalf("parseMsg(%q) accepted size %d", line, size)
		}
	})
}

func TestParseServers(t *testing.T) {
	got, err := parseServers("nats://a:1, tls://u:p@b:2,c")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, u := range got {
		hosts = append(hosts, u.Scheme+" "+u.Host)
	}
	if strings.Join(hosts, ",") != "nats a:1,tls b:2,nats c:4222" {
		t.Errorf("parseServers = %v", hosts)
	}
	if _, err := parseServers(" , "); err == nil {
		t.Error("an empty list was accepted")
	}
}

func startTestServer(t *testing.T, port int) *natsserver.Server {
	t.Helper()
	if port == 0 {
		port = natsserver.RANDOM_PORT
	}
	for try := 0; ; try++ {
		s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if s.ReadyForConnections(5 * time.Second) {
			t.Cleanup(s.Shutdown)
			return s
		}
		s.Shutdown()
		if try == 50 {
			t.Fatal("NATS did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The device connection against a real NATS server: what it subscribes
// it receives (a second SUB of one device changes nothing), what it
// unsubscribes it does not, it does not receive its own publications, and
// after the server restarts it subscribes again for the devices it is told
// of and says it is back.
func TestDeviceConn(t *testing.T) {
	srv := startTestServer(t, 0)
	port := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	servers, _ := parseServers(url)
	var mu sync.Mutex
	held := []string{"dev1"}
	got := make(chan string, 16)
	back := make(chan struct{}, 4)
	d := &deviceConn{
		servers: servers, name: "test", prefix: "herald.d.", log: slog.New(slog.DiscardHandler),
		devices:     func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), held...) },
		hold:        &sync.Mutex{},
		deliver:     func(subject, reply string, data []byte) { got <- subject + " " + string(data) },
		reconnected: func() { back <- struct{}{} },
	}
	if err := d.start(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx := context.Background()
	d.subscribe("dev1")
	d.subscribe("dev1")
	d.subscribe("dev2")
	d.unsubscribe("dev2")
	if err := d.flush(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	d.publish("herald.d.dev1", []byte("own")) // echo is off: not delivered back
	nc.Publish("herald.d.dev2", []byte("gone"))
	nc.Publish("herald.d.dev1", []byte("hello"))
	nc.Flush()
	expect := func(want string) {
		t.Helper()
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("received %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing received, want %q", want)
		}
	}
	expect("herald.d.dev1 hello")
	select {
	case m := <-got:
		t.Fatalf("received %q too", m)
	case <-time.After(100 * time.Millisecond):
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	srv = startTestServer(t, port)
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Fatal("the device connection did not come back")
	}
	nc2, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	nc2.Publish("herald.d.dev1", []byte("again"))
	nc2.Flush()
	expect("herald.d.dev1 again")
}
