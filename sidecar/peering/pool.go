// Package peering keeps a pool of ESTABLISHED IDSCP2 connections to one
// peer and multiplexes request/response exchanges over them.
//
// A request and its response are separate IDSCP2 data messages; the
// response names the request by a correlation id that the caller's
// Options.Correlate reads, so this package does not depend on the IDS
// message format.
//
// Connections are dialled lazily on the first RoundTrip and then kept at
// Options.Size by one background dialler per pool, which dials one
// connection at a time and backs off after failures, however many callers
// wait. Every pooled connection has one reader goroutine that hands each
// received message to the request it answers.
//
// Delivery guarantees: a request is sent only through idscp2.Conn.Send,
// which transmits only in ESTABLISHED; a request that never left is retried
// on another connection; one that may have reached the peer (sent and
// acknowledged, or sent and unacknowledged when the connection closed) is
// sent again only if Request.Idempotent, at most twice in all.
package peering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
)

// Defaults for Options.
const (
	DefaultSize        = 2
	DefaultMaxInFlight = 64
	DefaultMaxQueue    = 256
)

// maxSends is how many times a request that may have reached the peer is
// transmitted at most (idempotent requests only; others once).
const maxSends = 2

// ErrQueueFull is returned at once when MaxInFlight requests are running and
// MaxQueue more are waiting; the caller answers 503 with Retry-After.
var ErrQueueFull = errors.New("peering: too many requests waiting for the peer")

// ErrClosed is returned by RoundTrip once the pool is closed or draining,
// and to requests still waiting when Close is called.
var ErrClosed = errors.New("peering: pool closed")

// UnavailableError says why no connection to the peer could be had: Err is
// the last dial error (for example an *idscp2.CloseError with its cause),
// or the context's error if no dial had completed yet. The caller answers
// 502 naming it.
type UnavailableError struct {
	Peer string
	Err  error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("peering: no connection to peer %s: %v", e.Peer, e.Err)
}
func (e *UnavailableError) Unwrap() error { return e.Err }

// LostError says a request's connection closed before its response came.
// Sent reports whether the peer may have received it. It is returned only
// when the request could not be retried: it was not idempotent, or it had
// already been sent the maximum number of times.
type LostError struct {
	Peer string
	Sent bool
	Err  error // why the connection closed
}

func (e *LostError) Error() string {
	what := "connection closed before it was sent"
	if e.Sent {
		what = "connection closed after it was sent, before the response (the peer may have processed it)"
	}
	return fmt.Sprintf("peering: request to peer %s lost: %s: %v", e.Peer, what, e.Err)
}
func (e *LostError) Unwrap() error { return e.Err }

// Request is one message to send to the peer.
type Request struct {
	ID         string // unique id of the request message; the response carries it as correlation id
	Payload    []byte // the bytes to send (one IDSCP2 data message)
	Idempotent bool   // may be sent again after a connection failure that leaves its fate unknown
}

// Observer receives metrics events. All methods must be cheap and must not
// block; some are called with the pool's lock held.
type Observer interface {
	PoolSize(peer string, established int) // pooled (not yet closed) connections, after each change
	Queue(peer string, depth int)          // requests waiting for an in-flight slot, after each change
	Dial(peer string, err error)           // after each dial attempt
	Unmatched(peer string)                 // a received message matched no waiting request
}

// Options configure a Pool. Zero values mean the defaults.
type Options struct {
	Name      string                                          // peer name, for logs and errors
	Dial      func(ctx context.Context) (*idscp2.Conn, error) // returns an ESTABLISHED connection
	Correlate func(payload []byte) (id string, err error)     // reads the correlation id of a received message
	// Decode, if set, replaces Correlate: it also returns the parsed
	// message, which Exchange hands to the caller.
	Decode      func(payload []byte) (id string, decoded any, err error)
	Size        int          // connections kept established (default 2)
	MaxInFlight int          // concurrent requests across the pool (default 64)
	MaxQueue    int          // requests waiting for a slot (default 256, negative: none); beyond → ErrQueueFull
	Backoff     Backoff      // reconnect backoff
	Logger      *slog.Logger // nil: slog.Default()
	Observer    Observer     // optional metrics hooks (nil = none)
}

