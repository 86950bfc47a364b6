package idscp2

// Integration tests over real TLS on 127.0.0.1: data exchange, alternating
// bit, re-attestation and back-pressure (the reference's Idscp2IT scenarios
// testIdscp2Valid, ack timeout and RA timeout).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// TestIntegrationValidExchange mirrors Idscp2IT.testIdscp2Valid: messages,
// a re-attestation requested by the client, a message from the server, a
// re-attestation requested by the server, more messages both ways, then a
// close from the client.
func TestIntegrationValidExchange(t *testing.T) {
	for _, tc := range []struct {
		name                string
		supported, expected []string
		want                string
	}{
		// The reference's suites: "NotUsed" is registered (it would fail)
		// but never negotiated.
		{"NullRa", []string{"NotUsed", attestation.NullRa}, []string{attestation.NullRa, "NotUsed"}, attestation.NullRa},
		{"Dummy", []string{attestation.Dummy}, []string{attestation.Dummy}, attestation.Dummy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			reg := attestation.Default()
			reg.RegisterProver("NotUsed", failingProver())
			reg.RegisterVerifier("NotUsed", failingVerifier())
			var log stateLog
			mk := func(cfg *Config) *Config {
				return log.hook(withSuites(cfg, reg, tc.supported, tc.expected))
			}
			p := connectPair(t, mk(itConfig(testPKI.Client)), mk(itConfig(testPKI.Server)))
			for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
				if pr, vr := c.Suites(); pr != tc.want || vr != tc.want {
					t.Errorf("%s: Suites() = (%q, %q), want (%q, %q)", who, pr, vr, tc.want, tc.want)
				}
			}
			ctx := itCtx(t)

			xfer(t, ctx, p.client, p.server, "ONE")
			xfer(t, ctx, p.client, p.server, "TWO")

			if err := p.client.ReAttest(); err != nil {
				t.Fatalf("client ReAttest: %v", err)
			}
			// OnStateChange runs before ReAttest returns.
			if n := log.count(p.client, reAttestation); n != 1 {
				t.Fatalf("client: %d re-attestations started after ReAttest, want 1", n)
			}
			if err := p.client.Ready(ctx); err != nil {
				t.Fatalf("client Ready after ReAttest: %v", err)
			}
			if n := log.count(p.server, func(from, to fsm.State) bool {
				return from.Connected() && to == fsm.WaitForRaProver
			}); n != 1 {
				t.Errorf("server: proved itself again %d times after the client's ReAttest, want 1", n)
			}

			xfer(t, ctx, p.server, p.client, "THREE")

			if err := p.server.ReAttest(); err != nil {
				t.Fatalf("server ReAttest: %v", err)
			}
			if n := log.count(p.server, reAttestation); n != 1 {
				t.Fatalf("server: %d re-attestations started after ReAttest, want 1", n)
			}

			xfer(t, ctx, p.client, p.server, "FOUR")
			xfer(t, ctx, p.server, p.client, "FIFE")
			if err := p.server.Ready(ctx); err != nil {
				t.Fatalf("server Ready after ReAttest: %v", err)
			}

			if err := p.client.Close(); err != nil {
				t.Fatalf("client Close: %v", err)
			}
			waitDone(t, "server", p.server)
			for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
				if st := c.State(); st != fsm.ClosedLocked {
					t.Errorf("%s: state %s after close, want %s", who, st, fsm.ClosedLocked)
				}
			}
			wantClose(t, "client", asCloseError(t, p.client.Err()), pb.IdscpClose_USER_SHUTDOWN, "User close", true, false)
			wantClose(t, "server", asCloseError(t, p.server.Err()), pb.IdscpClose_USER_SHUTDOWN, "User close", false, true)
			if ce := asCloseError(t, p.server.Err()); ce.Reason != "peer sent IdscpClose" {
				t.Errorf("server: close reason %q, want %q", ce.Reason, "peer sent IdscpClose")
			}
		})
	}
}

