package nats

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// deviceConn is the node's second connection to NATS, for the per-device
// subjects: it subscribes while the node holds a session of the device,
// publishes what concerns one device, and hands on what other nodes
// publish. nats.go would keep a Subscription of some 380 bytes per device
// (docs/decisions/0003), a fifth of an idle connection's memory. Here a
// subscription's ID is the registration ID itself (NATS takes any token as
// one), so subscribing and unsubscribing keep nothing per device, and a
// message names its device in its subject: the hub, which holds the
// node's sessions, is the only book-keeping.
//
// It speaks the subset of the NATS client protocol this needs (INFO,
// CONNECT, PING/PONG, SUB, UNSUB, PUB, MSG, +OK/-ERR), reconnects with
// back-off, and after each reconnection subscribes again for every device
// the hub holds. Credentials and TLS come from the URL, as for nats.go:
// nats://user:pass@host:port, nats://token@host:port, tls://host:port.
type deviceConn struct {
	servers []*url.URL
	name    string
	prefix  string // "<prefix>.d."
	log     *slog.Logger
	// devices lists the registration IDs the hub holds, to subscribe
	// again after a reconnection; hold is held meanwhile, so that no
	// device attaches or detaches between the list and its subscriptions
	// (the router's lock of those steps).
	devices func() []string
	hold    sync.Locker
	// deliver takes each message other nodes published on a device
	// subject; it may block, which holds the connection's reader.
	deliver func(subject, reply string, data []byte)
	// reconnected runs after a reconnection's subscriptions are in place.
	reconnected func()

	mu      sync.Mutex
	w       *bufio.Writer // nil while disconnected; guarded by mu
	nc      net.Conn      // guarded by mu
	pongs   []chan error  // waiting for a PONG, in PING order; guarded by mu
	closed  bool          // guarded by mu
	maxData int           // the server's max_payload; guarded by mu

	down    chan struct{} // capacity 1: the current connection broke
	pending chan struct{} // capacity 1: buffer left bytes for the flusher
	done    chan struct{}
	wg      sync.WaitGroup
}

// errBusDown is what a flush or publish meets while the connection is down.
var errBusDown = errors.New("nats: device connection down")

func parseServers(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("nats: server URL %q: %w", s, err)
		}
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), "4222")
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("nats: no server URL")
	}
	return out, nil
}

// start connects once, so that a bad URL or credentials fail the node's
// start, and then keeps the connection up until close.
func (d *deviceConn) start(timeout time.Duration) error {
	d.done = make(chan struct{})
	d.down = make(chan struct{}, 1)
	d.pending = make(chan struct{}, 1)
	var err error
	for _, u := range d.servers {
		if err = d.dial(u, timeout); err == nil {
			d.wg.Go(d.run)
			d.wg.Go(d.flusher)
			return nil
		}
	}
	return err
}

func (d *deviceConn) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	close(d.done)
	if d.nc != nil {
		d.nc.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// connected reports whether the connection is up.
func (d *deviceConn) connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.w != nil
}

// serverInfo is the part of the server's INFO this connection uses.
type serverInfo struct {
	TLSRequired bool `json:"tls_required"`
	MaxPayload  int  `json:"max_payload"`
}

