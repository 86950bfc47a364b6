package peering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

func req(id string, idempotent bool) *Request {
	return &Request{ID: id, Payload: frame(id, []byte("body-"+id)), Idempotent: idempotent}
}

func wantResponse(t testing.TB, r *Request, resp []byte) {
	t.Helper()
	id, payload, err := unframe(resp)
	if err != nil || id != r.ID || !bytes.Equal(payload, []byte("re:body-"+r.ID)) {
		t.Errorf("request %s got response %q", r.ID, resp)
	}
}

func TestNewValidates(t *testing.T) {
	dial := func(context.Context) (*idscp2.Conn, error) { return nil, errors.New("x") }
	for _, o := range []Options{
		{Correlate: correlate},
		{Dial: dial},
		{Dial: dial, Correlate: correlate, Size: -1},
		{Dial: dial, Correlate: correlate, MaxInFlight: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	p, err := New(Options{Dial: dial, Correlate: correlate, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.size != DefaultSize || cap(p.sem) != DefaultMaxInFlight || p.maxQueue != DefaultMaxQueue {
		t.Errorf("defaults: size %d, in flight %d, queue %d", p.size, cap(p.sem), p.maxQueue)
	}
	if _, err := p.RoundTrip(context.Background(), &Request{}); err == nil {
		t.Error("a request without ID was accepted")
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Jitter: -1}
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for n, w := range want {
		if got := b.Delay(n); got != w {
			t.Errorf("Delay(%d) = %v, want %v", n, got, w)
		}
	}
	if got := b.Delay(50); got != 10*time.Second {
		t.Errorf("Delay(50) = %v, want the 10s cap", got)
	}
	if got := b.Delay(5000); got != 10*time.Second {
		t.Errorf("Delay(5000) = %v, want the 10s cap", got)
	}
	var j Backoff // defaults: ±20%
	for range 1000 {
		if d := j.Delay(1); d < 80*time.Millisecond || d > 120*time.Millisecond {
			t.Fatalf("jittered Delay(1) = %v, outside 100ms ±20%%", d)
		}
	}
}

// TestLazyDial: New dials nothing; the first request brings the pool up to
// Size.
func TestLazyDial(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, nil)
	p, obs := newPool(t, s.addr, func(o *Options) { o.Size = 3 })
	time.Sleep(50 * time.Millisecond)
	if n := obs.dials.Load(); n != 0 || s.acceptedConns() != 0 {
		t.Fatalf("%d dials before the first request", n)
	}
	r := req("lazy", false)
	resp, err := p.RoundTrip(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	wantResponse(t, r, resp)
	waitFor(t, 5*time.Second, "3 connections", func() bool { return p.Established() == 3 })
	if n := obs.poolSize.Load(); n != 3 {
		t.Errorf("Observer.PoolSize said %d", n)
	}
	waitFor(t, 5*time.Second, "the peer to accept 3 connections", func() bool { return s.acceptedConns() == 3 })
	time.Sleep(50 * time.Millisecond)
	if n := s.acceptedConns(); n != 3 {
		t.Errorf("peer accepted %d connections, want Size=3", n)
	}
}

// TestConcurrentRoundTrips: 200 requests from 50 goroutines over 2
// connections; the peer answers in reverse order in batches, so responses
// overtake each other and must be matched by id.
func TestConcurrentRoundTrips(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.batch = 4 })
	p, obs := newPool(t, s.addr, func(o *Options) { o.Size = 2 })
	// Bring both connections up first, so that the load is spread.
	if _, err := p.RoundTrip(context.Background(), req("warm-up", true)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 connections", func() bool { return p.Established() == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const goroutines, each = 50, 4
	var wg sync.WaitGroup
	var ok atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := req(fmt.Sprintf("g%d-r%d", g, i), i%2 == 0)
				resp, err := p.RoundTrip(ctx, r)
				if err != nil {
					s.mu.Lock()
					sent := s.sent[r.ID]
					s.mu.Unlock()
					t.Errorf("%s: %v (executed %d times, answered %d)", r.ID, err, s.executions(r.ID), sent)
					continue
				}
				wantResponse(t, r, resp)
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != goroutines*each {
		t.Fatalf("%d of %d requests succeeded", ok.Load(), goroutines*each)
	}
	for g := range goroutines {
		for i := range each {
			if n := s.executions(fmt.Sprintf("g%d-r%d", g, i)); n != 1 {
				t.Errorf("g%d-r%d executed %d times", g, i, n)
			}
		}
	}
	if n := obs.unmatched.Load(); n != 0 {
		t.Errorf("%d unmatched messages", n)
	}
	if n := s.acceptedConns(); n != 2 {
		t.Errorf("peer accepted %d connections, want 2", n)
	}
}

// TestSpreadsLoad: requests waiting for responses are spread over the
// connections (fewest in flight first), many per connection.
func TestSpreadsLoad(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.act = func(string, int) action { return hold } })
	p, _ := newPool(t, s.addr, func(o *Options) { o.Size = 2 })
	// Warm up with a request that times out (the peer holds everything).
	ctx0, c0 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	p.RoundTrip(ctx0, req("warm", true))
	c0()
	waitFor(t, 5*time.Second, "2 connections", func() bool { return p.Established() == 2 })

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.RoundTrip(ctx, req(fmt.Sprint("spread-", i), true))
		}()
	}
	waitFor(t, 5*time.Second, "10 requests at the peer", func() bool {
		n := 0
		for i := range 10 {
			n += s.executions(fmt.Sprint("spread-", i))
		}
		return n == 10
	})
	p.mu.Lock()
	var per []int
	for _, pc := range p.conns {
		per = append(per, pc.inflight)
	}
	p.mu.Unlock()
	if len(per) != 2 || per[0] != 5 || per[1] != 5 {
		t.Errorf("in flight per connection: %v, want [5 5]", per)
	}
	cancel()
	wg.Wait()
}

