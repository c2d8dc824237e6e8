package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/heraldpush/herald/internal/config"

	"github.com/heraldpush/herald/internal/router"
	natsrouter "github.com/heraldpush/herald/internal/router/nats"
)

// buildRouter is the router of this node: this process's hub alone, or,
// with --nats, the hub plus the bus to the cluster's other nodes.
func (s *Server) buildRouter() (router.Router, error) {
	if s.cfg.NATSURL == "" {
		return router.Local{Hub: s.hub}, nil
	}
	name := s.cfg.NodeName
	if name == "" {
		name = defaultNodeName()
	}
	s.info.Node = name
	bus, err := natsrouter.Connect(s.cfg.NATSURL, s.hub, natsrouter.Options{
		Prefix: s.cfg.NATSPrefix, Node: name, Recheck: s.cfg.Recheck, Log: s.log.With("node", name), Metrics: s.metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster mode: %w (is NATS running at --nats %s?)", err, s.cfg.NATSURL)
	}
	s.bus = bus
	return bus, nil
}

func (s *Server) closeBus() {
	if s.bus != nil {
		s.bus.Close()
	}
}

// defaultNodeName is the host name and a random suffix, so that two
// nodes on one host (or a restarted node) are told apart in logs.
func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "herald"
	}
	b := make([]byte, 3)
	rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// sharedPoll is how often the node that holds a lease (the relay queue,
// scheduled messages) looks at a store other nodes share for the work they
// wrote: a second, with PostgreSQL; zero with the embedded store, which
// only this node writes.
func sharedPoll(cfg config.Config) time.Duration {
	if cfg.PostgresURL != "" {
		return time.Second
	}
	return 0
}
