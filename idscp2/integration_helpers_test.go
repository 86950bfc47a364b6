package idscp2

// Helpers shared by the integration tests (integration_*_test.go): raw TLS
// peers that speak IDSCP2 frames by hand, attestation drivers with scripted
// behaviour, a recorder for state changes and a message-stream checker.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// itWait bounds every wait of the integration tests; nothing is expected to
// take more than a fraction of it.
const itWait = 10 * time.Second

// itCtx is a context that ends after itWait or when the test ends.
func itCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), itWait)
	t.Cleanup(cancel)
	return ctx
}

// itConfig is testConfig with a handshake timeout short enough that a hung
// handshake fails the test quickly but long enough for the race detector.
func itConfig(leaf *testpki.Leaf) *Config {
	cfg := testConfig(leaf)
	cfg.HandshakeTimeout = 5 * time.Second
	return cfg
}

// withSuites sets the registry and the suite lists.
func withSuites(cfg *Config, reg *attestation.Registry, supported, expected []string) *Config {
	cfg.Attestation = reg
	cfg.SupportedSuites = supported
	cfg.ExpectedSuites = expected
	return cfg
}

// hsErrors makes the listener configured by cfg report failed handshakes on
// the returned channel.
func hsErrors(cfg *Config) <-chan error {
	ch := make(chan error, 16)
	cfg.OnHandshakeError = func(_ net.Addr, err error) {
		select {
		case ch <- err:
		default:
		}
	}
	return ch
}

// nextHSErr waits for the next handshake error of a listener.
func nextHSErr(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		if err == nil {
			t.Fatal("OnHandshakeError called with a nil error")
		}
		return err
	case <-time.After(itWait):
		t.Fatal("the listener did not report a failed handshake")
		return nil
	}
}

// noHSErr fails if the listener reported a failed handshake.
func noHSErr(t testing.TB, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("unexpected handshake error on the listener: %v", err)
	default:
	}
}

// asCloseError returns the *CloseError in err's chain or fails the test.
func asCloseError(t testing.TB, err error) *CloseError {
	t.Helper()
	if err == nil {
		t.Fatal("expected an error, got nil")
	}
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("error %q (%T) has no *CloseError in its chain", err, err)
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("error %q does not match ErrClosed", err)
	}
	return ce
}

// wantClose checks a CloseError's cause, message and direction.
func wantClose(t testing.TB, who string, ce *CloseError, cause pb.IdscpClose_CloseCause, msg string, sent, remote bool) {
	t.Helper()
	if ce.Cause != cause || ce.Message != msg || ce.Sent != sent || ce.Remote != remote {
		t.Errorf("%s: close = {Cause %s, Message %q, Sent %v, Remote %v} (%v); want {Cause %s, Message %q, Sent %v, Remote %v}",
			who, ce.Cause, ce.Message, ce.Sent, ce.Remote, ce, cause, msg, sent, remote)
	}
}

// waitDone waits until c has closed and all its goroutines have exited.
func waitDone(t testing.TB, who string, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(itWait):
		t.Fatalf("%s: connection did not close (state %s)", who, c.State())
	}
}

