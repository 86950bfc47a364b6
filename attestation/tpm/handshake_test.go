package tpm_test

// Full IDSCP2 connections over loopback TLS with the TPM suite.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// side is one peer's attestation set-up.
type side struct {
	reg                 *attestation.Registry
	supported, expected []string
	dat                 dat.Driver
	raInterval          time.Duration
	ackTimeout          time.Duration
}

func tpmSide(p attestation.Prover, v attestation.Verifier) side {
	reg := attestation.Default()
	s := side{reg: reg, supported: []string{attestation.Dummy2}, expected: []string{attestation.Dummy2}}
	if p != nil {
		reg.RegisterProver(tpm.Suite, p)
		s.supported = []string{tpm.Suite}
	}
	if v != nil {
		reg.RegisterVerifier(tpm.Suite, v)
		s.expected = []string{tpm.Suite}
	}
	return s
}

func idscpConfig(leaf *testpki.Leaf, s side) *idscp2.Config {
	cert := leaf.TLS
	d := s.dat
	if d == nil {
		d = dat.NewNull(quietLogger())
	}
	return &idscp2.Config{
		Certificate:      &cert,
		Roots:            testPKI.CA.Pool(),
		DAT:              d,
		Attestation:      s.reg,
		SupportedSuites:  s.supported,
		ExpectedSuites:   s.expected,
		HandshakeTimeout: 10 * time.Second,
		RaInterval:       s.raInterval,
		AckTimeout:       s.ackTimeout,
		Logger:           quietLogger(),
	}
}

// server is a listener that reports accepted connections and failed
// handshakes.
type server struct {
	ln      *idscp2.Listener
	hsErr   chan error
	addr    string
	accepts chan *idscp2.Conn
}

func listen(t testing.TB, s side) *server {
	t.Helper()
	cfg := idscpConfig(testPKI.Server, s)
	srv := &server{hsErr: make(chan error, 16), accepts: make(chan *idscp2.Conn, 16)}
	cfg.OnHandshakeError = func(_ net.Addr, err error) {
		select {
		case srv.hsErr <- err:
		default:
		}
	}
	ln, err := idscp2.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.ln = ln
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	srv.addr = net.JoinHostPort("localhost", port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			srv.accepts <- c
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		close(srv.accepts)
		for c := range srv.accepts {
			c.Close()
		}
	})
	return srv
}

func (s *server) accept(t testing.TB) *idscp2.Conn {
	t.Helper()
	select {
	case c := <-s.accepts:
		return c
	case err := <-s.hsErr:
		t.Fatalf("server handshake failed: %v", err)
	case <-time.After(testWait):
		t.Fatal("no connection accepted")
	}
	return nil
}

func (s *server) nextHSErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.hsErr:
		return err
	case <-time.After(testWait):
		t.Fatal("the listener reported no failed handshake")
		return nil
	}
}

func dial(t testing.TB, srv *server, s side) (*idscp2.Conn, error) {
	t.Helper()
	c, err := idscp2.Dial(testCtx(t), "tcp", srv.addr, idscpConfig(testPKI.Client, s))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func closeError(t testing.TB, who string, err error) *idscp2.CloseError {
	t.Helper()
	var ce *idscp2.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: error %v (%T) has no *idscp2.CloseError", who, err, err)
	}
	return ce
}

