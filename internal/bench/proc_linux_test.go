//go:build linux

package bench

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestReadProcSelf(t *testing.T) {
	st, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.RSS < 1<<20 || st.CPU < 0 {
		t.Errorf("readProc(self) = %+v; want an RSS of at least 1 MiB", st)
	}
}

func TestFindListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := findListener(ln.Addr().(*net.TCPAddr).Port)
	if err != nil || pid != os.Getpid() {
		t.Errorf("findListener = %d, %v; want %d (this process)", pid, err, os.Getpid())
	}
}

func TestParseStat(t *testing.T) {
	// A command name with a space and a parenthesis; ppid 1, utime 250,
	// stime 50, cutime 7, cstime 3 (clock ticks).
	line := "4242 (post gres) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 2000000 500 18446744073709551615\n"
	ppid, cpu, children, err := parseStat([]byte(line))
	if err != nil || ppid != 1 || cpu != 3*time.Second || children != 100*time.Millisecond {
		t.Errorf("parseStat = %d, %v, %v, %v; want 1, 3s, 100ms", ppid, cpu, children, err)
	}
	if _, _, _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("parseStat accepted a short line")
	}
}
