//go:build linux

package bench

import (
	"net"
	"os"
	"testing"
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
