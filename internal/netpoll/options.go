package netpoll

import (
	"errors"
	"log/slog"
	"runtime"
	"time"
)

// Errors a Handler sees in OnClose, or a caller gets from Write.
var (
	// ErrClosed is returned by Write on a connection that is closed or
	// closing.
	ErrClosed = errors.New("netpoll: connection closed")
	// ErrWriteQueueFull closes a connection whose peer does not read fast
	// enough: its queue of unwritten bytes would pass Options.MaxWriteQueue.
	ErrWriteQueueFull = errors.New("netpoll: write queue full")
	// ErrIdleTimeout closes a connection that sent nothing for its idle
	// timeout (Conn.SetIdleTimeout).
	ErrIdleTimeout = errors.New("netpoll: idle timeout")
	// ErrEvicted closes a connection that the Gate evicted: it had not
	// authenticated, and a newer connection needed its place.
	ErrEvicted = errors.New("netpoll: closed to make room (not authenticated in time)")
	// ErrEngineClosed closes every connection when the engine shuts down,
	// and is what Serve returns then (like http.ErrServerClosed).
	ErrEngineClosed = errors.New("netpoll: engine closed")
)

// Options tune an Engine and ServeConn. The zero value is usable: every
// zero field takes the default named in its comment.
type Options struct {
	// Pollers is the number of epoll goroutines. Default GOMAXPROCS.
	Pollers int
	// ReadBufferSize is the size of each poller's one shared read buffer,
	// and of the buffers ServeConn borrows from its pool. It bounds the
	// bytes one OnData call gets. Default 64 KiB.
	ReadBufferSize int
	// MaxWriteQueue caps the bytes a connection may hold unwritten; a
	// Write that would pass it closes the connection with
	// ErrWriteQueueFull. Default 1 MiB.
	MaxWriteQueue int
	// WriteTimeout bounds one write on a ServeConn connection (the epoll
	// engine never blocks on a write, so it does not use it). Default 10s.
	WriteTimeout time.Duration
	// Gate, when set, admits or refuses each connection the engine
	// accepts (on the epoll pollers and in the accept loop for other
	// listeners) before anything is spent on it. Default none: every
	// connection is taken.
	Gate Gate
	// Logger gets the engine's rare operational messages (accept
	// failures such as EMFILE). Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Pollers <= 0 {
		o.Pollers = runtime.GOMAXPROCS(0)
	}
	if o.ReadBufferSize <= 0 {
		o.ReadBufferSize = 64 << 10
	}
	if o.MaxWriteQueue <= 0 {
		o.MaxWriteQueue = 1 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
