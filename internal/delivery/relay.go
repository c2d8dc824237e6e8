package delivery

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
	"github.com/heraldpush/herald/internal/store"
)

// Relays is what delivery needs of the apps' vendor channels
// (relay.Channels).
type Relays interface {
	// Sender returns app's Sender for kind: relay.ErrNoChannel when the app
	// has none, an error wrapping relay.ErrCredentials when its
	// credentials are known bad.
	Sender(ctx context.Context, app string, kind push.ChannelKind) (relay.Sender, error)
	// Routing returns app's channel policy.
	Routing(ctx context.Context, app string) (relay.Routing, error)
	// Broken records that the vendor refused app's credentials for kind.
	Broken(app string, kind push.ChannelKind, reason string)
}

// RelayOptions configure the relay queue.
type RelayOptions struct {
	Retry relay.Policy
	// SendTimeout bounds one send to a vendor; 30 s when zero.
	SendTimeout time.Duration
	// PerChannel bounds the sends in flight to one app's vendor channel,
	// so that a slow vendor holds only its own sends; 256 when zero.
	PerChannel int
	// InFlight bounds the sends in flight in all; 4096 when zero.
	InFlight int
	// Poll is the longest the queue goes unread: jobs this node writes
	// wake it at once, but jobs written by other nodes sharing the store
	// are found when it next looks. 1 minute when zero.
	Poll time.Duration
}

// relayer runs the durable relay queue: it reads due jobs from the store,
// sends each through its app's vendor channel, and records the answer, a
// retry or the channel's deactivation. Jobs stay in the store until
// answered, so a crash sends again what was not answered (at least once).
type relayer struct {
	relays Relays
	opts   RelayOptions
	wake   chan struct{} // capacity 1

	mu       sync.Mutex
	inflight map[jobKey]bool      // guarded by mu
	lanes    map[laneKey]int      // sends in flight per app channel; guarded by mu
	held     map[jobKey]time.Time // jobs whose store write failed, not taken again before; guarded by mu
	// more is set when the last look at the queue left due jobs behind
	// (a bound was reached): an ending send then looks again. Otherwise
	// it does not, so that draining a large batch does not re-read the
	// jobs still in flight once per send. Guarded by mu.
	more bool

	// ended holds when each job's send ended lately (its outcome or retry
	// written). A look at the queue that began before that may still list
	// the job as due, and must not send it again. Guarded by mu.
	ended  map[jobKey]time.Time
	pruned time.Time // when ended was last pruned; guarded by mu

	// Messages and devices read lately (recentCache): a recall, or a
	// channel changed or deactivated elsewhere, is seen up to
	// relayCacheFor late. A send to a token rotated meanwhile is answered
	// gone by its vendor, and DeactivateChannel then leaves the device's
	// new token alone.
	msgs *recentCache[uint64, push.Message] // by Seq
	devs *recentCache[string, push.Device]  // by registration ID

	// ends takes the ends of sends to writeEnds, which writes them to the
	// store in batches.
	ends chan relayEnd
}

// relayEnd is a job's end on its way to the store, and where its writer
// answers.
type relayEnd struct {
	end     store.RelayEnd
	written chan error
}

// maxEnds bounds the job ends one store write takes.
const maxEnds = 512

// relayCacheFor is how long the relay uses a message or device it read.
// A fan-out or a push to a thousand devices makes a thousand jobs of one
// message; reading it once a second rather than once a job is most of the
// relay's cost saved.
const relayCacheFor = time.Second

// message returns the message of j, from the cache when it is fresh.
func (s *Service) message(ctx context.Context, j store.RelayJob) (push.Message, error) {
	now := s.now()
	if m, ok := s.relay.msgs.get(j.Seq, now); ok {
		return m, nil
	}
	m, _, err := s.store.Message(ctx, j.App, j.MsgID)
	if err == nil {
		s.relay.msgs.put(j.Seq, m, now)
	}
	return m, err
}

// device returns device id, from the cache when it is fresh.
func (s *Service) device(ctx context.Context, id string) (push.Device, error) {
	now := s.now()
	if d, ok := s.relay.devs.get(id, now); ok {
		return d, nil
	}
	d, err := s.store.Device(ctx, id)
	if err == nil {
		s.relay.devs.put(id, d, now)
	}
	return d, err
}

type jobKey struct {
	seq    uint64
	device string
}

type laneKey struct {
	app  string
	kind push.ChannelKind
}

