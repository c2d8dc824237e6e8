package server

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// withDeadlines bounds how long every request may hold its connection:
// its body must arrive within body and its answer be taken within write,
// whatever the route, so that a client that trickles a body or never reads
// an answer is cut off even on a route that answers 401 before it reads
// anything (net/http then still reads the unread body to reuse the
// connection, under the same deadline). Routes that wait on purpose extend
// their own deadlines (the long-poll by its wait); routes that take the
// connection over (WebSocket, SSE, MQTT over WebSocket, mozpush) hijack it,
// and a hijacked connection leaves here with no deadline: its transport
// keeps its own (pings, write timeouts).
func withDeadlines(next http.Handler, body, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		rc := http.NewResponseController(w)
		// Errors mean the writer cannot take deadlines (a test
		// recorder); there is nothing to bound then.
		rc.SetReadDeadline(now.Add(body))
		rc.SetWriteDeadline(now.Add(write))
		next.ServeHTTP(hijackClears{w}, r)
	})
}

// hijackClears passes a ResponseWriter through, clearing the connection's
// deadlines when a handler hijacks it.
type hijackClears struct{ http.ResponseWriter }

// Unwrap lets http.ResponseController reach the writer's other methods
// (Flush, SetReadDeadline, ...).
func (h hijackClears) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it directly.
func (h hijackClears) Flush() { http.NewResponseController(h.ResponseWriter).Flush() }

// Hijack implements http.Hijacker.
func (h hijackClears) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	return c, brw, nil
}
