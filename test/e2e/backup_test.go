package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// herald backup takes a running node's store; herald restore unpacks it
// into a new data directory, from which a node serves what was accepted
// before the backup (and nothing after it), with the same app and admin
// token.
func TestBackupAndRestore(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	srv := startServer(t, data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	reg, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	for i := range 3 {
		id, st := srv.push(t, `{"audience":{"registration_id":["`+reg.RegistrationID+`"]},"message":`+string(rune('1'+i))+`}`)
		if st != 202 {
			t.Fatalf("push: %d", st)
		}
		before = append(before, id)
	}

	if _, err := herald(t, ctx, nil, "backup", "--server", srv.URL, "--admin-token", "not-the-token", "-o", filepath.Join(dir, "x.tar")); err == nil {
		t.Error("a backup with a wrong admin token was given")
	}
	archive := filepath.Join(dir, "backup.tar")
	out, err := herald(t, ctx, nil, "backup", "--server", srv.URL, "--admin-token", token, "-o", archive)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "backup written to "+archive) {
		t.Errorf("herald backup said %q", out)
	}
	after, _ := srv.push(t, `{"audience":{"registration_id":["`+reg.RegistrationID+`"]},"message":"after"}`)
	srv.Stop()

	restored := filepath.Join(dir, "restored")
	if _, err := herald(t, ctx, nil, "restore", "--data", restored, archive); err != nil {
		t.Fatal(err)
	}
	if _, err := herald(t, ctx, nil, "restore", "--data", restored, archive); err == nil {
		t.Error("a restore into a directory that is not empty was done")
	}
	again := heraldtest.Start(t, restored)
	if again.AppKey != srv.AppKey {
		t.Errorf("the restored node's default app is %s, want %s", again.AppKey, srv.AppKey)
	}
	tok2, _ := os.ReadFile(filepath.Join(restored, "admin-token"))
	if strings.TrimSpace(string(tok2)) != token {
		t.Error("the restored data directory has another admin token")
	}
	r := *reg
	r.Server = again.URL
	msgs, err := client.NewDevice(r, nil).Poll(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, m.ID)
	}
	if !slices.Equal(got, before) {
		t.Errorf("the restored inbox holds %v, want the pushes before the backup %v (not %s)", got, before, after)
	}
}