// TestIntegrationAckTimeout1ms mirrors the reference's 1 ms ACK timeout
// test: retransmissions every millisecond must neither duplicate nor lose
// nor reorder anything, with 200 messages each way at once (echo).
func TestIntegrationAckTimeout1ms(t *testing.T) {
	for _, tc := range []struct {
		name       string
		serverToo  bool
		clientTime time.Duration
	}{
		{"client", false, time.Millisecond},
		{"both", true, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			ccfg, scfg := itConfig(testPKI.Client), itConfig(testPKI.Server)
			ccfg.AckTimeout = tc.clientTime
			if tc.serverToo {
				scfg.AckTimeout = tc.clientTime
			}
			p := connectPair(t, ccfg, scfg)
			ctx := itCtx(t)
			const n = 200

			serverGot := make(chan []string, 1)
			go func() { // echo
				var got []string
				for range n {
					m, err := p.server.Recv(ctx)
					if err != nil {
						break
					}
					got = append(got, string(m))
					if err := p.server.Send(ctx, m); err != nil {
						break
					}
				}
				serverGot <- got
			}()
			sendErr := make(chan error, 1)
			go func() {
				for i := range n {
					if err := p.client.Send(ctx, fmt.Appendf(nil, "msg-%03d", i)); err != nil {
						sendErr <- fmt.Errorf("send #%d: %w", i, err)
						return
					}
				}
				sendErr <- nil
			}()
			for i := range n {
				m, err := p.client.Recv(ctx)
				if err != nil {
					t.Fatalf("client recv echo #%d: %v", i, err)
				}
				if want := fmt.Sprintf("msg-%03d", i); string(m) != want {
					t.Fatalf("client received echo %q, want %q", m, want)
				}
			}
			if err := <-sendErr; err != nil {
				t.Fatal(err)
			}
			got := <-serverGot
			if len(got) != n {
				t.Fatalf("server received %d messages, want %d", len(got), n)
			}
			for i, m := range got {
				if want := fmt.Sprintf("msg-%03d", i); m != want {
					t.Fatalf("server message #%d is %q, want %q", i, m, want)
				}
			}
			expectNothing(t, "client", p.client)
			expectNothing(t, "server", p.server)
			for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
				if err := c.Err(); err != nil {
					t.Errorf("%s closed: %v", who, err)
				}
			}
		})
	}
}

// TestIntegrationPeriodicReAttestation mirrors the reference's RA timeout
// test: both sides re-attest their peer every 750 ms (Dummy suite, four RA
// messages each time) while data flows both ways for 3 s.
func TestIntegrationPeriodicReAttestation(t *testing.T) {
	checkNoLeak(t)
	var log stateLog
	reg := attestation.Default()
	mk := func(cfg *Config) *Config {
		cfg.RaInterval = 750 * time.Millisecond
		cfg.AckTimeout = 20 * time.Millisecond
		return log.hook(withSuites(cfg, reg, []string{attestation.Dummy}, []string{attestation.Dummy}))
	}
	p := connectPair(t, mk(itConfig(testPKI.Client)), mk(itConfig(testPKI.Server)))
	ctx := itCtx(t)

	type result struct {
		n   int
		err error
	}
	res := make(chan result, 2)
	go func() { n, err := stream(ctx, p.client, p.server, "c2s", 3*time.Second); res <- result{n, err} }()
	go func() { n, err := stream(ctx, p.server, p.client, "s2c", 3*time.Second); res <- result{n, err} }()
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Error(r.err)
		}
		if r.n == 0 {
			t.Error("no message went through")
		}
	}
	c, s := log.count(p.client, reAttestation), log.count(p.server, reAttestation)
	t.Logf("re-attestations: client %d, server %d", c, s)
	if c+s < 2 {
		t.Errorf("%d re-attestations in 3 s with a 750 ms interval on both sides, want at least 2", c+s)
	}
	if c == 0 || s == 0 {
		t.Errorf("each side should have re-attested its peer at least once (client %d, server %d)", c, s)
	}
	for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
		if err := c.Err(); err != nil {
			t.Errorf("%s closed: %v", who, err)
		}
	}
}

