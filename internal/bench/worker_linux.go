//go:build linux

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// RunWorker is a swarm worker: it answers requests from in on out until
// the bench says close or in ends (the bench is gone), then disconnects its
// devices.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer, log io.Writer) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	var sw *swarm
	defer func() {
		if sw != nil {
			sw.close()
		}
	}()
	status := func() workerReply {
		if sw == nil {
			return workerReply{}
		}
		return workerReply{Connected: sw.connected(), Received: int(sw.received.Load()), Dups: int(sw.dups.Load()),
			FirstRecv: sw.firstRecv.Load(), LastRecv: sw.lastRecv.Load(), Errors: sw.errors()}
	}
	dec := json.NewDecoder(bufio.NewReaderSize(in, 1<<20))
	for {
		var req workerRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("bench: swarm worker: reading a request: %w", err)
		}
		var rep workerReply
		var err error
		switch {
		case req.Op == opClose:
			return writeLine(out, workerReply{})
		case req.Op == opStart && sw == nil && req.Start != nil:
			sw, err = startWorkerSwarm(req.Start)
		case req.Op == opStart:
			err = errors.New("start: once, with its settings")
		case sw == nil:
			err = fmt.Errorf("%s before start", req.Op)
		case req.Op == opDial:
			var p phase
			dctx, cancel := context.WithTimeout(ctx, max(req.Timeout, time.Second))
			p, err = sw.dial(dctx, req.To)
			cancel()
			rep = status()
			rep.Devices, rep.Failed, rep.LastDone = p.Devices, p.Failed, sw.lastDone.Load()
		case req.Op == opExpect:
			sw.expect([]byte(req.Nonce))
			rep = status()
		case req.Op == opWait:
			wctx, cancel := context.WithTimeout(ctx, max(req.Timeout, time.Millisecond))
			sw.waitReceived(wctx, req.Want)
			cancel()
			rep = status()
		case req.Op == opStatus:
			rep = status()
		default:
			err = fmt.Errorf("unknown operation %q", req.Op)
		}
		if err != nil {
			rep.Err = err.Error()
			fmt.Fprintf(log, "swarm worker: %s: %v\n", req.Op, err)
		}
		if err := writeLine(out, rep); err != nil {
			return err
		}
	}
}

func startWorkerSwarm(st *workerStart) (*swarm, error) {
	addr, err := netip.ParseAddrPort(st.Addr)
	if err != nil {
		return nil, fmt.Errorf("start: address %q: %w", st.Addr, err)
	}
	if limit, err := raiseFileLimit(); err == nil && uint64(len(st.Devices)+fileReserve) > limit {
		return nil, fmt.Errorf("start: %d devices need %d open files; a worker may have %d", len(st.Devices), len(st.Devices)+fileReserve, limit)
	}
	return newSwarm(swarmConfig{Addr: addr, Version: st.Version, KeepAlive: st.KeepAlive,
		Devices: st.Devices, InFlight: st.InFlight, Timeout: st.Handshake})
}

// worker is the bench's end of one swarm worker process.
type worker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	node int // index of the node its devices connect to
	devs int // how many devices it holds

	mu   sync.Mutex // one request at a time; guards in and out
	done chan struct{}
	err  error // the exit status, once done is closed
}

// startWorker runs bin as a swarm worker with its devices for the node at
// addr, its stderr going to logPath.
func startWorker(ctx context.Context, bin, logPath string, node int, st workerStart) (*worker, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, "bench", WorkerCommand)
	cmd.Stderr = log
	// No Pdeathsig: Linux ties it to the thread that forked, which Go may
	// retire while the bench lives on. A killed bench closes the worker's
	// stdin instead, and the worker ends there.
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s bench %s: %w", bin, WorkerCommand, err)
	}
	w := &worker{cmd: cmd, in: in, out: bufio.NewReader(out), node: node, devs: len(st.Devices), done: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	if _, err := w.call(ctx, workerRequest{Op: opStart, Start: &st}); err != nil {
		w.kill()
		return nil, fmt.Errorf("%w (log: %s)", err, filepath.Base(logPath))
	}
	return w, nil
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

// call sends req and waits for its reply, or for ctx. A call abandoned
// for ctx leaves the worker out of step, so the worker is killed.
func (w *worker) call(ctx context.Context, req workerRequest) (workerReply, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	type result struct {
		rep workerReply
		err error
	}
	ch := make(chan result, 1)
	go func() {
		if err := writeLine(w.in, req); err != nil {
			ch <- result{err: fmt.Errorf("bench: to a swarm worker: %w", err)}
			return
		}
		rep, err := readReply(w.out)
		ch <- result{rep, err}
	}()
	select {
	case r := <-ch:
		return r.rep, r.err
	case <-ctx.Done():
		w.kill()
		return workerReply{}, fmt.Errorf("bench: swarm worker %s: %w", req.Op, ctx.Err())
	}
}

// stop asks the worker to disconnect its devices and exit, and kills it
// if it has not within grace.
func (w *worker) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	w.call(ctx, workerRequest{Op: opClose})
	w.in.Close()
	select {
	case <-w.done:
	case <-ctx.Done():
		w.kill()
	}
}

func (w *worker) kill() {
	w.cmd.Process.Kill()
	<-w.done
}

// eachWorker runs f on every worker at once and returns the first error.
func eachWorker(ws []*worker, f func(i int, w *worker) error) error {
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { errs[i] = f(i, w) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