// EnableRelay turns on relaying to vendor channels through r. Call it
// before Run.
func (s *Service) EnableRelay(r Relays, o RelayOptions) {
	if o.SendTimeout <= 0 {
		o.SendTimeout = 30 * time.Second
	}
	if o.PerChannel <= 0 {
		o.PerChannel = 256
	}
	if o.InFlight <= 0 {
		o.InFlight = 4096
	}
	if o.Poll <= 0 {
		o.Poll = time.Minute
	}
	s.relay = &relayer{relays: r, opts: o, wake: make(chan struct{}, 1),
		inflight: map[jobKey]bool{}, lanes: map[laneKey]int{}, held: map[jobKey]time.Time{},
		ended: map[jobKey]time.Time{},
		ends:  make(chan relayEnd, maxEnds),
		msgs:  newRecentCache[uint64, push.Message](relayCacheFor, 8192),
		devs:  newRecentCache[string, push.Device](relayCacheFor, 16384)}
}

func (r *relayer) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// routing is the channel policy of m: its own, or its app's.
func (s *Service) routing(ctx context.Context, m *push.Message) (push.ChannelPolicy, time.Duration, error) {
	rt, err := s.relay.relays.Routing(ctx, m.App)
	if err != nil {
		return "", 0, err
	}
	policy, wait := rt.Channel, time.Duration(rt.RelayAfter)*time.Second
	if m.Channel != "" {
		policy = m.Channel
	}
	if m.RelayAfter != nil {
		wait = *m.RelayAfter
	}
	return policy, wait, nil
}

// relayJobs returns the relay jobs of a message about to be accepted for
// targets, and the targets that keep an inbox entry (vendor_only takes the
// devices it relays to out of it).
func (s *Service) relayJobs(ctx context.Context, m *push.Message, targets []push.Device) ([]store.RelayJob, []string, error) {
	ids := make([]string, 0, len(targets))
	if s.relay == nil {
		for _, d := range targets {
			ids = append(ids, d.ID)
		}
		return nil, ids, nil
	}
	policy, wait, err := s.routing(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	var jobs []store.RelayJob
	for _, d := range targets {
		if policy == push.OwnOnly || !d.Channel.Vendor() || !s.hasChannel(ctx, m.App, d.Channel.Kind) {
			ids = append(ids, d.ID)
			continue
		}
		jobs = append(jobs, store.RelayJob{Device: d.ID, Channel: d.Channel.Kind, Due: m.SendAt})
		if policy != push.VendorOnly {
			ids = append(ids, d.ID)
		}
	}
	if policy == push.OwnFirst {
		for i, online := range s.online(ctx, jobs) {
			if online {
				jobs[i].Due = jobs[i].Due.Add(wait)
			}
		}
	}
	if m.Fanout() && policy != push.OwnOnly && s.anyChannel(ctx, m.App) {
		w := time.Duration(-1)
		if m.RelayAfter != nil {
			w = *m.RelayAfter
		}
		jobs = append(jobs, store.RelayJob{Due: m.SendAt, Wait: w})
	}
	return jobs, ids, nil
}

// online reports, for each job's device, whether it has a live session on
// any node (in a cluster, asked of the other nodes together).
func (s *Service) online(ctx context.Context, jobs []store.RelayJob) []bool {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.Device
	}
	return s.router.Online(ctx, ids)
}

// hasChannel reports whether app has settings for kind (working or not:
// a job for broken credentials is reported failed rather than forgotten).
func (s *Service) hasChannel(ctx context.Context, app string, kind push.ChannelKind) bool {
	_, err := s.relay.relays.Sender(ctx, app, kind)
	return !errors.Is(err, relay.ErrNoChannel)
}

func (s *Service) anyChannel(ctx context.Context, app string) bool {
	for _, k := range relay.Kinds {
		if s.hasChannel(ctx, app, k) {
			return true
		}
	}
	return false
}

