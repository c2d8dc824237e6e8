package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// A swarm worker is this binary re-executed as `herald bench swarm-worker`:
// it holds one share of a cluster run's device sockets, which no single
// process could hold under a 20,000-file limit, and is driven by the bench
// over its stdin and stdout, one JSON object a line each way: every request
// gets exactly one reply, in order. Its stderr is a log.

// WorkerCommand is the hidden `herald bench` subcommand that runs a swarm
// worker.
const WorkerCommand = "swarm-worker"

// Worker operations.
const (
	opStart  = "start"  // make the swarm for Start; nothing connects yet
	opDial   = "dial"   // connect and subscribe devices [0, To)
	opExpect = "expect" // count the PUBLISH whose payload contains Nonce
	opWait   = "wait"   // until Want devices have it, or Timeout
	opStatus = "status" // counts and errors so far
	opClose  = "close"  // disconnect every device and exit
)

// workerRequest is one line from the bench to a worker.
type workerRequest struct {
	Op      string        `json:"op"`
	Start   *workerStart  `json:"start,omitempty"`
	To      int           `json:"to,omitempty"`
	Nonce   string        `json:"nonce,omitempty"`
	Want    int           `json:"want,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// workerStart is what a worker's swarm needs.
type workerStart struct {
	Addr      string        `json:"addr"` // the node's MQTT listener, IPv4 host:port
	Version   byte          `json:"version"`
	KeepAlive uint16        `json:"keepalive"`
	InFlight  int           `json:"in_flight"`
	Handshake time.Duration `json:"handshake,omitempty"` // one handshake's limit
	Devices   []Device      `json:"devices"`
}

// workerReply is one line from a worker to the bench. Times are Unix
// nanoseconds, which processes on one machine share.
type workerReply struct {
	Err string `json:"err,omitempty"`

	// dial
	Devices  int   `json:"devices,omitempty"`   // handshakes attempted in the phase
	Failed   int   `json:"failed,omitempty"`    // of which failed
	LastDone int64 `json:"last_done,omitempty"` // latest completed handshake, ever

	// every reply but start's and close's
	Connected int      `json:"connected"`
	Received  int      `json:"received"`
	Dups      int      `json:"dups,omitempty"`
	FirstRecv int64    `json:"first_recv,omitempty"`
	LastRecv  int64    `json:"last_recv,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// errWorkerGone means the worker ended its output: it exited.
var errWorkerGone = errors.New("bench: swarm worker exited")

// readReply reads one reply line.
func readReply(r *bufio.Reader) (workerReply, error) {
	var rep workerReply
	line, err := r.ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		return rep, errWorkerGone
	}
	if err != nil && err != io.EOF {
		return rep, err
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return rep, fmt.Errorf("bench: a swarm worker said %.80q: %w", line, err)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("bench: swarm worker: %s", rep.Err)
	}
	return rep, nil
}

// writeLine writes v as one JSON line.
func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