// TestLostOrRetried: the peer executes a request and hangs up without
// answering. A non-idempotent request fails with LostError{Sent: true} and
// was executed once; an idempotent one is sent again on a new connection
// and succeeds.
func TestLostOrRetried(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) {
		s.act = func(id string, n int) action {
			if strings.HasPrefix(id, "drop") && (n == 1 || strings.HasPrefix(id, "drop-always")) {
				return drop
			}
			return reply
		}
	})
	p, _ := newPool(t, s.addr, func(o *Options) { o.Size = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := p.RoundTrip(ctx, req("drop-once-nonidem", false))
	var lost *LostError
	if !errors.As(err, &lost) || !lost.Sent || lost.Peer != "test-peer" {
		t.Fatalf("non-idempotent: %v, want LostError{Sent: true}", err)
	}
	var ce *idscp2.CloseError
	if !errors.As(err, &ce) {
		t.Errorf("LostError does not carry the close error: %v", err)
	}
	if n := s.executions("drop-once-nonidem"); n != 1 {
		t.Errorf("non-idempotent executed %d times", n)
	}

	r := req("drop-once-idem", true)
	resp, err := p.RoundTrip(ctx, r)
	if err != nil {
		t.Fatalf("idempotent: %v", err)
	}
	wantResponse(t, r, resp)
	if n := s.executions(r.ID); n != 2 {
		t.Errorf("idempotent executed %d times, want 2", n)
	}

	// At most two sends in all.
	_, err = p.RoundTrip(ctx, req("drop-always", true))
	if !errors.As(err, &lost) || !lost.Sent {
		t.Fatalf("idempotent, always dropped: %v, want LostError{Sent: true}", err)
	}
	if n := s.executions("drop-always"); n != 2 {
		t.Errorf("idempotent, always dropped: executed %d times, want 2", n)
	}
}

// TestPeerRestartMidLoad: the peer drops every connection and restarts on
// the same port twice while 40 clients send. Every request succeeds once
// or fails with a clean error in bounded time; non-idempotent requests are
// never executed twice.
func TestPeerRestartMidLoad(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.batch = 3 })
	p, obs := newPool(t, s.addr, func(o *Options) { o.Size = 2 })

	type outcome struct {
		r    *Request
		resp []byte
		err  error
		took time.Duration
	}
	const perRequest = 3 * time.Second
	var (
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	stopLoad := make(chan struct{})
	for g := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				r := req(fmt.Sprintf("g%d-%d", g, i), g%2 == 0)
				ctx, cancel := context.WithTimeout(context.Background(), perRequest)
				start := time.Now()
				resp, err := p.RoundTrip(ctx, r)
				cancel()
				mu.Lock()
				outcomes = append(outcomes, outcome{r, resp, err, time.Since(start)})
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	for range 2 {
		time.Sleep(300 * time.Millisecond)
		obs.event("stopping the peer")
		s.stop()
		obs.event("peer stopped")
		time.Sleep(150 * time.Millisecond)
		s.start()
		obs.event("peer started")
	}
	defer func() {
		if t.Failed() {
			obs.mu.Lock()
			t.Logf("events:\n%s", strings.Join(obs.events, "\n"))
			obs.mu.Unlock()
		}
	}()
	time.Sleep(400 * time.Millisecond)
	close(stopLoad)
	wg.Wait()

	var succeeded, lost, unavailable, other int
	for _, o := range outcomes {
		n := s.executions(o.r.ID)
		if o.took > perRequest+time.Second {
			t.Errorf("%s took %v", o.r.ID, o.took)
		}
		if !o.r.Idempotent && n > 1 {
			t.Errorf("non-idempotent %s executed %d times", o.r.ID, n)
		}
		var le *LostError
		var ue *UnavailableError
		switch {
		case o.err == nil:
			succeeded++
			wantResponse(t, o.r, o.resp)
			if n < 1 {
				t.Errorf("%s succeeded but the peer never executed it", o.r.ID)
			}
		case errors.As(o.err, &le):
			lost++
			if !le.Sent {
				t.Errorf("%s: LostError with Sent false: %v", o.r.ID, o.err)
			}
			if o.r.Idempotent && n < 2 {
				// Lost after its single allowed send? Only if the second
				// send found a connection that failed too.
				t.Logf("idempotent %s lost after %d executions: %v", o.r.ID, n, o.err)
			}
		case errors.As(o.err, &ue):
			unavailable++
			if !o.r.Idempotent && n != 0 {
				t.Errorf("non-idempotent %s: UnavailableError after %d executions", o.r.ID, n)
			}
		default:
			other++
			t.Errorf("%s: unclean error %v", o.r.ID, o.err)
		}
	}
	t.Logf("%d requests: %d succeeded, %d lost, %d unavailable, %d other; peer accepted %d connections",
		len(outcomes), succeeded, lost, unavailable, other, s.acceptedConns())
	if succeeded < len(outcomes)/2 {
		t.Errorf("only %d of %d requests succeeded", succeeded, len(outcomes))
	}
	if s.acceptedConns() < 4 {
		t.Errorf("peer accepted %d connections: the pool did not reconnect after each restart", s.acceptedConns())
	}
	// The pool is whole again.
	waitFor(t, 5*time.Second, "2 connections after the restarts", func() bool { return p.Established() == 2 })
	r := req("after", false)
	resp, err := p.RoundTrip(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	wantResponse(t, r, resp)
}

// TestPeerDown: nothing listens; RoundTrip fails within its context with an
// UnavailableError carrying the dial error.
func TestPeerDown(t *testing.T) {
	checkNoLeak(t)
	p, obs := newPool(t, deadAddr(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.RoundTrip(ctx, req("down", false))
	took := time.Since(start)
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Peer != "test-peer" {
		t.Fatalf("got %v, want UnavailableError", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%v does not name the dial error", err)
	}
	if !strings.Contains(err.Error(), "test-peer") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("message %q names neither peer nor cause", err)
	}
	if took > time.Second {
		t.Errorf("took %v with a 500ms context", took)
	}
	if obs.dialErrs.Load() == 0 {
		t.Error("Observer.Dial was not told of the failure")
	}
}

// TestHandshakeRefused: the peer accepts TCP and TLS but no RA suite
// matches; the UnavailableError carries the *idscp2.CloseError and cause.
func TestHandshakeRefused(t *testing.T) {
	checkNoLeak(t)
	scfg := testConfig(testPKI.Server)
	scfg.SupportedSuites, scfg.ExpectedSuites = []string{attestation.Dummy}, []string{attestation.Dummy}
	s := startPeer(t, scfg, nil)
	// No second dial before the deadline: RoundTrip returns after the first.
	p, _ := newPool(t, s.addr, func(o *Options) { o.Backoff.Initial = 10 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.RoundTrip(ctx, req("refused", false))
	var ue *UnavailableError
	var ce *idscp2.CloseError
	if !errors.As(err, &ue) || !errors.As(err, &ce) {
		t.Fatalf("got %v, want UnavailableError with a CloseError", err)
	}
	if ce.Cause != pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER && ce.Cause != pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER {
		t.Errorf("cause %v", ce.Cause)
	}
	if ctx.Err() != nil {
		t.Error("RoundTrip waited for the deadline although the next dial comes after it")
	}
	t.Logf("%v", err)
}

// TestBackoffDoesNotHammer: 20 callers against a dead address for ~1 s
// share one dialler that backs off (100ms, 200ms, 400ms ...).
func TestBackoffDoesNotHammer(t *testing.T) {
	checkNoLeak(t)
	p, obs := newPool(t, deadAddr(t), func(o *Options) {
		o.Size = 2
		o.Backoff = Backoff{Initial: 100 * time.Millisecond}
	})
	end := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				ctx, cancel := context.WithDeadline(context.Background(), end)
				_, err := p.RoundTrip(ctx, req("x", true))
				cancel()
				calls.Add(1)
				var ue *UnavailableError
				if !errors.As(err, &ue) {
					t.Errorf("got %v, want UnavailableError", err)
					return
				}
				time.Sleep(time.Millisecond) // an eager client, not a busy loop

			}
		}()
	}
	wg.Wait()
	n := obs.dials.Load()
	obs.mu.Lock()
	t.Logf("%d RoundTrips, %d dials in 1s; last dial error: %v", calls.Load(), n, obs.lastDialErr)
	obs.mu.Unlock()
	if n < 2 || n > 5 {
		t.Errorf("%d dial attempts in 1s with Initial 100ms, want 2..5", n)
	}
}

// TestFlappingPeerBacksOff: a peer that completes the handshake and hangs
// up at once is not redialled in a tight loop.
func TestFlappingPeerBacksOff(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.closeOnAccept = true })
	p, obs := newPool(t, s.addr, func(o *Options) { o.Size = 2 })
	end := time.Now().Add(time.Second)
	calls := 0
	for time.Now().Before(end) {
		ctx, cancel := context.WithDeadline(context.Background(), end)
		_, err := p.RoundTrip(ctx, req(fmt.Sprint("flap-", calls), calls%2 == 0))
		cancel()
		calls++
		var ue *UnavailableError
		var le *LostError
		if err == nil {
			t.Fatal("a request succeeded on a peer that hangs up")
		}
		if !errors.As(err, &ue) && !errors.As(err, &le) {
			t.Errorf("got %v, want UnavailableError or LostError", err)
		}
	}
	n := obs.dials.Load()
	t.Logf("%d RoundTrips, %d dials in 1s", calls, n)
	if n > 10 {
		t.Errorf("%d dials in 1s to a peer that hangs up", n)
	}
}

