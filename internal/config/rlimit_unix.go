//go:build unix

package config

import "syscall"

// fileLimit is the soft RLIMIT_NOFILE (an unlimited one as 2^30), or 0
// when it cannot be read.
func fileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return int(min(r.Cur, 1<<30))
}