// echo sends msg each way and checks it arrives.
func echo(t testing.TB, a, b *idscp2.Conn, msg string) {
	t.Helper()
	ctx := testCtx(t)
	for _, dir := range [][2]*idscp2.Conn{{a, b}, {b, a}} {
		errc := make(chan error, 1)
		go func() { errc <- dir[0].Send(ctx, []byte(msg)) }()
		got, err := dir[1].Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if string(got) != msg {
			t.Fatalf("got %q, want %q", got, msg)
		}
		if err := <-errc; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// TestHandshakeBothDirections: both peers prove and verify with TPM; golden
// values from a local file or from the peer's DAT claim pcrGoldenValues.
func TestHandshakeBothDirections(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		for _, tc := range []struct {
			name    string
			alg     tpm.KeyAlgorithm
			fromDAT bool
			atype   tpmpb.IdsAttestationType
			mask    tpm.PCRMask
		}{
			{name: "rsa/local-golden/basic", alg: tpm.RSA2048},
			{name: "ecc/dat-golden/all", alg: tpm.ECCP256, fromDAT: true, atype: tpmpb.IdsAttestationType_ALL},
			{name: "rsa/dat-golden/advanced", alg: tpm.RSA2048, fromDAT: true, atype: tpmpb.IdsAttestationType_ADVANCED, mask: 0x810081},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newRig(t, be, tc.alg)
				rs := newReasons()
				v := r.verifier(t, rs, func(c *tpm.VerifierConfig) {
					c.AttestationType, c.PCRMask = tc.atype, tc.mask
					if tc.fromDAT {
						c.Golden, c.GoldenFromDAT = nil, true
					}
				})
				p := r.prover(t, func(c *tpm.ProverConfig) { c.OnFailure = rs.hook })
				cs, ss := tpmSide(p, v), tpmSide(p, v)
				if tc.fromDAT {
					cs.dat, ss.dat = goldenDATs(t, r.pcrs)
				}
				srv := listen(t, ss)
				c, err := dial(t, srv, cs)
				if err != nil {
					t.Fatal(err)
				}
				sc := srv.accept(t)
				if pr, vr := c.Suites(); pr != tpm.Suite || vr != tpm.Suite {
					t.Fatalf("suites %s/%s", pr, vr)
				}
				echo(t, c, sc, "attested")
				if n := r.count.quotes.Load(); n != 2 {
					t.Errorf("%d quotes, want 2 (one per direction)", n)
				}
				rs.none(t)
			})
		}
	})
}

// goldenDATs returns DAT drivers for client and server that carry the
// golden values in pcrGoldenValues and trust one shared issuer.
func goldenDATs(t testing.TB, pcrs tpm.PCRValues) (client, srv dat.Driver) {
	t.Helper()
	claim, err := tpm.GoldenValuesClaim(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	return localDAT(t, testPKI.Client, claim), localDAT(t, testPKI.Server, claim)
}

var datIssuer = func() *dat.LocalIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	iss, err := dat.NewLocalIssuer("https://daps.test.invalid", key, "k1")
	if err != nil {
		panic(err)
	}
	return iss
}()

func localDAT(t testing.TB, leaf *testpki.Leaf, golden any) dat.Driver {
	t.Helper()
	claims := map[string]any{}
	if golden != nil {
		claims[tpm.ClaimGoldenValues] = golden
	}
	d, err := dat.NewLocal(dat.LocalConfig{Issuer: datIssuer, Cert: leaf.Cert, Claims: claims})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReAttestation: IdscpReRa (Conn.ReAttest) and the periodic timer run
// the TPM suite again while data flows.
func TestReAttestation(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		r := newRig(t, be, tpm.ECCP256)
		rs := newReasons()
		v := r.verifier(t, rs, nil)
		p := r.prover(t, func(c *tpm.ProverConfig) { c.OnFailure = rs.hook })
		// The server re-attests the client periodically. The interval must
		// exceed the ACK timeout: data that arrives during a re-attestation
		// is dropped and resent one ACK timeout after it (as in the
		// reference), so with RaInterval < AckTimeout the resent message
		// would always meet the next re-attestation.
		ss, cs := tpmSide(p, v), tpmSide(p, v)
		ss.raInterval, ss.ackTimeout, cs.ackTimeout = 150*time.Millisecond, 30*time.Millisecond, 30*time.Millisecond
		srv := listen(t, ss)
		c, err := dial(t, srv, cs)
		if err != nil {
			t.Fatal(err)
		}
		sc := srv.accept(t)
		base := r.count.quotes.Load()

		if err := c.ReAttest(); err != nil { // the client asks the server to prove again
			t.Fatal(err)
		}
		// Data keeps flowing until the peers have attested at least four
		// more times (one ReAttest, periodic ones).
		deadline := time.Now().Add(testWait)
		for i := 0; r.count.quotes.Load() < base+4; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("only %d re-attestations", r.count.quotes.Load()-base)
			}
			echo(t, c, sc, fmt.Sprintf("message %d", i))
		}
		echo(t, c, sc, "after re-attestation")
		rs.none(t)
		if c.Err() != nil || sc.Err() != nil {
			t.Fatalf("closed: %v / %v", c.Err(), sc.Err())
		}
	})
}