// Pool is a set of connections to one peer. It is safe for concurrent use.
type Pool struct {
	name     string
	dial     func(ctx context.Context) (*idscp2.Conn, error)
	decode   func([]byte) (string, any, error)
	size     int
	maxQueue int
	backoff  Backoff
	log      *slog.Logger
	obs      Observer

	sem     chan struct{} // in-flight slots
	closing chan struct{} // closed by Close
	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{} // tells the dialler a connection went away
	wg      sync.WaitGroup

	qmu    sync.Mutex
	queued int

	mu       sync.Mutex
	started  bool
	draining bool // no new requests
	closed   bool
	conns    []*pconn
	changed  chan struct{} // closed and replaced when conns or the dial state change
	dialing  bool
	failures int       // consecutive failed dials or useless connections
	nextDial time.Time // no dial before this
	lastErr  error     // the last dial error, nil once a dial succeeds
	active   int       // RoundTrips under way (queued included)
	idle     chan struct{}
}

// pconn is one pooled connection.
type pconn struct {
	c     *idscp2.Conn
	since time.Time

	inflight int // requests assigned to it; guarded by Pool.mu

	mu      sync.Mutex
	waiters map[string]chan *Reply
	dead    bool
	err     error         // why it closed, set before deadCh closes
	deadCh  chan struct{} // closed when the reader has stopped

	delivered bool // the reader received something; reader-owned
}

// New validates opts and returns a pool. No connection is made until the
// first RoundTrip.
func New(opts Options) (*Pool, error) {
	if opts.Dial == nil {
		return nil, errors.New("peering: Options.Dial is required")
	}
	if opts.Decode == nil && opts.Correlate != nil {
		correlate := opts.Correlate
		opts.Decode = func(b []byte) (string, any, error) {
			id, err := correlate(b)
			return id, nil, err
		}
	}
	if opts.Decode == nil {
		return nil, errors.New("peering: Options.Correlate or Options.Decode is required")
	}
	if opts.Size < 0 {
		return nil, fmt.Errorf("peering: Size %d is negative", opts.Size)
	}
	if opts.MaxInFlight < 0 {
		return nil, fmt.Errorf("peering: MaxInFlight %d is negative", opts.MaxInFlight)
	}
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	switch {
	case opts.MaxQueue == 0:
		opts.MaxQueue = DefaultMaxQueue
	case opts.MaxQueue < 0:
		opts.MaxQueue = 0
	}
	if opts.Name == "" {
		opts.Name = "peer"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	obs := opts.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		name:     opts.Name,
		dial:     opts.Dial,
		decode:   opts.Decode,
		size:     opts.Size,
		maxQueue: opts.MaxQueue,
		backoff:  opts.Backoff.withDefaults(),
		log:      opts.Logger.With("component", "peering", "peer", opts.Name),
		obs:      obs,
		sem:      make(chan struct{}, opts.MaxInFlight),
		closing:  make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		changed:  make(chan struct{}),
	}, nil
}

// Name returns the peer name.
func (p *Pool) Name() string { return p.name }

// RoundTrip sends req and returns the payload of the message whose
// correlation id is req.ID. It waits for an in-flight slot (ErrQueueFull if
// too many wait), for an established connection (*UnavailableError if none
// can be had within ctx), and for the response. If the connection closes
// underway, the request is retried on another one when that cannot
// duplicate it (see the package doc), otherwise *LostError. When ctx ends,
// ctx.Err() is returned; a response arriving later is dropped as unmatched.
func (p *Pool) RoundTrip(ctx context.Context, req *Request) ([]byte, error) {
	r, err := p.Exchange(ctx, req)
	if err != nil {
		return nil, err
	}
	return r.Payload, nil
}

// Reply is a response with what Options.Decode made of it.
type Reply struct {
	Payload []byte
	Decoded any // nil unless Options.Decode is set
}