// leadRelay runs the relay queue whenever this node holds the store's
// "relay" lease, so that nodes sharing a store do not send each job once
// each; another node takes over when the holder dies or loses the store.
func (s *Service) leadRelay(ctx context.Context) { s.lead(ctx, "relay", s.runRelay) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// runRelay sends due relay jobs until ctx ends.
func (s *Service) runRelay(ctx context.Context) {
	r := s.relay
	// The ends' writer and the workers outlive ctx until the last send
	// ended: a send that got its answer has it written.
	wctx, stop := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		s.writeEnds(wctx)
		close(ended)
	}()
	sends := newWorkers(wctx, 10*time.Second)
	defer func() {
		sends.Wait()
		stop()
		<-ended
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.wake:
		}
		next, err := s.takeDue(ctx, sends)
		wait := r.opts.Poll
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.log.Error("relay queue: reading due jobs failed", "err", err)
			}
			wait = 5 * time.Second
		case !next.IsZero():
			wait = max(next.Sub(s.now()), 0)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(min(wait, r.opts.Poll))
	}
}

// takeDue starts the sends of the jobs due now that are not in flight, as
// far as the bounds allow, and returns when to look again.
func (s *Service) takeDue(ctx context.Context, sends *workers) (time.Time, error) {
	r := s.relay
	now := s.now()
	readAt := time.Now() // the wall clock's monotonic reading, not s.now
	r.mu.Lock()
	if readAt.Sub(r.pruned) > time.Second {
		// No look at the queue takes anywhere near this long.
		for k, at := range r.ended {
			if readAt.Sub(at) > 30*time.Second {
				delete(r.ended, k)
			}
		}
		r.pruned = readAt
	}
	n := len(r.inflight) + len(r.held)
	for k, until := range r.held {
		if !now.Before(until) {
			delete(r.held, k)
		}
	}
	r.mu.Unlock()
	jobs, next, err := s.store.RelayDue(ctx, now, n+256)
	if err != nil {
		return time.Time{}, err
	}
	full := false
	r.mu.Lock()
	for _, j := range jobs {
		k := jobKey{j.Seq, j.Device}
		if r.inflight[k] || !r.held[k].IsZero() || r.ended[k].After(readAt) {
			continue
		}
		lane := laneKey{j.App, j.Channel}
		if len(r.inflight) >= r.opts.InFlight || (j.Device != "" && r.lanes[lane] >= r.opts.PerChannel) {
			full = true
			continue
		}
		r.inflight[k] = true
		r.lanes[lane]++
		sends.Go(func() {
			retried := s.relayOne(ctx, j)
			r.mu.Lock()
			delete(r.inflight, k)
			r.ended[k] = time.Now()
			if r.lanes[lane]--; r.lanes[lane] == 0 {
				delete(r.lanes, lane)
			}
			// A retry has a new due time the loop's timer does not know.
			// Otherwise look again only once half a lane's worth of sends
			// has ended, so that a queue is read once per many sends.
			again := retried || r.more && r.lanes[lane] <= r.opts.PerChannel/2 && len(r.inflight) <= r.opts.InFlight-r.opts.PerChannel/2
			r.mu.Unlock()
			if again {
				r.poke()
			}
		})
	}
	r.more = full || len(jobs) == n+256
	r.mu.Unlock()
	if full || len(jobs) == n+256 {
		// More are due than were taken: look again as soon as a send ends
		// (it pokes), or in a second.
		return now.Add(time.Second), nil
	}
	return next, nil
}

// finish records how job j ended, in the next batch of ends written.
func (s *Service) finish(j store.RelayJob, out store.RelayOutcome) error {
	e := relayEnd{end: store.RelayEnd{Job: j, Outcome: out}, written: make(chan error, 1)}
	s.relay.ends <- e
	err := <-e.written
	if err == nil && out.Result != "" {
		s.metrics.Relayed(string(out.Channel), out.Result, out.Reason)
	}
	return err
}

// writeEnds writes the ends that finish hands it until ctx ends, each
// write taking every end queued meanwhile: thousands of sends a second
// cost a few store writes rather than one each. ctx ends only once no
// send is left to finish.
func (s *Service) writeEnds(ctx context.Context) {
	batch := make([]relayEnd, 0, maxEnds)
	ends := make([]store.RelayEnd, 0, maxEnds)
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.relay.ends:
			batch = append(batch[:0], e)
		}
	collect:
		for len(batch) < maxEnds {
			select {
			case e := <-s.relay.ends:
				batch = append(batch, e)
			default:
				break collect
			}
		}
		ends = ends[:0]
		for _, e := range batch {
			ends = append(ends, e.end)
		}
		err := s.store.RelayDone(ctx, ends...)
		for _, e := range batch {
			e.written <- err
		}
	}
}

