// Package router is the one owner of what happens to live sessions because
// of something that happened elsewhere: a push accepted, an ack on another
// connection, a device changed, deleted or connected again. The core never
// reaches into the hub itself, so that each effect works the same on one
// node (Local) and across nodes (router/nats, which adds the bus between
// them).
package router

import (
	"context"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/session"
)

// Router routes to live sessions wherever they are. Its methods must not
// fail a push or an ack for a session they cannot reach: every message is
// durable before it is routed, and a session that misses an effect reads
// its inbox (Attach, Recheck).
type Router interface {
	// Attach registers s, a live session of d on this node. Once it
	// returns, whatever is routed to d on any node reaches s. An exclusive
	// session (MQTT: one per client ID) closes the device's other
	// exclusive sessions, here and on every node (session.ErrTakenOver).
	Attach(ctx context.Context, d *push.Device, s session.Session, exclusive bool) error
	// Detach unregisters s.
	Detach(d *push.Device, s session.Session)
	// Route offers m to the live sessions of targets and, for a fan-out
	// message, of every device it matches. It must not block on a slow
	// session.
	Route(m *push.Message, targets []string)
	// Acked tells device's live sessions that ids were acknowledged, so
	// that their windows refill. It returns an error of this node's
	// sessions (a failed inbox read); other nodes' are theirs to log.
	Acked(ctx context.Context, device string, ids []string) error
	// Changed gives d's live sessions its new tags and platform, for
	// fan-out matching.
	Changed(d *push.Device)
	// Deleted closes the live sessions of device id
	// (session.ErrDeviceDeleted).
	Deleted(id string)
	// Online reports, for each of ids, whether the device has a live
	// session on any node.
	Online(ctx context.Context, ids []string) []bool
}

// Local routes within this process.
type Local struct {
	Hub *session.Hub // never nil
}

// Attach implements Router.
func (l Local) Attach(_ context.Context, d *push.Device, s session.Session, exclusive bool) error {
	l.Hub.Add(d, s, exclusive)
	if exclusive {
		l.Hub.TakeOver(d.ID, s, time.Now().UnixNano())
	}
	return nil
}

// Detach implements Router.
func (l Local) Detach(d *push.Device, s session.Session) { l.Hub.Remove(d, s) }

// Route offers m to this node's sessions.
func (l Local) Route(m *push.Message, targets []string) { l.Hub.Deliver(m, targets) }

// Acked implements Router.
func (l Local) Acked(ctx context.Context, device string, ids []string) error {
	return l.Hub.Acked(ctx, device, ids)
}

// Changed implements Router.
func (l Local) Changed(d *push.Device) { l.Hub.Refresh(d) }

// Deleted implements Router.
func (l Local) Deleted(id string) { l.Hub.CloseDevice(id, session.ErrDeviceDeleted) }

// Online implements Router.
func (l Local) Online(_ context.Context, ids []string) []bool {
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = l.Hub.Online(id)
	}
	return out
}

// Interface guards.
var _ Router = Local{}
