// Package e2e runs the real herald binary as users do and checks what they
// see: the CLI, the HTTP API, and that an accepted message survives kill -9.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

func TestMain(m *testing.M) { heraldtest.Main(m) }

// server is a `herald serve` process (test/heraldtest) with the provider
// calls these tests make.
type server struct{ *heraldtest.Server }

// startServer runs `herald serve` on dataDir with a free port and waits for
// its banner; extra flags override the defaults.
func startServer(t *testing.T, dataDir string, extra ...string) *server {
	return &server{heraldtest.Start(t, dataDir, extra...)}
}

func (s *server) push(t *testing.T, body string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/v1/push", strings.NewReader(body))
	req.SetBasicAuth(s.AppKey, s.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0
	}
	defer resp.Body.Close()
	var out struct {
		MsgID string `json:"msg_id"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.MsgID, resp.StatusCode
}

// TestAcceptedMessageSurvivesKill9 pushes to an offline device from several
// goroutines, kills the server with SIGKILL right after a 202 while other
// pushes are in flight, restarts it on the same data, and checks the device
// still receives every message that was answered with a msg_id.
func TestAcceptedMessageSurvivesKill9(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data)
	appKey, secret := srv.AppKey, srv.Secret
	reg, err := client.Register(context.Background(), nil, srv.URL, client.RegisterRequest{AppKey: appKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}

	var accepted []string
	for round := range 3 {
		var mu sync.Mutex
		killNow := make(chan struct{})
		var once sync.Once
		inRound := 0
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					body := fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"round":%d,"w":%d,"i":%d},"options":{"ttl":3600}}`, reg.RegistrationID, round, w, i)
					if w%2 == 1 {
						body = fmt.Sprintf(`{"audience":"all","message":{"round":%d,"w":%d,"i":%d},"options":{"ttl":3600}}`, round, w, i)
					}
					id, status := srv.push(t, body)
					if status != http.StatusAccepted {
						return // the server is gone
					}
					mu.Lock()
					accepted = append(accepted, id)
					inRound++
					if inRound >= 40*(round+1) {
						once.Do(func() { close(killNow) })
					}
					mu.Unlock()
				}
			})
		}
		<-killNow
		srv.Kill()
		wg.Wait()

		srv = startServer(t, data)
		srv.AppKey, srv.Secret = appKey, secret
	}
	if len(accepted) == 0 {
		t.Fatal("no push was accepted")
	}

	reg.Server = srv.URL
	got := drainInbox(t, reg)
	lost := 0
	for _, id := range accepted {
		if !got[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d accepted messages were lost across kill -9", lost, len(accepted))
	}
	t.Logf("%d accepted messages over 3 kill -9 rounds, all delivered after restart", len(accepted))
}

// herald runs a client command of the binary.
func herald(t *testing.T, ctx context.Context, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, heraldtest.Bin(), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("herald %s: %v: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// drainInbox polls reg's inbox (on reg.Server) and acknowledges what comes
// until it is empty, and returns the IDs it held.
func drainInbox(t *testing.T, reg *client.Registration) map[string]bool {
	t.Helper()
	ctx := context.Background()
	dev := client.NewDevice(*reg, nil)
	got := map[string]bool{}
	for {
		msgs, err := dev.Poll(ctx, 0)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(msgs) == 0 {
			return got
		}
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			got[m.ID], ids[i] = true, m.ID
		}
		if err := dev.Ack(ctx, ids...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCLI drives the CLI as the README does: create an app, listen as a
// device, send to it by every audience kind; the device listens over MQTT
// (the default) and, on a server without MQTT, by long-polling.
func TestCLI(t *testing.T) {
	t.Run("mqtt", func(t *testing.T) { testCLI(t, "over MQTT", "--mqtt", "127.0.0.1:0") })
	t.Run("poll", func(t *testing.T) { testCLI(t, "over long-polling") })
}

func testCLI(t *testing.T, via string, serverArgs ...string) {
	data := t.TempDir()
	srv := startServer(t, data, serverArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := herald(t, ctx, nil, "app", "create", "shop", "--server", srv.URL, "--data", data)
	if err != nil {
		t.Fatal(err)
	}
	var appKey, secret string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "app_key" {
			appKey = f[1]
		} else if len(f) == 2 && f[0] == "master_secret" {
			secret = f[1]
		}
	}
	if appKey == "" || secret == "" {
		t.Fatalf("app create printed no credentials: %q", out)
	}
	env := []string{"HERALD_SERVER=" + srv.URL, "HERALD_APP_KEY=" + appKey, "HERALD_MASTER_SECRET=" + secret}

	state := filepath.Join(t.TempDir(), "device.json")
	listen := exec.CommandContext(ctx, heraldtest.Bin(), "listen", "--alias", "ann", "--tag", "vip", "--state", state, "--count", "4")
	listen.Env = append(os.Environ(), env...)
	var listenOut bytes.Buffer
	listenErr, _ := listen.StderrPipe()
	listen.Stdout = &listenOut
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	// The device announces its registration ID once registered.
	line, _ := bufio.NewReader(listenErr).ReadString('\n')
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "listening" || !strings.Contains(line, via) {
		t.Fatalf("listen said %q, want listening ... %s", line, via)
	}
	regID := f[2]
	go io.Copy(io.Discard, listenErr)

	var sent []string
	for _, args := range [][]string{
		{"--to", regID, "--title", "by id"},
		{"--alias", "ann", "--title", "by alias"},
		{"--tag", "vip", "--title", "by tag"},
		{"--all", "--body", "to all", "--ttl", "60"},
	} {
		out, err := herald(t, ctx, env, append([]string{"send", "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			MsgID string `json:"msg_id"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.MsgID == "" {
			t.Fatalf("send printed %q", out)
		}
		sent = append(sent, res.MsgID)
	}
	if err := listen.Wait(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	var got []string
	dec := json.NewDecoder(&listenOut)
	for dec.More() {
		var m client.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("listen printed something that is not a message: %v", err)
		}
		got = append(got, m.ID)
	}
	if !slices.Equal(got, sent) {
		t.Errorf("listen printed %v, want %v in order", got, sent)
	}
	// Everything printed was acknowledged.
	out, err = herald(t, ctx, env, "report", sent[0])
	if err != nil || !strings.Contains(out, `"delivered": 1,`) {
		t.Errorf("report after listen: %q %v", out, err)
	}
	// A second run reuses the saved registration.
	raw, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(raw), regID) {
		t.Errorf("registration not saved in %s: %q %v", state, raw, err)
	}
}
