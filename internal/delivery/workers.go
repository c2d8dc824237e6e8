package delivery

import (
	"context"
	"sync"
	"time"
)

// workers runs tasks on goroutines that outlive them. A send to a vendor
// runs deep (HTTP/2, TLS, the store) and a fresh goroutine grows its stack
// to that depth by copying, once per send: at thousands of sends a second
// that copying was a tenth of the relay's CPU. A worker keeps its grown
// stack for the next task and ends after idleFor without one.
type workers struct {
	ctx     context.Context
	tasks   chan func() // unbuffered: a send succeeds only to an idle worker
	idleFor time.Duration
	tasksWG sync.WaitGroup // tasks handed out and not yet ended
}

func newWorkers(ctx context.Context, idleFor time.Duration) *workers {
	return &workers{ctx: ctx, tasks: make(chan func()), idleFor: idleFor}
}

// Go runs task on an idle worker, or on a new one when none is idle. The
// caller bounds how many tasks run at once.
func (p *workers) Go(task func()) {
	p.tasksWG.Add(1)
	select {
	case p.tasks <- task:
	default:
		go p.work(task)
	}
}

// Wait returns once every task handed to Go has ended.
func (p *workers) Wait() { p.tasksWG.Wait() }

func (p *workers) work(task func()) {
	idle := time.NewTimer(p.idleFor)
	defer idle.Stop()
	for {
		task()
		p.tasksWG.Done()
		idle.Reset(p.idleFor)
		select {
		case task = <-p.tasks:
		case <-idle.C:
			return
		case <-p.ctx.Done():
			return
		}
	}
}