// dial opens a connection to u and completes the handshake; on success it
// is the current connection, with nothing subscribed yet.
func (d *deviceConn) dial(u *url.URL, timeout time.Duration) error {
	raw, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	raw.SetDeadline(time.Now().Add(timeout))
	var c net.Conn = raw
	r := bufio.NewReaderSize(c, 32<<10)
	line, err := readLine(r)
	if err != nil {
		raw.Close()
		return fmt.Errorf("nats: reading INFO: %w", err)
	}
	rest, ok := strings.CutPrefix(line, "INFO ")
	if !ok {
		raw.Close()
		return fmt.Errorf("nats: expected INFO, got %.40q", line)
	}
	var info serverInfo
	if err := json.Unmarshal([]byte(rest), &info); err != nil {
		raw.Close()
		return fmt.Errorf("nats: INFO: %w", err)
	}
	useTLS := u.Scheme == "tls" || info.TLSRequired
	if useTLS {
		tc := tls.Client(raw, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return fmt.Errorf("nats: TLS: %w", err)
		}
		c = tc
		r = bufio.NewReaderSize(c, 32<<10)
	}
	connect := map[string]any{
		"verbose": false, "pedantic": false, "tls_required": useTLS, "name": d.name,
		"lang": "go", "version": "herald", "protocol": 1, "echo": false,
	}
	if u.User != nil {
		if pass, ok := u.User.Password(); ok {
			connect["user"], connect["pass"] = u.User.Username(), pass
		} else {
			connect["auth_token"] = u.User.Username()
		}
	}
	cj, _ := json.Marshal(connect)
	w := bufio.NewWriterSize(c, 32<<10)
	w.WriteString("CONNECT ")
	w.Write(cj)
	w.WriteString("\r\nPING\r\n")
	if err := w.Flush(); err != nil {
		c.Close()
		return fmt.Errorf("nats: %w", err)
	}
	for {
		line, err := readLine(r)
		if err != nil {
			c.Close()
			return fmt.Errorf("nats: handshake: %w", err)
		}
		switch {
		case line == "PONG":
		case strings.HasPrefix(line, "-ERR"):
			c.Close()
			return fmt.Errorf("nats: the server refused the connection: %s", strings.TrimSpace(strings.TrimPrefix(line, "-ERR")))
		default:
			continue // +OK, an updated INFO
		}
		break
	}
	c.SetDeadline(time.Time{})
	d.mu.Lock()
	d.nc, d.w, d.maxData = c, w, info.MaxPayload
	d.mu.Unlock()
	d.wg.Go(func() { d.read(c, r) })
	return nil
}

// run keeps the connection up: each time it breaks it dials again, with
// back-off, subscribes again for the hub's devices and calls reconnected.
func (d *deviceConn) run() {
	for {
		select {
		case <-d.done:
			return
		case <-d.down:
		}
		wait := 100 * time.Millisecond
		for attempt := 0; ; attempt++ {
			select {
			case <-d.done:
				return
			case <-time.After(wait):
			}
			u := d.servers[attempt%len(d.servers)]
			if err := d.dial(u, 5*time.Second); err != nil {
				if attempt%len(d.servers) == len(d.servers)-1 {
					wait = min(2*wait, 2*time.Second)
				}
				d.log.Debug("bus: device connection: dialling", "server", u.Redacted(), "err", err)
				continue
			}
			err := d.resubscribe()
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = d.flush(ctx) // the subscriptions are in place
				cancel()
			}
			if err != nil {
				// The reader drops the connection and signals down.
				d.log.Warn("bus: subscribing again after a reconnection", "err", err)
				d.mu.Lock()
				if d.nc != nil {
					d.nc.Close()
				}
				d.mu.Unlock()
				break
			}
			d.log.Info("bus: device connection back", "server", u.Redacted())
			d.reconnected()
			break
		}
	}
}

// resubscribe subscribes for every device the hub holds and waits for the
// server to have taken them.
func (d *deviceConn) resubscribe() error {
	n := 0
	var err error
	d.hold.Lock()
	defer d.hold.Unlock()
	ids := d.devices() // before mu: the hub's own lock is taken inside
	d.mu.Lock()
	w := d.w
	if w == nil {
		d.mu.Unlock()
		return errBusDown
	}
	for _, id := range ids {
		if subjectSafe(id) {
			d.writeSub(w, id)
			n++
		}
	}
	err = w.Flush()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.log.Info("bus: device subscriptions renewed", "devices", n)
	return nil
}

// drop forgets nc as the current connection, failing what waits on it.
func (d *deviceConn) drop(nc net.Conn, err error) {
	d.mu.Lock()
	current := d.nc == nc
	if current {
		d.nc, d.w = nil, nil
		for _, p := range d.pongs {
			p <- errBusDown
		}
		d.pongs = nil
	}
	closed := d.closed
	d.mu.Unlock()
	nc.Close()
	if current && !closed {
		d.log.Warn("bus: device connection lost; reconnecting", "err", err)
		select {
		case d.down <- struct{}{}:
		default:
		}
	}
}

