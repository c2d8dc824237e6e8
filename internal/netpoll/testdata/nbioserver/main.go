// Command nbioserver is an idle server on github.com/lesismal/nbio, for
// the side-by-side memory measurement in ../../mem_linux_test.go
// (HERALD_NETPOLL_MEM_EXTERNAL=nbio=/path/to/nbioserver). It speaks the
// same stdin protocol as TestMemServer: it prints "ADDR host:port", then
// answers "count" with "COUNT n" and "gc" with "OK", and exits at EOF.
// It has its own go.mod so that Herald does not depend on nbio.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/lesismal/nbio"
)

func main() {
	var open atomic.Int64
	addr := make(chan net.Addr, 1)
	e := nbio.NewEngine(nbio.Config{
		Network: "tcp",
		Addrs:   []string{"127.0.0.1:0"},
		Listen: func(network, a string) (net.Listener, error) {
			ln, err := net.Listen(network, a)
			if err == nil {
				addr <- ln.Addr()
			}
			return ln, err
		},
	})
	e.OnOpen(func(*nbio.Conn) { open.Add(1) })
	e.OnData(func(*nbio.Conn, []byte) {})
	e.OnClose(func(*nbio.Conn, error) { open.Add(-1) })
	if err := e.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("ADDR %s\n", <-addr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "count":
			fmt.Printf("COUNT %d\n", open.Load())
		case "gc":
			runtime.GC()
			fmt.Println("OK")
		}
	}
}
