//go:build !linux

package netpoll

import "net"

// readinessWaiter is nil off Linux: ServeConn reads with a pooled buffer
// held while it waits.
func readinessWaiter(nc net.Conn) func() error { return nil }