// read handles what the server sends on nc until it breaks.
func (d *deviceConn) read(nc net.Conn, r *bufio.Reader) {
	for {
		line, err := readLine(r)
		if err != nil {
			d.drop(nc, err)
			return
		}
		switch {
		case strings.HasPrefix(line, "MSG "):
			subject, reply, size, err := parseMsg(line[4:])
			if err != nil {
				d.drop(nc, err)
				return
			}
			data := make([]byte, size+2)
			if _, err := io.ReadFull(r, data); err != nil {
				d.drop(nc, err)
				return
			}
			d.deliver(subject, reply, data[:size])
		case line == "PING":
			d.buffer(func(w *bufio.Writer) { w.WriteString("PONG\r\n") })
		case line == "PONG":
			d.mu.Lock()
			if len(d.pongs) > 0 {
				d.pongs[0] <- nil
				d.pongs = d.pongs[1:]
			}
			d.mu.Unlock()
		case strings.HasPrefix(line, "-ERR"):
			d.log.Warn("bus: the server says", "err", strings.TrimSpace(strings.TrimPrefix(line, "-ERR")))
		}
	}
}

// parseMsg reads "<subject> <sid> [reply] <size>".
func parseMsg(args string) (subject, reply string, size int, err error) {
	f := strings.Fields(args)
	if len(f) != 3 && len(f) != 4 {
		return "", "", 0, fmt.Errorf("nats: bad MSG line %.80q", args)
	}
	size, err = strconv.Atoi(f[len(f)-1])
	if err != nil || size < 0 || size > 64<<20 {
		return "", "", 0, fmt.Errorf("nats: bad MSG size in %.80q", args)
	}
	if len(f) == 4 {
		reply = f[2]
	}
	return f[0], reply, size, nil
}

// readLine reads one protocol line without its CRLF.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("nats: protocol line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// buffer runs fn on the connection's writer without writing to the
// socket, and has the flusher write it out soon: many SUBs of a connect
// storm, or a push's publishes to each target, share one write. While
// disconnected it does nothing (a reconnection subscribes again and the
// sessions read their inboxes).
func (d *deviceConn) buffer(fn func(w *bufio.Writer)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil {
		return errBusDown
	}
	fn(d.w)
	select {
	case d.pending <- struct{}{}:
	default:
	}
	return nil
}

// flusher writes out what buffer left, until close.
func (d *deviceConn) flusher() {
	for {
		select {
		case <-d.done:
			return
		case <-d.pending:
		}
		d.mu.Lock()
		if d.w != nil {
			d.w.Flush() // an error is the reader's to see, as the connection breaks
		}
		d.mu.Unlock()
	}
}

// writeSub writes the subscription of device id: its ID is the device's.
func (d *deviceConn) writeSub(w *bufio.Writer, id string) {
	w.WriteString("SUB ")
	w.WriteString(d.prefix)
	w.WriteString(id)
	w.WriteByte(' ')
	w.WriteString(id)
	w.WriteString("\r\n")
}

func (d *deviceConn) subscribe(id string) error {
	return d.buffer(func(w *bufio.Writer) { d.writeSub(w, id) })
}

func (d *deviceConn) unsubscribe(id string) error {
	return d.buffer(func(w *bufio.Writer) {
		w.WriteString("UNSUB ")
		w.WriteString(id)
		w.WriteString("\r\n")
	})
}

// errTooLarge refuses a publish past the server's max_payload, which the
// server would answer by closing the connection.
var errTooLarge = errors.New("nats: message larger than the server's max_payload")

// publish sends data on subject.
func (d *deviceConn) publish(subject string, data []byte) error {
	d.mu.Lock()
	limit := d.maxData
	d.mu.Unlock()
	if limit > 0 && len(data) > limit {
		return errTooLarge
	}
	return d.buffer(func(w *bufio.Writer) {
		w.WriteString("PUB ")
		w.WriteString(subject)
		w.WriteByte(' ')
		w.WriteString(strconv.Itoa(len(data)))
		w.WriteString("\r\n")
		w.Write(data)
		w.WriteString("\r\n")
	})
}

// flush returns once the server has processed everything written before
// it: the server answers PINGs in order, after what came before them.
func (d *deviceConn) flush(ctx context.Context) error {
	ch := make(chan error, 1)
	d.mu.Lock()
	if d.w == nil {
		d.mu.Unlock()
		return errBusDown
	}
	d.w.WriteString("PING\r\n")
	if err := d.w.Flush(); err != nil {
		d.mu.Unlock()
		return err
	}
	d.pongs = append(d.pongs, ch)
	d.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