// hold keeps job out of the queue for a while after a store write about
// it failed, so that a store that is down is not hammered.
func (r *relayer) hold(j store.RelayJob, until time.Time) {
	r.mu.Lock()
	r.held[jobKey{j.Seq, j.Device}] = until
	r.mu.Unlock()
}

// relayOne handles one due job to its end or its next retry, and reports
// whether the job stays queued for later.
func (s *Service) relayOne(ctx context.Context, j store.RelayJob) bool {
	if ctx.Err() != nil {
		return false
	}
	err := s.relayJob(ctx, j)
	if errors.Is(err, errRetried) {
		return true
	}
	if err != nil && ctx.Err() == nil {
		s.log.Error("relay job failed; it stays queued", "msg", j.MsgID, "device", j.Device, "err", err)
		s.relay.hold(j, s.now().Add(5*time.Second))
		return true
	}
	return false
}

// errRetried is relayJob's answer for a job it rescheduled for a retry.
var errRetried = errors.New("relay: rescheduled")

// relayJob sends j, or expands it when it is a fan-out job. It returns
// errRetried when it rescheduled j; another error means the store could
// not be read or written, and the job stays queued.
func (s *Service) relayJob(ctx context.Context, j store.RelayJob) error {
	m, err := s.message(ctx, j)
	if errors.Is(err, store.ErrNotFound) {
		return s.finish(j, store.RelayOutcome{}) // purged
	}
	if err != nil {
		return err
	}
	now := s.now()
	// A message with a TTL of 0 is for "now or never": it expired the
	// moment it was accepted, and still gets its one send, promptly
	// (APNs takes it with apns-expiration 0), never a retry.
	nowOrNever := m.TTL == 0 && j.Attempt == 0 && !m.Recalled && !m.Replaced && m.Due(now) && now.Sub(j.Due) < time.Minute
	if !m.Live(now) && !nowOrNever {
		reason := "expired"
		switch {
		case m.Recalled:
			reason = "recalled"
		case m.Replaced:
			reason = "replaced"
		}
		return s.finish(j, store.RelayOutcome{Channel: j.Channel, Result: store.RelayFailed, Reason: reason})
	}
	if j.Device == "" {
		return s.expand(ctx, j, &m)
	}
	d, err := s.device(ctx, j.Device)
	if errors.Is(err, store.ErrNotFound) {
		return s.finish(j, store.RelayOutcome{Channel: j.Channel, Result: store.RelayFailed, Reason: "device_deleted"})
	}
	if err != nil {
		return err
	}
	if !d.Channel.Vendor() {
		reason := "no_channel"
		if d.Channel.Inactive != "" {
			reason = "channel_inactive"
		}
		return s.finish(j, store.RelayOutcome{Channel: j.Channel, Result: store.RelayFailed, Reason: reason})
	}
	policy, _, err := s.routing(ctx, &m)
	if err != nil {
		return err
	}
	if policy == push.OwnFirst {
		waits, err := s.store.Waits(ctx, &d, &m)
		if err != nil {
			return err
		}
		if !waits {
			return s.finish(j, store.RelayOutcome{Channel: d.Channel.Kind, Result: store.RelayOwn})
		}
	}
	kind := d.Channel.Kind
	sender, err := s.relay.relays.Sender(ctx, m.App, kind)
	switch {
	case errors.Is(err, relay.ErrNoChannel):
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayFailed, Reason: "no_credentials"})
	case errors.Is(err, relay.ErrCredentials):
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayFailed, Reason: "credentials"})
	case err != nil:
		return err
	}
	// A vendor keeps a message for its TTL from when it gets it: a retry
	// hands it what is left, so that it never outlives its expiry.
	send := m
	if left := m.ExpiresAt.Sub(s.now()); m.TTL > 0 && left < m.TTL {
		send.TTL = max(left.Truncate(time.Second), 0)
	}
	sendCtx, cancel := context.WithTimeout(ctx, s.relay.opts.SendTimeout)
	err = sender.Send(sendCtx, relay.Target{Token: d.Channel.Token, WebPush: d.Channel.WebPush, Platform: d.Platform, Since: d.Channel.Since}, &send)
	cancel()
	if ctx.Err() != nil {
		return nil // stopping: the job stays queued and is sent after the restart
	}
	reason := vendorReason(err)
	switch {
	case err == nil:
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelaySent})
	case errors.Is(err, relay.ErrGone):
		if _, err := s.store.DeactivateChannel(ctx, d.ID, d.Channel, reason, s.now()); err != nil {
			return err
		}
		s.relay.devs.forget(d.ID) // its channel changed here: seen at once
		s.log.Info("vendor channel deactivated", "device", d.ID, "channel", kind, "reason", reason)
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayGone, Reason: reason})
	case errors.Is(err, relay.ErrCredentials):
		s.relay.relays.Broken(m.App, kind, reason)
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayFailed, Reason: "credentials"})
	case errors.Is(err, relay.ErrRejected):
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayFailed, Reason: reason})
	}
	wait, again := s.relay.opts.Retry.Next(j.Attempt+1, err, s.now(), m.ExpiresAt)
	if !again {
		if j.Attempt+1 >= s.relay.opts.Retry.MaxAttempts() {
			reason = "retries_exhausted: " + reason
		} else {
			reason = "expired: " + reason // the next try would come after the message's TTL
		}
		return s.finish(j, store.RelayOutcome{Channel: kind, Result: store.RelayFailed, Reason: reason})
	}
	j.Attempt++
	j.Channel = kind
	if err := s.store.RelayRetry(ctx, j, s.now().Add(wait)); err != nil {
		return err
	}
	return errRetried
}

