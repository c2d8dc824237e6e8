//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat. USER_HZ is 100
// on every Linux architecture Go supports, whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// procStat is what the bench reads of a server process.
type procStat struct {
	RSS int64         // VmRSS, bytes
	CPU time.Duration // utime + stime
}

// readProc reads the resident set and the CPU time of pid.
func readProc(pid int) (procStat, error) {
	rss, err := readRSS(pid)
	if err != nil {
		return procStat{}, err
	}
	cpu, err := readCPU(pid)
	if err != nil {
		return procStat{}, err
	}
	return procStat{RSS: rss, CPU: cpu}, nil
}

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: /proc/%d/status: VmRSS %q", pid, rest)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("bench: /proc/%d/status has no VmRSS", pid)
}

// readCPU returns utime + stime of pid: the CPU the process itself used,
// all threads included, children not.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces and
	// parentheses itself, so fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// findListener returns the process that listens on TCP port port, found
// through the socket's inode in /proc/net/tcp{,6} and the fd links of
// every process this user may read.
func findListener(port int) (int, error) {
	inodes := map[string]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); !ok || err != nil || int(p) != port {
				continue
			}
			inodes["socket:["+fields[9]+"]"] = true
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("bench: nothing listens on port %d", port)
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if link, err := os.Readlink(fd); err == nil && inodes[link] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid, nil
		}
	}
	return 0, fmt.Errorf("bench: the process listening on port %d is not readable; give --server-pid", port)
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, so that
// this process can hold its N client sockets and the servers it starts
// inherit the same budget. It returns the new soft limit.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		// An explicit Setrlimit also tells os/exec to pass this limit on
		// to children, rather than the soft limit the process started with.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// pidsByName lists the processes whose command name is name.
func pidsByName(name string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var out []int
	for _, d := range dirs {
		if b, err := os.ReadFile(d); err == nil && strings.TrimSpace(string(b)) == name {
			if pid, err := strconv.Atoi(strings.Split(d, "/")[2]); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// sumCPUOf is the CPU of pids so far; one that has ended counts nothing.
func sumCPUOf(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if cpu, err := readCPU(p); err == nil {
			sum += cpu
		}
	}
	return sum
}