// Exchange is RoundTrip returning the decoded response as well, so a caller
// that needs the parsed message does not parse it a second time.
func (p *Pool) Exchange(ctx context.Context, req *Request) (*Reply, error) {
	if req == nil || req.ID == "" {
		return nil, errors.New("peering: request without an ID")
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	if err := p.acquire(ctx); err != nil {
		return nil, err
	}
	defer func() { <-p.sem }()

	sends := 0 // transmissions the peer may have received
	for {
		pc, w, err := p.assign(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		resp, retry, err := p.exchange(ctx, pc, w, req, &sends)
		p.unassign(pc, req.ID, w)
		if !retry {
			return resp, err
		}
		p.log.Debug("retrying request on another connection", "id", req.ID, "sends", sends, "err", err)
	}
}

// exchange sends req on pc and waits for the response. retry reports that
// the request may be sent again on another connection.
func (p *Pool) exchange(ctx context.Context, pc *pconn, w chan *Reply, req *Request, sends *int) (resp *Reply, retry bool, err error) {
	err = pc.c.Send(ctx, req.Payload)
	var se *idscp2.SendError
	switch {
	case err == nil:
		*sends++
	case errors.As(err, &se): // it left; the peer may have it
		*sends++
		return p.lost(req, *sends, se)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil, false, err
	case errors.Is(err, idscp2.ErrClosed): // it never left
		if p.isClosing() {
			return nil, false, ErrClosed
		}
		return nil, true, err
	default: // e.g. idscp2.ErrMessageTooLarge
		return nil, false, err
	}

	select {
	case resp := <-w:
		return resp, false, nil
	case <-pc.deadCh:
		select { // the reader hands out every message before it stops
		case resp := <-w:
			return resp, false, nil
		default:
		}
		return p.lost(req, *sends, pc.err)
	case <-ctx.Done():
		if resp, ok := pc.withdraw(req.ID, w); ok {
			return resp, false, nil
		}
		return nil, false, ctx.Err()
	case <-p.closing:
		if resp, ok := pc.withdraw(req.ID, w); ok {
			return resp, false, nil
		}
		return nil, false, ErrClosed
	}
}

// lost decides what happens to a request whose connection closed after it
// was sent.
func (p *Pool) lost(req *Request, sends int, cause error) (*Reply, bool, error) {
	if p.isClosing() {
		return nil, false, ErrClosed
	}
	if req.Idempotent && sends < maxSends {
		return nil, true, cause
	}
	return nil, false, &LostError{Peer: p.name, Sent: true, Err: cause}
}

// withdraw removes the waiter; ok reports that the response had arrived.
func (pc *pconn) withdraw(id string, w chan *Reply) (*Reply, bool) {
	pc.mu.Lock()
	if pc.waiters[id] == w {
		delete(pc.waiters, id)
	}
	pc.mu.Unlock()
	select {
	case resp := <-w:
		return resp, true
	default:
		return nil, false
	}
}

func (p *Pool) isClosing() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// enter counts a RoundTrip for Drain, refusing it once draining.
func (p *Pool) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining || p.closed {
		return ErrClosed
	}
	p.active++
	return nil
}

func (p *Pool) leave() {
	p.mu.Lock()
	p.active--
	if p.active == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

// acquire takes an in-flight slot, queueing if MaxQueue allows.
func (p *Pool) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	default:
	}
	p.qmu.Lock()
	if p.queued >= p.maxQueue {
		p.qmu.Unlock()
		return ErrQueueFull
	}
	p.queued++
	p.obs.Queue(p.name, p.queued)
	p.qmu.Unlock()
	defer func() {
		p.qmu.Lock()
		p.queued--
		p.obs.Queue(p.name, p.queued)
		p.qmu.Unlock()
	}()
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closing:
		return ErrClosed
	}
}