// tamperProver answers challenges through a real prover and then tampers
// with the challenge it quotes or the response it sends. Like tpm.Prover it
// waits for the verifier's close after a refusal.
type tamperProver struct {
	p        *tpm.Prover
	modCh    func(*tpmpb.TpmChallenge)
	modResp  func(*tpmpb.TpmResponse)
	replay   *tpmpb.TpmResponse // sent instead of a fresh response, if set
	record   **tpmpb.TpmResponse
	raw      []byte // sent instead of a TpmMessage, if set
	refusals chan struct{}
}

func (tp *tamperProver) Prove(ctx context.Context, s *attestation.Session) error {
	in, err := s.Recv(ctx)
	if err != nil {
		return err
	}
	m, err := tpm.DecodeTpmMessage(in)
	if err != nil {
		return err
	}
	ch := m.GetRatChallenge()
	out := tp.raw
	if out == nil {
		resp := tp.replay
		if resp == nil {
			q := proto.Clone(ch).(*tpmpb.TpmChallenge)
			if tp.modCh != nil {
				tp.modCh(q)
			}
			if resp, err = tp.p.Respond(ctx, q, s.PeerCert); err != nil {
				return err
			}
			if tp.modResp != nil {
				tp.modResp(resp)
			}
			if tp.record != nil {
				*tp.record = resp
			}
		}
		if out, err = tpm.EncodeTpmMessage(resp); err != nil {
			return err
		}
	}
	if err := s.Send(out); err != nil {
		return err
	}
	in, err = s.Recv(ctx)
	if err != nil {
		return err
	}
	if m, err = tpm.DecodeTpmMessage(in); err != nil {
		return err
	}
	if m.GetRatResult().GetResult() {
		return nil
	}
	if tp.refusals != nil {
		tp.refusals <- struct{}{}
	}
	<-ctx.Done() // the verifier's close stops us
	return errors.New("refused")
}