// TestQueueFull: MaxInFlight requests run, MaxQueue wait, the next one is
// refused at once; Close fails them all with ErrClosed.
func TestQueueFull(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.act = func(string, int) action { return hold } })
	p, obs := newPool(t, s.addr, func(o *Options) { o.MaxInFlight = 2; o.MaxQueue = 3 })
	errs := make(chan error, 5)
	for i := range 5 {
		go func() {
			_, err := p.RoundTrip(context.Background(), req(fmt.Sprint("q", i), false))
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "2 requests in flight and 3 queued", func() bool {
		return obs.queue.Load() == 3 && s.totalExecutions() == 2
	})
	start := time.Now()
	_, err := p.RoundTrip(context.Background(), req("q-full", false))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("got %v, want ErrQueueFull", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("ErrQueueFull took %v", took)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a request still waits after Close")
		}
	}
	if n := obs.queue.Load(); n != 0 {
		t.Errorf("queue depth %d after Close", n)
	}
	if n := s.executions("q-full"); n != 0 {
		t.Errorf("the refused request reached the peer")
	}
}

// TestCloseFailsWaiters: requests awaiting responses get ErrClosed; the
// peer sees IdscpClose USER_SHUTDOWN; no pool goroutine survives Close.
func TestCloseFailsWaiters(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.act = func(string, int) action { return hold } })
	p, _ := newPool(t, s.addr, nil)
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := p.RoundTrip(context.Background(), req(fmt.Sprint("w", i), false))
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "10 requests at the peer", func() bool { return s.totalExecutions() == 10 })
	waitFor(t, 5*time.Second, "2 connections", func() bool { return p.Established() == 2 && s.acceptedConns() == 2 })
	p.Close()
	if !poolGoroutinesGone(time.Second) {
		t.Error("pool goroutines outlive Close")
	}
	for range 10 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a request still waits after Close")
		}
	}
	if n := p.Established(); n != 0 {
		t.Errorf("%d connections after Close", n)
	}
	if _, err := p.RoundTrip(context.Background(), req("late", false)); !errors.Is(err, ErrClosed) {
		t.Errorf("RoundTrip after Close: %v", err)
	}
	waitFor(t, 5*time.Second, "the peer to see the connections close", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.closeErr) == 2
	})
	s.mu.Lock()
	for _, err := range s.closeErr {
		var ce *idscp2.CloseError
		if !errors.As(err, &ce) || !ce.Remote || ce.Cause != pb.IdscpClose_USER_SHUTDOWN {
			t.Errorf("peer's connection closed with %v, want the peer's USER_SHUTDOWN", err)
		}
	}
	s.mu.Unlock()
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseWhileDialling: Close aborts a dial in backoff or in progress.
func TestCloseWhileDialling(t *testing.T) {
	checkNoLeak(t)
	p, _ := newPool(t, deadAddr(t), nil)
	errs := make(chan error, 1)
	go func() {
		_, err := p.RoundTrip(context.Background(), req("x", false))
		errs <- err
	}()
	time.Sleep(150 * time.Millisecond)
	p.Close()
	if !poolGoroutinesGone(time.Second) {
		t.Error("pool goroutines outlive Close")
	}
	select {
	case err := <-errs:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("RoundTrip still waits after Close")
	}
}

