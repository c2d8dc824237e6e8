//go:build !linux

package netpoll

import "net"

// readinessWaiter is nil off Linux: ServeConn waits in Read on its small
// probe buffer.
func readinessWaiter(nc net.Conn) func() error { return nil }

// pending cannot tell here whether a connection waits.
func pending(net.Listener) bool { return false }