// assign picks the established connection with the fewest requests and
// registers a waiter for id on it, waiting for a connection if there is
// none.
func (p *Pool) assign(ctx context.Context, id string) (*pconn, chan *Reply, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, nil, ErrClosed
		}
		p.startLocked()
		if pc := p.pickLocked(); pc != nil {
			pc.mu.Lock()
			if _, dup := pc.waiters[id]; dup {
				pc.mu.Unlock()
				p.mu.Unlock()
				return nil, nil, fmt.Errorf("peering: a request with ID %q is already waiting for peer %s", id, p.name)
			}
			w := make(chan *Reply, 1)
			pc.waiters[id] = w
			pc.mu.Unlock()
			pc.inflight++
			p.mu.Unlock()
			return pc, w, nil
		}
		changed, lastErr, dialing, next := p.changed, p.lastErr, p.dialing, p.nextDial
		p.mu.Unlock()

		// Do not wait for a dial that the backoff puts after the deadline.
		if lastErr != nil && !dialing {
			if dl, ok := ctx.Deadline(); ok && next.After(dl) {
				return nil, nil, &UnavailableError{Peer: p.name, Err: lastErr}
			}
		}
		select {
		case <-changed:
		case <-p.closing:
			return nil, nil, ErrClosed
		case <-ctx.Done():
			p.mu.Lock()
			lastErr = p.lastErr
			p.mu.Unlock()
			if lastErr == nil {
				lastErr = fmt.Errorf("no connection established yet: %w", ctx.Err())
			}
			return nil, nil, &UnavailableError{Peer: p.name, Err: lastErr}
		}
	}
}

// unassign removes the waiter if still there and releases pc's count.
func (p *Pool) unassign(pc *pconn, id string, w chan *Reply) {
	pc.mu.Lock()
	if pc.waiters[id] == w {
		delete(pc.waiters, id)
	}
	pc.mu.Unlock()
	p.mu.Lock()
	pc.inflight--
	p.mu.Unlock()
}

// pickLocked returns the open connection with the fewest requests,
// preferring ESTABLISHED ones (a connection re-attesting is used only if no
// other is open: Send waits until it is ESTABLISHED again).
func (p *Pool) pickLocked() *pconn {
	var best *pconn
	bestUp := false
	for _, pc := range p.conns {
		st := pc.c.State()
		if st.Closed() {
			continue
		}
		up := st.Connected()
		switch {
		case best == nil, up && !bestUp:
		case up == bestUp && pc.inflight < best.inflight:
		default:
			continue
		}
		best, bestUp = pc, up
	}
	return best
}

// startLocked starts the dialler on first use.
func (p *Pool) startLocked() {
	if p.started {
		return
	}
	p.started = true
	p.wg.Add(1)
	go p.maintain()
}

func (p *Pool) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// maintain keeps Size connections, dialling one at a time with backoff.
func (p *Pool) maintain() {
	defer p.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		need := len(p.conns) < p.size
		wait := time.Until(p.nextDial)
		if need && wait <= 0 {
			p.dialing = true
		}
		p.mu.Unlock()

		if !need {
			select {
			case <-p.wake:
			case <-p.ctx.Done():
				return
			}
			continue
		}
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-p.ctx.Done():
				return
			}
			continue
		}
		p.dialOnce()
	}
}

// dialOnce makes one dial attempt and pools the connection.
func (p *Pool) dialOnce() {
	start := time.Now()
	c, err := p.dial(p.ctx)
	if err == nil && c == nil {
		err = errors.New("peering: Dial returned no connection")
	}
	if p.ctx.Err() == nil { // not an attempt aborted by Close
		p.obs.Dial(p.name, err)
	}

	p.mu.Lock()
	p.dialing = false
	if p.closed {
		p.mu.Unlock()
		if c != nil {
			c.Close()
		}
		return
	}
	if err != nil {
		p.failures++
		delay := p.backoff.Delay(p.failures)
		p.nextDial = time.Now().Add(delay)
		p.lastErr = err
		failures := p.failures
		p.broadcastLocked()
		p.mu.Unlock()
		p.log.Warn("cannot connect to peer", "err", err, "failures", failures, "retry_in", delay)
		return
	}
	pc := &pconn{c: c, since: time.Now(), waiters: make(map[string]chan *Reply), deadCh: make(chan struct{})}
	p.conns = append(p.conns, pc)
	p.lastErr = nil
	n := len(p.conns)
	p.obs.PoolSize(p.name, n)
	p.wg.Add(1)
	go p.read(pc)
	p.broadcastLocked()
	p.mu.Unlock()
	p.log.Info("connected to peer", "remote", c.RemoteAddr().String(), "pooled", n, "took", time.Since(start))
}

