package netpoll

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// readinessWaiter returns a function that blocks until nc has something to
// read (data, EOF or an error), without a buffer, through the runtime's
// poller; nil when nc hides its socket. It peeks with MSG_PEEK|MSG_DONTWAIT
// before it waits, because the runtime's poller is edge-triggered: bytes
// left over by a read that filled the buffer raise no new edge, and waiting
// on them would hang.
func readinessWaiter(nc net.Conn) func() error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var one [1]byte
	ready := func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err == unix.EINTR {
				continue
			}
			return err != unix.EAGAIN
		}
	}
	return func() error { return rc.Read(ready) }
}

// pending reports whether a connection waits in ln's backlog, when ln
// exposes its socket (SyscallConn, as *net.TCPListener does); false when
// it cannot tell.
func pending(ln net.Listener) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	})
	return ready
}
