package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// herald listen with a saved device: a deleted device is explained (and
// --fresh named) rather than retried for ever; --fresh registers anew; a
// saved device that --alias does not match is used, with a warning.
func TestListenSavedDevice(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := []string{"HERALD_SERVER=" + srv.URL, "HERALD_APP_KEY=" + srv.AppKey, "HERALD_MASTER_SECRET=" + srv.Secret}
	state := filepath.Join(t.TempDir(), "device.json")
	saved := func() string {
		t.Helper()
		raw, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		var reg struct {
			RegistrationID string `json:"registration_id"`
		}
		json.Unmarshal(raw, &reg)
		return reg.RegistrationID
	}
	// A first run registers and receives one push.
	done := make(chan error, 1)
	go func() {
		_, err := herald(t, ctx, env, "listen", "--transport", "poll", "--alias", "ann", "--state", state, "--count", "1")
		done <- err
	}()
	var first string
	waitLog(t, func() bool { _, err := os.Stat(state); return err == nil }, "the saved registration")
	first = saved()
	srv.push(t, `{"audience":{"registration_id":["`+first+`"]},"message":1}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The device is deleted on the server: listen says what happened.
	req, _ := http.NewRequest("DELETE", srv.URL+"/v1/devices/"+first, nil)
	req.SetBasicAuth(srv.AppKey, srv.Secret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v %v", resp, err)
	}
	_, err := herald(t, ctx, env, "listen", "--transport", "poll", "--alias", "bob", "--state", state, "--count", "1")
	if err == nil || !strings.Contains(err.Error(), "--fresh") || !strings.Contains(err.Error(), "alias and --tag apply to a new registration") {
		t.Errorf("listen with a deleted device: %v; want the warning about --alias and an error naming --fresh", err)
	}

	// --fresh registers a new device and receives on it.
	go func() {
		_, err := herald(t, ctx, env, "listen", "--transport", "poll", "--fresh", "--state", state, "--count", "1")
		done <- err
	}()
	waitLog(t, func() bool { _, err := os.Stat(state); return err == nil && saved() != first }, "a new saved registration")
	srv.push(t, `{"audience":{"registration_id":["`+saved()+`"]},"message":2}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
