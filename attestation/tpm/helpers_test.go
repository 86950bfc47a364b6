package tpm_test

// Test fixtures: TPM back ends (swtpm started per test; the in-process
// simulator in sim_test.go behind the tpmsimulator build tag), transports
// that share, count or slow down TPM access, and AK/certificate set-up.

import (
	"context"
	"crypto/x509/pkix"
	"encoding/binary"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/swtpmtest"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// testWait bounds every wait of these tests.
const testWait = 20 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}

func quietLogger() *slog.Logger {
	if os.Getenv("IDSCP2_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testPKI holds the TLS identities and the CAs that issue AK certificates
// (CA trusted, ForeignCA not).
var testPKI = func() *testpki.Bundle {
	b, err := testpki.NewBundle()
	if err != nil {
		panic(err)
	}
	return b
}()

// backend is a kind of TPM the tests run against.
type backend struct {
	name string
	// open returns a transport to a fresh (or reset) TPM for this test.
	open func(t testing.TB) transport.TPM
	// swtpm is the address of the data port when the back end is swtpm.
	swtpm func(tr transport.TPM) string
}

// backends lists the back ends compiled in; sim_test.go adds the simulator.
var backends = []backend{swtpmBackend}

var swtpmBackend = backend{
	name: "swtpm",
	open: func(t testing.TB) transport.TPM {
		inst := startSwtpm(t)
		tr, err := tpm.DialSwtpm(inst.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return &swtpmConn{TPMCloser: tr, addr: inst.addr}
	},
	swtpm: func(tr transport.TPM) string {
		if c, ok := tr.(*swtpmConn); ok {
			return c.addr
		}
		return ""
	},
}

type swtpmConn struct {
	transport.TPMCloser
	addr string
}

// swtpmInstance is a swtpm process started by a test.
type swtpmInstance struct {
	addr string // data port, 127.0.0.1:P
	dir  string // state directory
}

// shared makes one back-end transport usable by several *tpm.TPM at once
// (each TPM serialises only its own commands). It is not an io.Closer, so
// closing a TPM built on it leaves the back end open.
type shared struct {
	mu    sync.Mutex
	inner transport.TPM
}

func (s *shared) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inner.Send(cmd)
}

// counting counts TPM2_Quote commands.
type counting struct {
	inner  transport.TPM
	quotes atomic.Int64
}

const ccQuote = 0x158

func (c *counting) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && binary.BigEndian.Uint32(cmd[6:10]) == ccQuote {
		c.quotes.Add(1)
	}
	return c.inner.Send(cmd)
}

// slow delays every command by delay; while gate is closed it first tells
// entered (once per command, without blocking) and waits for the gate.
type slow struct {
	inner   transport.TPM
	delay   time.Duration
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{}
}

func (s *slow) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	time.Sleep(s.delay)
	return s.inner.Send(cmd)
}

// hold closes the gate; the returned func opens it again.
func (s *slow) hold() (release func()) {
	g := make(chan struct{})
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(g)
		})
	}
}

// rig is one test's TPM: a back end, a TPM on it, an AK with a certificate
// from the trusted test CA, and the current PCR values.
type rig struct {
	be     backend
	base   transport.TPM // the back end's transport
	shared *shared
	count  *counting
	tpm    *tpm.TPM
	ak     *tpm.AK
	cert   []byte // AK certificate (DER), issued by testPKI.CA
	pcrs   tpm.PCRValues
}

func newRig(t testing.TB, be backend, alg tpm.KeyAlgorithm) *rig {
	t.Helper()
	base := be.open(t)
	sh := &shared{inner: base}
	cnt := &counting{inner: sh}
	r := &rig{be: be, base: base, shared: sh, count: cnt, tpm: tpm.New(cnt)}
	ctx := testCtx(t)
	ak, err := tpm.CreateAK(ctx, r.tpm, tpm.AKOptions{Algorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	r.ak = ak
	r.cert = issueAK(t, testPKI.CA, ak, "ak-"+be.name)
	r.pcrs, err = r.tpm.ReadPCRs(ctx, tpm.MaskAll)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func issueAK(t testing.TB, ca *testpki.CA, ak *tpm.AK, cn string) []byte {
	t.Helper()
	der, err := tpm.IssueAKCertificate(ca.Cert, ca.Key, ak.Public(), pkix.Name{CommonName: cn}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newTPM returns another TPM object on the rig's back end, with its own
// command serialisation, wrapping the transport with wrap if not nil.
func (r *rig) newTPM(wrap func(transport.TPM) transport.TPM) *tpm.TPM {
	var tr transport.TPM = r.shared
	if wrap != nil {
		tr = wrap(tr)
	}
	return tpm.New(tr)
}

func (r *rig) prover(t testing.TB, mod func(*tpm.ProverConfig)) *tpm.Prover {
	t.Helper()
	cfg := tpm.ProverConfig{AK: r.ak, Certificate: r.cert, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	p, err := tpm.NewProver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// reasons collects OnFailure calls.
type reasons struct{ ch chan string }

func newReasons() *reasons { return &reasons{ch: make(chan string, 16)} }

func (r *reasons) hook(reason string) {
	select {
	case r.ch <- reason:
	default:
	}
}

func (r *reasons) next(t testing.TB) string {
	t.Helper()
	select {
	case s := <-r.ch:
		return s
	case <-time.After(testWait):
		t.Fatal("no failure reported")
		return ""
	}
}

func (r *reasons) none(t testing.TB) {
	t.Helper()
	select {
	case s := <-r.ch:
		t.Fatalf("unexpected failure %q", s)
	default:
	}
}

func (r *rig) verifier(t testing.TB, rs *reasons, mod func(*tpm.VerifierConfig)) *tpm.Verifier {
	t.Helper()
	cfg := tpm.VerifierConfig{
		Roots:  testPKI.CA.Pool(),
		Golden: &tpm.GoldenValues{PCRs: r.pcrs},
		Logger: quietLogger(),
	}
	if rs != nil {
		cfg.OnFailure = rs.hook
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := tpm.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func eachBackend(t *testing.T, f func(t *testing.T, be backend)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { f(t, be) })
	}
}

// startSwtpm starts swtpm for one test (see swtpmtest.Start).
func startSwtpm(t testing.TB) *swtpmInstance {
	addr, dir := swtpmtest.Start(t)
	return &swtpmInstance{addr: addr, dir: dir}
}