// TestRefusals: each kind of bad evidence is refused with its reason; the
// verifier closes with RA_VERIFIER_FAILED and the prover sees that close.
func TestRefusals(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		for _, tc := range []struct {
			name   string
			want   tpm.Reason
			prover func(t *testing.T, r *rig) attestation.Prover
			vmod   func(c *tpm.VerifierConfig)
			setup  func(t *testing.T, r *rig) // after the verifier took its golden values
			dats   func(t *testing.T, r *rig) (client, srv dat.Driver)
		}{
			{
				name: "PCR mismatch", want: tpm.ReasonPCRMismatch,
				vmod: func(c *tpm.VerifierConfig) { c.AttestationType = tpmpb.IdsAttestationType_ALL },
				setup: func(t *testing.T, r *rig) {
					if err := r.tpm.ExtendPCR(testCtx(t), 16, bytes.Repeat([]byte{1}, 32)); err != nil {
						t.Fatal(err)
					}
				},
			},
			{
				name: "PCR mismatch with DAT golden values", want: tpm.ReasonPCRMismatch,
				vmod: func(c *tpm.VerifierConfig) { c.Golden, c.GoldenFromDAT = nil, true },
				dats: func(t *testing.T, r *rig) (dat.Driver, dat.Driver) {
					g := tpm.PCRValues{}
					for i, v := range r.pcrs {
						g[i] = v
					}
					g[7] = bytes.Repeat([]byte{7}, 32)
					return goldenDATs(t, g)
				},
			},
			{
				name: "no golden values in the DAT", want: tpm.ReasonGoldenValues,
				vmod: func(c *tpm.VerifierConfig) { c.Golden, c.GoldenFromDAT = nil, true },
			},
			{
				name: "replayed quote", want: tpm.ReasonNonce,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					// Record an answer to an earlier challenge of the same
					// verifier (the listener's certificate), then replay it.
					var old *tpmpb.TpmResponse
					v := r.verifier(t, nil, nil)
					srv := listen(t, tpmSide(nil, v))
					rec := &tamperProver{p: r.prover(t, nil), record: &old}
					c, err := dial(t, srv, tpmSide(rec, nil))
					if err != nil {
						t.Fatal(err)
					}
					c.Close()
					return &tamperProver{p: r.prover(t, nil), replay: old}
				},
			},
			{
				name: "quote bound to another verifier certificate", want: tpm.ReasonNonce,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return proverFunc(func(ctx context.Context, s *attestation.Session) error {
						s2 := *s
						s2.PeerCert = testPKI.Client.Cert // a relay: quote for someone else
						return (&tamperProver{p: r.prover(t, nil)}).Prove(ctx, &s2)
					})
				},
			},
			{
				name: "foreign AK", want: tpm.ReasonAKUntrusted,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return r.prover(t, func(c *tpm.ProverConfig) { c.Certificate = issueAK(t, testPKI.ForeignCA, r.ak, "foreign") })
				},
			},
			{
				name: "unpinned bare AK key", want: tpm.ReasonAKUntrusted,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return r.prover(t, func(c *tpm.ProverConfig) { c.Certificate = nil })
				},
			},
			{
				name: "tampered quote bytes", want: tpm.ReasonSignature,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{p: r.prover(t, nil), modResp: func(resp *tpmpb.TpmResponse) {
						att, err := tpm.ParseAttest(resp.Quoted)
						if err != nil {
							panic(err)
						}
						att.Attest.FirmwareVersion ^= 1
						resp.Quoted = tpm2.Marshal(*att.Attest)
					}}
				},
			},
			{
				name: "tampered signature", want: tpm.ReasonSignature,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{p: r.prover(t, nil), modResp: func(resp *tpmpb.TpmResponse) {
						resp.Signature[len(resp.Signature)-1] ^= 0x80
					}}
				},
			},
			{
				name: "wrong mask", want: tpm.ReasonPCRSelection,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{p: r.prover(t, nil),
						modCh: func(ch *tpmpb.TpmChallenge) {
							adv, mask := tpmpb.IdsAttestationType_ADVANCED, uint32(0xff)
							ch.Atype, ch.PcrIndices = &adv, &mask
						},
						modResp: func(resp *tpmpb.TpmResponse) {
							basic := tpmpb.IdsAttestationType_BASIC
							resp.Atype = &basic
						}}
				},
			},
			{
				name: "wrong attestation type", want: tpm.ReasonAttestationType,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{p: r.prover(t, nil), modCh: func(ch *tpmpb.TpmChallenge) {
						all := tpmpb.IdsAttestationType_ALL
						ch.Atype = &all
					}}
				},
			},
			{
				name: "reported PCR value not the quoted one", want: tpm.ReasonPCRDigest,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{p: r.prover(t, nil), modResp: func(resp *tpmpb.TpmResponse) {
						resp.PcrValues[3].Value = bytes.Repeat([]byte{3}, 32)
					}}
				},
			},
			{
				name: "malformed message", want: tpm.ReasonMalformed,
				prover: func(t *testing.T, r *rig) attestation.Prover {
					return &tamperProver{raw: []byte{0x12, 0x03, 0x0a, 0x01}}
				},
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newRig(t, be, tpm.ECCP256)
				vrs, prs := newReasons(), newReasons()
				v := r.verifier(t, vrs, tc.vmod)
				var p attestation.Prover = r.prover(t, func(c *tpm.ProverConfig) { c.OnFailure = prs.hook })
				if tc.prover != nil {
					p = tc.prover(t, r)
				}
				if tc.setup != nil {
					tc.setup(t, r)
				}
				cs, ss := tpmSide(p, nil), tpmSide(nil, v)
				if tc.dats != nil {
					cs.dat, ss.dat = tc.dats(t, r)
				} else if tc.vmod != nil {
					cs.dat, ss.dat = localDAT(t, testPKI.Client, nil), localDAT(t, testPKI.Server, nil)
				}
				srv := listen(t, ss)
				_, err := dial(t, srv, cs)
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				ce := closeError(t, "prover (client)", err)
				if ce.Cause != pb.IdscpClose_RA_VERIFIER_FAILED || !ce.Remote || ce.Sent {
					t.Errorf("prover side: %v; want the peer's RA_VERIFIER_FAILED", ce)
				}
				se := closeError(t, "verifier (listener)", srv.nextHSErr(t))
				if se.Cause != pb.IdscpClose_RA_VERIFIER_FAILED || !se.Sent || se.Remote {
					t.Errorf("verifier side: %v; want RA_VERIFIER_FAILED sent", se)
				}
				if got := vrs.next(t); got != string(tc.want) {
					t.Errorf("reason %q, want %q", got, tc.want)
				}
				if tc.prover == nil { // the real prover reports the refusal
					if got := prs.next(t); got != string(tpm.ReasonRefused) {
						t.Errorf("prover reason %q, want %q", got, tpm.ReasonRefused)
					}
				}
			})
		}
	})
}