// expandChunk is how many device jobs one write of a fan-out expansion adds.
const expandChunk = 1000

// expand replaces fan-out job j of m by a job for each matching device on
// a vendor channel the app has settings for.
func (s *Service) expand(ctx context.Context, j store.RelayJob, m *push.Message) error {
	policy, wait, err := s.routing(ctx, m)
	if err != nil {
		return err
	}
	if j.Wait >= 0 {
		wait = j.Wait
	}
	if policy == push.OwnOnly {
		return s.store.RelayExpand(ctx, j, nil, true)
	}
	has := map[push.ChannelKind]bool{}
	for _, k := range relay.Kinds {
		has[k] = s.hasChannel(ctx, m.App, k)
	}
	var jobs []store.RelayJob
	now := s.now()
	err = s.store.EachDevice(ctx, m.App, func(d *push.Device) bool {
		if !d.Channel.Vendor() || !has[d.Channel.Kind] || !m.For(d) {
			return true
		}
		jobs = append(jobs, store.RelayJob{Device: d.ID, Channel: d.Channel.Kind, Due: now})
		return true
	})
	if err != nil {
		return err
	}
	if policy == push.OwnFirst {
		// Asked after the store's walk, not during it: in a cluster each
		// answer may be a round trip to the other nodes.
		for i, online := range s.online(ctx, jobs) {
			if online {
				jobs[i].Due = now.Add(wait)
			}
		}
	}
	for len(jobs) > expandChunk {
		if err := s.store.RelayExpand(ctx, j, jobs[:expandChunk], false); err != nil {
			return err
		}
		jobs = jobs[expandChunk:]
	}
	if err := s.store.RelayExpand(ctx, j, jobs, true); err != nil {
		return err
	}
	s.relay.poke()
	return nil
}

// vendorReason is the short reason a sender's error gives: the text after
// the relay sentinel's own ("APNs 410 Unregistered"), at most 80 bytes.
func vendorReason(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, sentinel := range []error{relay.ErrGone, relay.ErrRejected, relay.ErrCredentials} {
		if _, after, ok := strings.Cut(msg, sentinel.Error()+": "); ok {
			msg = after
			break
		}
	}
	msg = strings.TrimPrefix(msg, "relay: ")
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}

// ChannelReport is a message's outcome on one channel.
type ChannelReport struct {
	Delivered int            `json:"delivered,omitempty"` // own: acknowledgements
	Sent      int            `json:"sent"`                // vendor accepted
	Failed    map[string]int `json:"failed,omitempty"`    // by reason
	Gone      int            `json:"gone"`                // the token was gone; the channel deactivated
	Skipped   int            `json:"skipped,omitempty"`   // not relayed: acknowledged on the own connection first
	Waiting   int            `json:"waiting"`             // waiting for a retry
}

func channelReports(c store.Counters) map[string]ChannelReport {
	out := map[string]ChannelReport{"own": {Delivered: c.Delivered}}
	for kind, rc := range c.Relay {
		if kind == "" {
			continue
		}
		out[string(kind)] = ChannelReport{Sent: rc.Sent, Failed: rc.Failed, Gone: rc.Gone, Skipped: rc.Own, Waiting: rc.Waiting}
	}
	return out
}