// dialAccept dials ln with clientCfg and accepts the server side; both are
// closed when the test ends.
func dialAccept(t testing.TB, ln *Listener, clientCfg *Config) (client, server *Conn) {
	t.Helper()
	ctx := itCtx(t)
	type res struct {
		c   *Conn
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := ln.Accept(ctx)
		accepted <- res{c, err}
	}()
	client, err := Dial(ctx, "tcp", dialAddr(ln), clientCfg)
	if err != nil {
		<-accepted // ctx ends the Accept at the latest
		t.Fatalf("dial: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		client.Close()
		t.Fatalf("accept: %v", r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// xfer sends msg from one side and checks that the other receives it.
func xfer(t testing.TB, ctx context.Context, from, to *Conn, msg string) {
	t.Helper()
	if err := from.Send(ctx, []byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	got, err := to.Recv(ctx)
	if err != nil {
		t.Fatalf("recv %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("received %q, want %q", got, msg)
	}
}

// checkEcho proves a connection pair still works in both directions.
func checkEcho(t testing.TB, client, server *Conn, tag string) {
	t.Helper()
	ctx := itCtx(t)
	xfer(t, ctx, client, server, tag+" c→s")
	xfer(t, ctx, server, client, tag+" s→c")
}

// expectNothing checks that no further message is waiting on c.
func expectNothing(t testing.TB, who string, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if m, err := c.Recv(ctx); err == nil {
		t.Errorf("%s: unexpected extra message %q", who, m)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: Recv: %v", who, err)
	}
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines still run, want at most %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- state changes ----

type transition struct {
	c        *Conn
	from, to fsm.State
}

// stateLog records the state changes of every connection whose Config it
// hooked.
type stateLog struct {
	mu  sync.Mutex
	log []transition
}

func (l *stateLog) hook(cfg *Config) *Config {
	cfg.OnStateChange = func(c *Conn, from, to fsm.State) {
		l.mu.Lock()
		l.log = append(l.log, transition{c, from, to})
		l.mu.Unlock()
	}
	return cfg
}

// count counts the recorded transitions of c (nil: of every connection)
// that match.
func (l *stateLog) count(c *Conn, match func(from, to fsm.State) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, tr := range l.log {
		if (c == nil || tr.c == c) && match(tr.from, tr.to) {
			n++
		}
	}
	return n
}

// reAttestation matches the start of a re-attestation of the peer
// (REPEAT_RA, from the user or the RA timer: IdscpReRa sent), from an
// established connection or while the peer re-attests this side.
func reAttestation(from, to fsm.State) bool {
	return from.Connected() && to == fsm.WaitForRaVerifier ||
		from == fsm.WaitForRaProver && to == fsm.WaitForRa
}

// datExpiry matches the start of a DAT renewal (DAT_TIMER_EXPIRED:
// IdscpDatExpired sent): entering WAIT_FOR_DAT_AND_RA_VERIFIER (from an
// established connection) or WAIT_FOR_DAT_AND_RA (during an attestation),
// but not moving between the two.
func datExpiry(from, to fsm.State) bool {
	waiting := func(s fsm.State) bool { return s == fsm.WaitForDatAndRaVerifier || s == fsm.WaitForDatAndRa }
	return waiting(to) && !waiting(from)
}

// ---- attestation drivers ----

func okProver() attestation.Prover {
	return attestation.ProverFunc(func(context.Context, *attestation.Session) error { return nil })
}

func okVerifier() attestation.Verifier {
	return attestation.VerifierFunc(func(context.Context, *attestation.Session) error { return nil })
}

func failingProver() attestation.Prover {
	return attestation.ProverFunc(func(context.Context, *attestation.Session) error {
		return errors.New("test prover refuses to prove")
	})
}

func failingVerifier() attestation.Verifier {
	return attestation.VerifierFunc(func(context.Context, *attestation.Session) error {
		return errors.New("test verifier refuses the peer")
	})
}

// hangingProver never finishes on its own.
func hangingProver() attestation.Prover {
	return attestation.ProverFunc(func(ctx context.Context, _ *attestation.Session) error {
		<-ctx.Done()
		return ctx.Err()
	})
}

// waitingVerifier waits for one prover message, as the NullRa verifier,
// so the handshake cannot complete before the prover side has reported.
func waitingVerifier() attestation.Verifier {
	return attestation.VerifierFunc(func(ctx context.Context, s *attestation.Session) error {
		if _, err := s.Recv(ctx); err != nil {
			return err
		}
		return s.Send(nil)
	})
}

// waitingProver waits for a verifier message that never comes.
func waitingProver() attestation.Prover {
	return attestation.ProverFunc(func(ctx context.Context, s *attestation.Session) error {
		_, err := s.Recv(ctx)
		return err
	})
}

// ---- DAT drivers ----

// refusingDAT issues a token but refuses every peer token, as the
// reference's DapsRejector.
type refusingDAT struct{}

func (refusingDAT) Token(context.Context) ([]byte, error) { return []byte("refusing-dat-token"), nil }
func (refusingDAT) Verify(context.Context, []byte, *x509.Certificate) (*dat.Identity, error) {
	return nil, dat.Refuse(dat.ReasonSignature, "the test driver refuses every DAT")
}
func (refusingDAT) RenewalThreshold() float64 { return 1 }

// ---- raw IDSCP2 framing ----

func frameBytes(payload []byte) []byte {
	b := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// writeRawMsg writes one framed message in a single write.
func writeRawMsg(w io.Writer, m *pb.IdscpMessage) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(frameBytes(b))
	return err
}

// readRawFrame reads one length-prefixed frame.
func readRawFrame(r io.Reader) ([]byte, error) {
	var p [4]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(p[:]))
	if n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("bad frame length %d", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func readRawMsg(r io.Reader) (*pb.IdscpMessage, error) {
	b, err := readRawFrame(r)
	if err != nil {
		return nil, err
	}
	m := &pb.IdscpMessage{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("unmarshal %x: %w", b, err)
	}
	return m, nil
}

func helloMsg(token string, supported, expected []string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpHello{IdscpHello: &pb.IdscpHello{
		Version:               2,
		DynamicAttributeToken: &pb.IdscpDat{Token: []byte(token)},
		SupportedRaSuite:      supported,
		ExpectedRaSuite:       expected,
	}}}
}

func dataMsg(payload string, bit bool) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpData{IdscpData: &pb.IdscpData{Data: []byte(payload), AlternatingBit: bit}}}
}

// ---- raw TLS peers ----

// rawClientTLS is a TLS 1.3 client configuration presenting leaf (nil: no
// certificate) and trusting the test CA.
func rawClientTLS(leaf *testpki.Leaf) *tls.Config {
	cfg := &tls.Config{
		RootCAs:    testPKI.CA.Pool(),
		ServerName: "localhost",
		MinVersion: tls.VersionTLS13,
	}
	if leaf != nil {
		cfg.Certificates = []tls.Certificate{leaf.TLS}
	}
	return cfg
}

// rawDial connects a raw TLS client to ln and completes the TLS handshake.
func rawDial(t testing.TB, ln *Listener, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: itWait}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), itWait)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	tc := nc.(*tls.Conn)
	t.Cleanup(func() { tc.Close() })
	return tc, nil
}

// rawPeer is a hand-driven IDSCP2 client: TLS done, Hello exchanged.
type rawPeer struct {
	*tls.Conn
	server *Conn // the listener's side, established
}

// rawEstablish dials ln as a raw client, sends a Hello with the NullDaps
// token and the Dummy2 suite, reads the listener's Hello and accepts the
// listener's connection, which is then ESTABLISHED (Dummy2 needs no RA
// messages).
func rawEstablish(t testing.TB, ln *Listener) *rawPeer {
	t.Helper()
	tc, err := rawDial(t, ln, rawClientTLS(testPKI.Client))
	if err != nil {
		t.Fatalf("raw TLS dial: %v", err)
	}
	tc.SetDeadline(time.Now().Add(itWait))
	if err := writeRawMsg(tc, helloMsg(dat.NullToken, []string{attestation.Dummy2}, []string{attestation.Dummy2})); err != nil {
		t.Fatalf("raw Hello: %v", err)
	}
	m, err := readRawMsg(tc)
	if err != nil {
		t.Fatalf("reading the listener's Hello: %v", err)
	}
	if h := m.GetIdscpHello(); h == nil || h.GetVersion() != 2 {
		t.Fatalf("first message from the listener is %v, want IdscpHello version 2", m)
	}
	server, err := ln.Accept(itCtx(t))
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { server.Close() })
	if st := server.State(); st != fsm.Established {
		t.Fatalf("accepted connection in %s", st)
	}
	return &rawPeer{Conn: tc, server: server}
}

// ---- message streams ----

// stream sends numbered messages from one side for d, then an end marker,
// while the other side checks that every message arrives exactly once and
// in order. It returns the number of data messages and the first error.
func stream(ctx context.Context, from, to *Conn, tag string, d time.Duration) (int, error) {
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