// read is a pooled connection's reader: it hands every received message to
// its waiter, and when the connection ends removes it from the pool and
// fails the waiters left.
func (p *Pool) read(pc *pconn) {
	defer p.wg.Done()
	for {
		msg, err := pc.c.Recv(p.ctx)
		if err != nil {
			break
		}
		pc.delivered = true
		id, decoded, err := p.decode(msg)
		if err != nil {
			p.obs.Unmatched(p.name)
			p.log.Debug("dropping a message without a readable correlation id", "err", err, "len", len(msg))
			continue
		}
		pc.mu.Lock()
		w := pc.waiters[id]
		if w != nil {
			delete(pc.waiters, id)
		}
		pc.mu.Unlock()
		if w == nil {
			p.obs.Unmatched(p.name)
			p.log.Debug("dropping a message that answers no waiting request", "correlation", id, "len", len(msg))
			continue
		}
		w <- &Reply{Payload: msg, Decoded: decoded} // buffered, and each waiter is handed one message
	}
	pc.c.Close() // sends IdscpClose{USER_SHUTDOWN} unless already closed
	cause := pc.c.Err()

	p.mu.Lock()
	p.conns = slices.DeleteFunc(p.conns, func(q *pconn) bool { return q == pc })
	// A connection that closes before delivering anything, soon after it
	// was made, counts as a failure: a peer that accepts and hangs up must
	// not be redialled in a tight loop.
	if !p.closed {
		if pc.delivered || time.Since(pc.since) >= p.backoff.Max {
			p.failures = 0
			p.nextDial = time.Time{}
		} else {
			p.failures++
			p.nextDial = time.Now().Add(p.backoff.Delay(p.failures))
		}
	}
	n := len(p.conns)
	closed := p.closed
	p.obs.PoolSize(p.name, n)
	p.broadcastLocked()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}

	pc.mu.Lock()
	pc.dead = true
	pc.err = cause
	pending := len(pc.waiters)
	pc.waiters = nil
	pc.mu.Unlock()
	close(pc.deadCh)
	if !closed {
		p.log.Info("connection to peer closed", "remote", pc.c.RemoteAddr().String(), "err", cause, "waiting_requests", pending, "pooled", n)
	}
}

// Established returns how many pooled connections are ESTABLISHED now.
func (p *Pool) Established() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pc := range p.conns {
		if pc.c.State().Connected() {
			n++
		}
	}
	return n
}

// Close fails waiting requests with ErrClosed, closes every connection
// (IdscpClose USER_SHUTDOWN) and returns when all the pool's goroutines have
// exited. Closing twice is harmless.
func (p *Pool) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.draining = true
		close(p.closing)
		p.broadcastLocked()
	}
	p.mu.Unlock()
	p.cancel() // aborts a dial, stops the readers, which close their connections
	p.wg.Wait()
	return nil
}

// Drain refuses new requests with ErrClosed, waits until the requests under
// way (queued ones included) have finished or ctx ends, then closes the
// pool. It returns ctx.Err() if requests were still running.
func (p *Pool) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	var idle chan struct{}
	if p.active > 0 {
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		idle = p.idle
	}
	p.mu.Unlock()
	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	return err
}

type nopObserver struct{}

func (nopObserver) PoolSize(string, int) {}
func (nopObserver) Queue(string, int)    {}
func (nopObserver) Dial(string, error)   {}
func (nopObserver) Unmatched(string)     {}
