//go:build !linux

package netpoll

import (
	"net"
	"sync"
)

// pollers is empty off Linux: New leaves Engine.poll nil, and Serve falls
// back to accept plus ServeConn for every listener.
type pollers struct{ serving sync.WaitGroup }

func startPollers(*Engine) (*pollers, error) { return nil, nil }

func (*pollers) serve(*net.TCPListener) error { panic("netpoll: no pollers on this system") }

func (*pollers) shutdown() {}