// TestIntegrationBackPressure: with RecvQueue=2 a server that does not call
// Recv holds the ACK of the third message, so the client's third Send does
// not complete until the server calls Recv; the message is then delivered
// exactly once although the client kept retransmitting it.
func TestIntegrationBackPressure(t *testing.T) {
	checkNoLeak(t)
	ccfg, scfg := itConfig(testPKI.Client), itConfig(testPKI.Server)
	ccfg.AckTimeout = 10 * time.Millisecond // many retransmissions while the ACK is held
	scfg.RecvQueue = 2
	p := connectPair(t, ccfg, scfg)
	ctx := itCtx(t)

	for i := 1; i <= 2; i++ {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.client.Send(sctx, fmt.Appendf(nil, "m%d", i))
		cancel()
		if err != nil {
			t.Fatalf("send m%d with %d of RecvQueue=2 messages waiting on the server: %v", i, i-1, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := p.client.Send(short, []byte("m3"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Send with the server's queue full: %v, want context.DeadlineExceeded", err)
	}
	// The fourth Send queues behind the unacknowledged third message.
	fourth := make(chan error, 1)
	go func() { fourth <- p.client.Send(ctx, []byte("m4")) }()

	for i := 1; i <= 4; i++ {
		m, err := p.server.Recv(ctx)
		if err != nil {
			t.Fatalf("server recv #%d: %v", i, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m) != want {
			t.Fatalf("server received %q, want %q", m, want)
		}
	}
	if err := <-fourth; err != nil {
		t.Fatalf("fourth Send: %v", err)
	}
	expectNothing(t, "server", p.server)
	checkEcho(t, p.client, p.server, "after back-pressure")
}

// TestIntegrationSendWaitsForReAttestation: a Send issued while the
// connection re-attests its peer waits, and succeeds once it is established
// again (the reference fails it with NOT_CONNECTED; this API waits).
func TestIntegrationSendWaitsForReAttestation(t *testing.T) {
	checkNoLeak(t)
	const gated = "Gated"
	var runs atomic.Int32
	gate := make(chan struct{})
	started := make(chan struct{}, 4)
	creg := attestation.Default()
	creg.RegisterProver(gated, okProver())
	creg.RegisterVerifier(gated, attestation.VerifierFunc(func(ctx context.Context, _ *attestation.Session) error {
		if runs.Add(1) == 1 {
			return nil // the handshake
		}
		started <- struct{}{}
		select { // re-attestations wait for the test
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	sreg := attestation.Default()
	sreg.RegisterProver(gated, okProver())
	sreg.RegisterVerifier(gated, okVerifier())
	ccfg := withSuites(itConfig(testPKI.Client), creg, []string{gated}, []string{gated})
	scfg := withSuites(itConfig(testPKI.Server), sreg, []string{gated}, []string{gated})
	p := connectPair(t, ccfg, scfg)
	ctx := itCtx(t)

	if err := p.client.ReAttest(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the re-attestation did not start the verifier")
	}
	if st := p.client.State(); st.Connected() {
		t.Fatalf("client state %s while its verifier runs", st)
	}
	sent := make(chan error, 1)
	go func() { sent <- p.client.Send(ctx, []byte("during RA")) }()
	select {
	case err := <-sent:
		t.Fatalf("Send returned %v while the peer was being re-attested", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if err := <-sent; err != nil {
		t.Fatalf("Send during re-attestation: %v", err)
	}
	m, err := p.server.Recv(ctx)
	if err != nil || string(m) != "during RA" {
		t.Fatalf("server Recv = %q, %v", m, err)
	}
	expectNothing(t, "server", p.server)
	if st := p.client.State(); !st.Connected() {
		t.Errorf("client state %s after the re-attestation", st)
	}
}

// TestIntegrationSendErrors: payloads over MaxFrameSize are refused before
// anything is sent; a closed connection refuses everything with ErrClosed.
func TestIntegrationSendErrors(t *testing.T) {
	checkNoLeak(t)
	ccfg := itConfig(testPKI.Client)
	ccfg.MaxFrameSize = 1024
	scfg := itConfig(testPKI.Server)
	scfg.MaxFrameSize = 1024
	p := connectPair(t, ccfg, scfg)
	ctx := itCtx(t)

	// IdscpMessage{IdscpData{data: 1016 bytes, alternatingBit: true}} is
	// exactly 1024 bytes; one byte more does not fit.
	fits := make([]byte, 1016)
	for i := range fits {
		fits[i] = byte(i)
	}
	if err := p.client.Send(ctx, fits); err != nil {
		t.Fatalf("Send of the largest payload that fits: %v", err)
	}
	if m, err := p.server.Recv(ctx); err != nil || !slices.Equal(m, fits) {
		t.Fatalf("server Recv: %d bytes, %v", len(m), err)
	}
	for _, size := range []int{1017, 2000, 1 << 20} {
		if err := p.client.Send(ctx, make([]byte, size)); !errors.Is(err, ErrMessageTooLarge) {
			t.Errorf("Send of %d bytes with MaxFrameSize 1024: %v, want ErrMessageTooLarge", size, err)
		}
	}
	checkEcho(t, p.client, p.server, "after refused sends")

	p.client.Close()
	waitDone(t, "server", p.server)
	for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
		if err := c.Send(ctx, []byte("late")); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: Send after close: %v, want ErrClosed", who, err)
		}
		if _, err := c.Recv(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: Recv after close: %v, want ErrClosed", who, err)
		}
		if err := c.ReAttest(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: ReAttest after close: %v, want ErrClosed", who, err)
		}
		if err := c.Ready(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: Ready after close: %v, want ErrClosed", who, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: second Close: %v", who, err)
		}
	}
}
