//go:build !linux

package netpoll

import "net"

// readinessWaiter is nil off Linux: ServeConn waits in Read on its small
// probe buffer.
func readinessWaiter(nc net.Conn) func() error { return nil }