// TestDrainWaitsForInFlight: Drain refuses new requests at once, lets the
// running ones finish, then closes.
func TestDrainWaitsForInFlight(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.delay = 300 * time.Millisecond; s.batch = 5 })
	p, _ := newPool(t, s.addr, nil)
	type res struct {
		r    *Request
		resp []byte
		err  error
	}
	results := make(chan res, 5)
	for i := range 5 {
		go func() {
			r := req(fmt.Sprint("d", i), false)
			resp, err := p.RoundTrip(context.Background(), r)
			results <- res{r, resp, err}
		}()
	}
	waitFor(t, 5*time.Second, "5 requests at the peer", func() bool { return s.totalExecutions() == 5 })
	drained := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- p.Drain(ctx)
	}()
	waitFor(t, time.Second, "draining", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.draining
	})
	if _, err := p.RoundTrip(context.Background(), req("new", false)); !errors.Is(err, ErrClosed) {
		t.Errorf("new request while draining: %v, want ErrClosed", err)
	}
	for range 5 {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.r.ID, r.err)
			continue
		}
		wantResponse(t, r.r, r.resp)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Drain took %v: it did not return when the requests were done", took)
	}
	if !poolGoroutinesGone(time.Second) {
		t.Error("pool goroutines outlive Drain")
	}
}

