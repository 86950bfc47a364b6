package daps

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// TestIDSCP2WithDAPS runs two IDSCP2 peers whose DATs come from the
// built-in DAPS over HTTP and live 3 s, while messages flow both ways for
// 6 s: the IdscpDatExpired / IdscpDat cycle runs repeatedly (the drivers
// renew their tokens in the background), and no message is lost,
// duplicated or reordered.
func TestIDSCP2WithDAPS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 6 s")
	}
	d := startDAPS(t, dapsOpts{lifetime: 3 * time.Second})
	var fetchMu sync.Mutex
	fetches := map[string]int{}
	var refusals reasons
	mk := func(leaf *testpki.Leaf, log *transitions) *idscp2.Config {
		drv := d.driverFor(t, leaf, func(c *Config) {
			c.Threshold = 0.5
			c.OnRefusal = refusals.hook
			c.OnTokenFetch = func(o string) { fetchMu.Lock(); fetches[o]++; fetchMu.Unlock() }
		})
		cert := leaf.TLS
		return &idscp2.Config{
			Certificate:      &cert,
			Roots:            pki.CA.Pool(),
			DAT:              drv,
			HandshakeTimeout: 5 * time.Second,
			AckTimeout:       20 * time.Millisecond,
			Logger:           quiet(),
			OnStateChange:    log.record,
		}
	}
	var clientLog, serverLog transitions
	ln, err := idscp2.Listen("tcp", "127.0.0.1:0", mk(pki.Server, &serverLog))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	accepted := make(chan *idscp2.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	client, err := idscp2.Dial(ctx, "tcp", net.JoinHostPort("localhost", port), mk(pki.Client, &clientLog))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	defer server.Close()
	firstExp := server.PeerIdentity().Expiry

	type result struct {
		n   int
		err error
	}
	res := make(chan result, 2)
	go func() { n, err := stream(ctx, client, server, "c2s", 6*time.Second); res <- result{n, err} }()
	go func() { n, err := stream(ctx, server, client, "s2c", 6*time.Second); res <- result{n, err} }()
	total := 0
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Error(r.err)
		}
		total += r.n
	}
	c, s := clientLog.count(), serverLog.count()
	fetchMu.Lock()
	t.Logf("%d messages; DAT renewals (transitions into %s): client %d, server %d; token fetches %v; DAPS requests: token %d, metadata %d, jwks %d",
		total, fsm.WaitForDatAndRaVerifier, c, s, fetches, d.token.Load(), d.meta.Load(), d.jwks.Load())
	fetchMu.Unlock()
	if c < 2 || s < 2 {
		t.Errorf("DAT renewal cycles: client %d, server %d; want at least 2 each in 6 s with 3 s DATs", c, s)
	}
	for who, conn := range map[string]*idscp2.Conn{"client": client, "server": server} {
		if err := conn.Err(); err != nil {
			t.Errorf("%s closed: %v", who, err)
		}
	}
	if id := server.PeerIdentity(); id == nil || !id.Expiry.After(firstExp) {
		t.Errorf("the server's view of the client DAT was not renewed")
	}
	for _, r := range []string{"signature", "expired", "unknown_kid", "unavailable", "fingerprint"} {
		if n := refusals.get(datReason(r)); n != 0 {
			t.Errorf("%d DATs refused with %s", n, r)
		}
	}
	// Renewal ran in the background: a handful of fetches, not one per cycle per message.
	if n := d.token.Load(); n > 20 {
		t.Errorf("%d token requests in 6 s", n)
	}
	if n := d.meta.Load(); n != 2 {
		t.Errorf("%d metadata requests, want 2 (one per driver)", n)
	}
}

// transitions counts entries into WAIT_FOR_DAT_AND_RA_VERIFIER from an
// established connection (this side sent IdscpDatExpired).
type transitions struct {
	mu sync.Mutex
	n  int
}

func (l *transitions) record(_ *idscp2.Conn, from, to fsm.State) {
	if to == fsm.WaitForDatAndRaVerifier {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
}

func (l *transitions) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// stream sends numbered messages from one side for d, then an end marker,
// while the other side checks that every message arrives exactly once and
// in order.
func stream(ctx context.Context, from, to *idscp2.Conn, tag string, d time.Duration) (int, error) {
	errs := make(chan error, 2)
	var sent int
	go func() {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			if err := from.Send(ctx, fmt.Appendf(nil, "%s-%d", tag, sent)); err != nil {
				errs <- fmt.Errorf("%s: send #%d: %w", tag, sent, err)
				return
			}
			sent++
		}
		if err := from.Send(ctx, []byte(tag+"-end")); err != nil {
			errs <- fmt.Errorf("%s: send end: %w", tag, err)
			return
		}
		errs <- nil
	}()
	var received int
	go func() {
		for {
			m, err := to.Recv(ctx)
			if err != nil {
				errs <- fmt.Errorf("%s: recv after #%d: %w", tag, received, err)
				return
			}
			if string(m) == tag+"-end" {
				errs <- nil
				return
			}
			if want := fmt.Sprintf("%s-%d", tag, received); string(m) != want {
				errs <- fmt.Errorf("%s: received %q, want %q (duplicate, loss or reordering)", tag, m, want)
				return
			}
			received++
		}
	}()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first == nil && received != sent {
		first = fmt.Errorf("%s: sent %d, received %d", tag, sent, received)
	}
	return sent, first
}

func datReason(s string) dat.Reason { return dat.Reason(s) }
