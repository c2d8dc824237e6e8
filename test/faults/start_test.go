package faults

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/test/heraldtest"
)

// TestStartOnFullDiskHonoursSIGTERM starts a node whose store has a log to
// replay on a file system with no free space. The start says what it
// does and why it waits, waits without spinning, and ends promptly on
// SIGTERM; once space is back, the next start serves.
func TestStartOnFullDiskHonoursSIGTERM(t *testing.T) {
	mnt := mountTmpfs(t, 32<<20)
	data := filepath.Join(mnt, "data")
	srv := heraldtest.Start(t, data, "--mqtt", "127.0.0.1:0", "--store-min-free", "0")
	st := startStream(srv, register(t, srv), 2)
	waitFor(t, 10*time.Second, "pushes to replay", func() bool { return st.count(accepted) >= 200 })
	st.end()
	srv.Stop()
	filler := fill(t, mnt)

	cmd := exec.Command(heraldtest.Bin(), "serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "", "--store-min-free", "0")
	log := &heraldtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	waitFor(t, 10*time.Second, "the start to say it waits for the disk", func() bool {
		return strings.Contains(log.String(), "waits for the disk")
	})
	if !strings.Contains(log.String(), "opening the embedded store") {
		t.Errorf("the start did not say it opens the store: %s", log)
	}
	if cpu := cpuTime(t, cmd.Process.Pid, time.Second); cpu > 500*time.Millisecond {
		t.Errorf("waiting for the disk took %s of CPU in 1 s: it spins", cpu)
	}

	signalled := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("herald ignored SIGTERM for 5 s while waiting for the disk: %s", log)
	}
	took := time.Since(signalled)
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(log.String(), "signal") {
		t.Errorf("an interrupted start: exit %d, output %s; want a non-zero exit that says it was interrupted", cmd.ProcessState.ExitCode(), log)
	}
	t.Logf("SIGTERM ended the waiting start in %s", took.Round(time.Millisecond))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	heraldtest.Start(t, data, "--store-min-free", "0")
}

// cpuTime returns the CPU time (user and system) process pid uses during d.
func cpuTime(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	ticks := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("reading the process's CPU time: %v", err)
		}
		// The fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		return utime + stime
	}
	before := ticks()
	time.Sleep(d)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ticks()-before) * time.Second / hz
}

// TestStartRefusals: a start that finds the data directory missing, empty
// or missing part of what an earlier start left refuses with what is
// missing and what --init would do, and exits non-zero; --init starts; a
// directory of an earlier version (store and admin token, no marker) is
// adopted; the default directory is created without --init.
func TestStartRefusals(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	refused := func(t *testing.T, want ...string) {
		t.Helper()
		code, stderr := run(t, base, 10*time.Second, "serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "")
		if code == 0 {
			t.Fatalf("the start was not refused: %s", stderr)
		}
		for _, w := range append(want, "--init") {
			if !strings.Contains(stderr, w) {
				t.Errorf("the refusal does not say %q: %s", w, stderr)
			}
		}
	}

	t.Run("missing", func(t *testing.T) { refused(t, data+" does not exist") })
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Run("empty", func(t *testing.T) { refused(t, data+" is empty") })

	first := heraldtest.Start(t, data, "--init")
	secret := first.Secret
	first.Stop()
	if secret == "" {
		t.Fatal("--init on an empty directory showed no master secret")
	}
	if s := heraldtest.Start(t, data); s.Secret != "" {
		t.Errorf("a restart created a new default app")
	} else {
		s.Stop()
	}

	token := filepath.Join(data, "admin-token")
	kept, err := os.ReadFile(token)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("admin token lost", func(t *testing.T) {
		os.Remove(token)
		refused(t, "not the admin token", "generate a new admin token and keep the store")
		if err := os.WriteFile(token, kept, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("marker lost", func(t *testing.T) {
		os.Remove(filepath.Join(data, "herald-marker"))
		s := heraldtest.Start(t, data)
		s.Stop()
		if !strings.Contains(s.Log.String(), "adopting it") {
			t.Errorf("a store without a marker was not adopted: %s", s.Log)
		}
		if _, err := os.Stat(filepath.Join(data, "herald-marker")); err != nil {
			t.Errorf("the adopted directory got no marker: %v", err)
		}
	})
	t.Run("store lost", func(t *testing.T) {
		entries, _ := os.ReadDir(data)
		for _, e := range entries {
			if e.Name() != "herald-marker" && e.Name() != "admin-token" {
				os.RemoveAll(filepath.Join(data, e.Name()))
			}
		}
		refused(t, "but not a store", "create a new, empty store")
		s := heraldtest.Start(t, data, "--init")
		if s.Secret == "" || s.Secret == secret {
			t.Errorf("--init on a lost store did not create a new default app")
		}
	})
	t.Run("default directory", func(t *testing.T) {
		cwd := t.TempDir()
		cmd := exec.Command(heraldtest.Bin(), "serve", "--http", "127.0.0.1:0", "--mqtt", "")
		cmd.Dir = cwd
		stdout, _ := cmd.StdoutPipe()
		log := &heraldtest.SyncBuffer{}
		cmd.Stderr = log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		served := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			ok := false
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "For the client commands") && !ok {
					ok = true
					served <- true
				}
			}
			if !ok {
				served <- false
			}
		}()
		if !<-served {
			cmd.Wait()
			t.Fatalf("the quick start (no --data, no --init) did not serve: %s", log)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if _, err := os.Stat(filepath.Join(cwd, "herald-data", "herald-marker")); err != nil {
			t.Errorf("the default directory got no marker: %v", err)
		}
	})
}

// TestStartRefusesLostAdminTokenOnPostgres: with the store in PostgreSQL
// the data directory keeps only the admin token; a start that finds it
// missing while the database already has its default app is refused, and
// --init generates a new one.
func TestStartRefusesLostAdminTokenOnPostgres(t *testing.T) {
	url := heraldtest.PostgresURL(t)
	schema := fmt.Sprintf("herald_faults_test_%d", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, url); err == nil {
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(ctx)
		}
	})
	base := t.TempDir()
	data := filepath.Join(base, "data")
	pg := []string{"--postgres", url, "--postgres-schema", schema}
	first := heraldtest.Start(t, data, pg...)
	first.Stop()
	if first.Secret == "" {
		t.Fatal("the first start on an empty database showed no master secret")
	}
	if err := os.Remove(filepath.Join(data, "admin-token")); err != nil {
		t.Fatal(err)
	}
	code, stderr := run(t, base, 20*time.Second, append([]string{"serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", ""}, pg...)...)
	if code == 0 || !strings.Contains(stderr, "the database has apps") || !strings.Contains(stderr, "--init") {
		t.Errorf("a start without the admin token: exit %d, stderr %q; want a refusal that names --init", code, stderr)
	}
	heraldtest.Start(t, data, append(pg, "--init")...)
	if _, err := os.Stat(filepath.Join(data, "admin-token")); err != nil {
		t.Errorf("--init generated no admin token: %v", err)
	}
}
