package peering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// testPKI is made once per test binary: key generation is the slow part.
var testPKI = func() *testpki.Bundle {
	b, err := testpki.NewBundle()
	if err != nil {
		panic(err)
	}
	return b
}()

func quietLogger() *slog.Logger {
	if os.Getenv("PEERING_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig presents leaf, trusts the bundle CA and uses NullDaps.
func testConfig(leaf *testpki.Leaf) *idscp2.Config {
	cert := leaf.TLS
	return &idscp2.Config{
		Certificate: &cert,
		Roots:       testPKI.CA.Pool(),
		DAT:         dat.NewNull(quietLogger()),
		Logger:      quietLogger(),
	}
}

// The test framing: "id\npayload", for requests and responses alike.
func frame(id string, payload []byte) []byte {
	b := make([]byte, 0, len(id)+1+len(payload))
	b = append(b, id...)
	b = append(b, '\n')
	return append(b, payload...)
}

func unframe(b []byte) (id string, payload []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return "", nil, errors.New("no id line")
	}
	return string(b[:i]), b[i+1:], nil
}

func correlate(b []byte) (string, error) {
	id, _, err := unframe(b)
	return id, err
}

// action is what the test peer does with one received request.
type action int

const (
	reply action = iota
	hold         // never answer
	drop         // close the connection without answering
)

// peer is an IDSCP2 server answering "id\npayload" with
// "id\nre:payload", in reverse order of arrival within each batch.
type peer struct {
	t     testing.TB
	cfg   *idscp2.Config
	addr  string
	batch int           // answer in batches of this size (reversed); a partial batch after 5 ms
	delay time.Duration // before answering a batch
	act   func(id string, n int) action
	// closeOnAccept makes it hang up right after every handshake.
	closeOnAccept bool

	mu       sync.Mutex
	ln       *idscp2.Listener
	cancel   context.CancelFunc
	conns    map[*idscp2.Conn]bool
	execs    map[string]int
	sent     map[string]int
	accepted int
	closeErr []error // why each served connection ended
	wg       sync.WaitGroup
}

func newPeer(t testing.TB, cfg *idscp2.Config) *peer {
	if cfg == nil {
		cfg = testConfig(testPKI.Server)
	}
	s := &peer{t: t, cfg: cfg, addr: "127.0.0.1:0", batch: 1, conns: map[*idscp2.Conn]bool{}, execs: map[string]int{}, sent: map[string]int{}}
	return s
}

// start listens (on the same port after a stop) and serves.
func (s *peer) start() {
	s.t.Helper()
	ln, err := idscp2.Listen("tcp", s.addr, s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.ln, s.cancel, s.addr = ln, cancel, ln.Addr().String()
	s.mu.Unlock()
	s.wg.Add(1)
	go s.acceptLoop(ctx, ln)
}

func startPeer(t testing.TB, cfg *idscp2.Config, setup func(*peer)) *peer {
	s := newPeer(t, cfg)
	if setup != nil {
		setup(s)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// stop closes the listener and every connection, and waits for the
// serving goroutines.
func (s *peer) stop() {
	s.mu.Lock()
	ln, cancel := s.ln, s.cancel
	s.ln, s.cancel = nil, nil
	conns := make([]*idscp2.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if ln == nil {
		return
	}
	cancel()
	ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

func (s *peer) acceptLoop(ctx context.Context, ln *idscp2.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.accepted++
		s.conns[c] = true
		s.mu.Unlock()
		if s.closeOnAccept {
			c.Close()
		}
		in := make(chan []byte, 64)
		s.wg.Add(2)
		go s.readLoop(ctx, c, in)
		go s.respond(ctx, c, in)
	}
}

func (s *peer) readLoop(ctx context.Context, c *idscp2.Conn, in chan<- []byte) {
	defer s.wg.Done()
	defer close(in)
	defer c.Close() // also when stopped: no connection outlives its server
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			if ce := c.Err(); ce != nil {
				s.closeErr = append(s.closeErr, ce)
			}
			s.mu.Unlock()
			return
		}
		select {
		case in <- m:
		case <-ctx.Done():
			return
		}
	}
}

func (s *peer) respond(ctx context.Context, c *idscp2.Conn, in <-chan []byte) {
	defer s.wg.Done()
	var batch [][]byte
	var flush <-chan time.Time
	send := func() bool {
		if s.delay > 0 {
			select {
			case <-time.After(s.delay):
			case <-ctx.Done():
				return false
			}
		}
		for i := len(batch) - 1; i >= 0; i-- {
			if err := c.Send(ctx, batch[i]); err != nil {
				return false
			}
			id, _, _ := unframe(batch[i])
			s.mu.Lock()
			s.sent[id]++
			s.mu.Unlock()
		}
		batch, flush = batch[:0], nil
		return true
	}
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return
			}
			id, payload, err := unframe(m)
			if err != nil {
				s.t.Errorf("peer got a message without id: %q", m)
				continue
			}
			s.mu.Lock()
			s.execs[id]++
			n := s.execs[id]
			s.mu.Unlock()
			a := reply
			if s.act != nil {
				a = s.act(id, n)
			}
			switch a {
			case hold:
				continue
			case drop:
				c.Close()
				return
			}
			batch = append(batch, frame(id, append([]byte("re:"), payload...)))
			if len(batch) >= s.batch {
				if !send() {
					return
				}
			} else if flush == nil {
				flush = time.After(5 * time.Millisecond)
			}
		case <-flush:
			if !send() {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// answer sends a response to id on every open connection, as a peer
// that answers late would.
func (s *peer) answer(id string) {
	s.mu.Lock()
	conns := make([]*idscp2.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Send(ctx, frame(id, []byte("re:late"))); err != nil {
			s.t.Errorf("answer %s: %v", id, err)
		}
		cancel()
	}
}

func (s *peer) executions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.execs[id]
}

func (s *peer) totalExecutions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.execs {
		n += v
	}
	return n
}

func (s *peer) acceptedConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// counters is an Observer.
type counters struct {
	dials, dialErrs, unmatched atomic.Int64
	poolSize, queue, maxQueue  atomic.Int64
	mu                         sync.Mutex
	lastDialErr                error
	events                     []string
}

func (o *counters) event(format string, args ...any) {
	o.mu.Lock()
	o.events = append(o.events, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	o.mu.Unlock()
}

func (o *counters) PoolSize(_ string, n int) { o.poolSize.Store(int64(n)); o.event("pool size %d", n) }
func (o *counters) Queue(_ string, n int) {
	o.queue.Store(int64(n))
	for {
		m := o.maxQueue.Load()
		if int64(n) <= m || o.maxQueue.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}
func (o *counters) Dial(_ string, err error) {
	o.event("dial: %v", err)
	o.dials.Add(1)
	if err != nil {
		o.dialErrs.Add(1)
		o.mu.Lock()
		o.lastDialErr = err
		o.mu.Unlock()
	}
}
func (o *counters) Unmatched(string) { o.unmatched.Add(1) }

// newPool makes a pool dialling addr with the client leaf; it is closed
// when the test ends.
func newPool(t testing.TB, addr string, mod func(*Options)) (*Pool, *counters) {
	t.Helper()
	cfg := testConfig(testPKI.Client)
	obs := &counters{}
	opts := Options{
		Name: "test-peer",
		Dial: func(ctx context.Context) (*idscp2.Conn, error) {
			return idscp2.Dial(ctx, "tcp", addr, cfg)
		},
		Correlate: correlate,
		Logger:    quietLogger(),
		Observer:  obs,
	}
	if mod != nil {
		mod(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, obs
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoLeak fails if goroutines started during the test outlive it. Call
// it first, so that its check runs after every other cleanup.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
