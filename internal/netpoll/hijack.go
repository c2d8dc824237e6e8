package netpoll

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// SmallBuffers wraps w so that a WebSocket library that hijacks the
// connection (github.com/coder/websocket does) gets read and write buffers
// of size bytes of its own in place of net/http's 4 KiB each, which every
// idle connection would otherwise keep. Device frames are small, and bufio
// passes larger reads and writes straight through.
func SmallBuffers(w http.ResponseWriter, size int) http.ResponseWriter {
	return smallBuffers{w, size}
}

type smallBuffers struct {
	http.ResponseWriter
	size int
}

// Hijack implements http.Hijacker.
func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right after its handshake (Firefox's hello
	// often comes in the same packet) sit in net/http's reader. The library
	// keeps only what is buffered in the reader it gets back and reads the
	// rest from the connection itself, so they must be in the new reader's
	// buffer, not merely behind it.
	n := brw.Reader.Buffered()
	held, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(held)), nc), max(s.size, n))
	if n > 0 {
		br.Peek(n) // served by the bytes.Reader alone: no network read
	}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, s.size)), nil
}