type proverFunc func(ctx context.Context, s *attestation.Session) error

func (f proverFunc) Prove(ctx context.Context, s *attestation.Session) error { return f(ctx, s) }

// TestSlowTPMDoesNotBlockOtherHandshakes: while one client's TPM is stuck in
// a command (the slow transport's gate is closed, after 300 ms per command),
// another client with another TPM completes its handshake with the same
// listener; the slow one completes once the gate opens.
func TestSlowTPMDoesNotBlockOtherHandshakes(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		r := newRig(t, be, tpm.ECCP256)
		sl := &slow{delay: 300 * time.Millisecond, entered: make(chan struct{}, 1)}
		slowTPM := r.newTPM(func(tr transport.TPM) transport.TPM { sl.inner = tr; return sl })
		ctx := testCtx(t)
		slowAK, err := tpm.CreateAK(ctx, slowTPM, tpm.AKOptions{Algorithm: tpm.ECCP256})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { slowAK.Close() })
		slowProver, err := tpm.NewProver(tpm.ProverConfig{AK: slowAK, Certificate: issueAK(t, testPKI.CA, slowAK, "slow"), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		srv := listen(t, tpmSide(nil, r.verifier(t, nil, nil)))

		release := sl.hold()
		defer release()
		type result struct {
			c   *idscp2.Conn
			err error
		}
		slowDone := make(chan result, 1)
		go func() {
			c, err := idscp2.Dial(ctx, "tcp", srv.addr, idscpConfig(testPKI.Client, tpmSide(slowProver, nil)))
			slowDone <- result{c, err}
		}()
		select {
		case <-sl.entered: // the slow client's prover is inside its TPM
		case <-time.After(testWait):
			t.Fatal("the slow prover never reached its TPM")
		}
		fast, err := dial(t, srv, tpmSide(r.prover(t, nil), nil))
		if err != nil {
			t.Fatalf("fast client: %v", err)
		}
		fastSrv := srv.accept(t)
		echo(t, fast, fastSrv, "fast")
		select {
		case res := <-slowDone:
			t.Fatalf("the slow handshake finished before its TPM answered: %v", res.err)
		default:
		}
		release()
		res := <-slowDone
		if res.err != nil {
			t.Fatalf("slow client: %v", res.err)
		}
		defer res.c.Close()
		echo(t, res.c, srv.accept(t), "slow")
	})
}