// TestDrainTimeout: requests that outlast Drain's context fail with
// ErrClosed, and Drain says it gave up.
func TestDrainTimeout(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) { s.act = func(string, int) action { return hold } })
	p, _ := newPool(t, s.addr, nil)
	errs := make(chan error, 1)
	go func() {
		_, err := p.RoundTrip(context.Background(), req("stuck", false))
		errs <- err
	}()
	waitFor(t, 5*time.Second, "the request at the peer", func() bool { return s.totalExecutions() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain: %v, want DeadlineExceeded", err)
	}
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Errorf("stuck request: %v, want ErrClosed", err)
	}
}

// TestCancelRemovesWaiter: a request whose context ends stops waiting; its
// late response is reported as unmatched and the connection stays usable.
func TestCancelRemovesWaiter(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, func(s *peer) {
		s.act = func(id string, _ int) action {
			if id == "impatient" {
				return hold
			}
			return reply
		}
	})
	p, obs := newPool(t, s.addr, func(o *Options) { o.Size = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		_, err := p.RoundTrip(ctx, req("impatient", false))
		errs <- err
	}()
	waitFor(t, 5*time.Second, "the request at the peer", func() bool { return s.executions("impatient") == 1 })
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	p.mu.Lock()
	for _, pc := range p.conns {
		pc.mu.Lock()
		if n := len(pc.waiters); n != 0 {
			t.Errorf("%d waiters left", n)
		}
		pc.mu.Unlock()
	}
	p.mu.Unlock()
	s.answer("impatient")
	waitFor(t, 5*time.Second, "the late response to be unmatched", func() bool { return obs.unmatched.Load() == 1 })
	r := req("patient", false)
	resp, err := p.RoundTrip(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	wantResponse(t, r, resp)
}

// TestUncorrelatable: a message whose correlation id cannot be read is
// dropped as unmatched.
func TestUncorrelatable(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, nil)
	var bad atomic.Bool
	p, obs := newPool(t, s.addr, func(o *Options) {
		o.Size = 1
		o.Correlate = func(b []byte) (string, error) {
			if bad.Load() {
				return "", errors.New("no correlation id")
			}
			return correlate(b)
		}
	})
	if _, err := p.RoundTrip(context.Background(), req("ok", false)); err != nil {
		t.Fatal(err)
	}
	bad.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.RoundTrip(ctx, req("bad", false)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
	if n := obs.unmatched.Load(); n != 1 {
		t.Errorf("%d unmatched, want 1", n)
	}
}

// TestMessageTooLarge: a payload over the frame limit fails at once and
// is not retried.
func TestMessageTooLarge(t *testing.T) {
	checkNoLeak(t)
	s := startPeer(t, nil, nil)
	p, _ := newPool(t, s.addr, nil)
	r := &Request{ID: "big", Payload: make([]byte, idscp2.DefaultMaxFrameSize+1), Idempotent: true}
	if _, err := p.RoundTrip(context.Background(), r); !errors.Is(err, idscp2.ErrMessageTooLarge) {
		t.Errorf("got %v, want ErrMessageTooLarge", err)
	}
}

// poolGoroutinesGone waits until no goroutine runs this package's pool
// code.
func poolGoroutinesGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if !bytes.Contains(buf, []byte("peering.(*Pool).maintain")) && !bytes.Contains(buf, []byte("peering.(*Pool).read(")) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}
