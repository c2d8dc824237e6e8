// Package router carries an accepted message to the node that holds its
// devices' sessions. The single-node Local router hands it to this node's
// hub; router/nats (cluster mode) will publish it to every node.
package router

import (
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/session"
)

// Router routes accepted messages to live sessions wherever they are.
type Router interface {
	// Route offers m to the live sessions of targets and, for a fan-out
	// message, of every device it matches. It must not block on a slow
	// session and must not fail the push: the message is already durable,
	// and a device that misses the offer reads it from its inbox.
	Route(m *push.Message, targets []string)
}

// Local routes within this process.
type Local struct {
	Hub *session.Hub // never nil
}

// Route offers m to this node's sessions.
func (l Local) Route(m *push.Message, targets []string) { l.Hub.Deliver(m, targets) }

// Interface guards.
var _ Router = Local{}
