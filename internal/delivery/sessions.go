package delivery

import "github.com/heraldpush/herald/internal/session"

// Transport names the stream's transport (session.Described): mqtt, ws,
// sse or mozpush.
func (st *Stream) Transport() string { return st.send.Transport() }

// Transport names a long-poll (session.Described).
func (w *waiter) Transport() string { return "poll" }

// Interface guards.
var (
	_ session.Described = (*Stream)(nil)
	_ session.Described = (*waiter)(nil)
)
