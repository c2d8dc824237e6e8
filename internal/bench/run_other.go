//go:build !linux

package bench

import (
	"context"
	"errors"
	"io"
)

// Run needs Linux: the client side is built on epoll and the server is
// measured through /proc.
func Run(ctx context.Context, o Options) (*Report, error) {
	return nil, errors.New("bench: herald bench runs on Linux only")
}

// RunWorker needs Linux, as Run does.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer, log io.Writer) error {
	return errors.New("bench: herald bench runs on Linux only")
}
