package tpm

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

// MinNonceSize is the shortest challenge nonce the prover answers.
const MinNonceSize = 8

// DefaultRefusalGrace is how long a refused prover waits for the verifier's
// IdscpClose before failing itself (see ProverConfig.RefusalGrace).
const DefaultRefusalGrace = 5 * time.Second

// ProverConfig configures a Prover.
type ProverConfig struct {
	// AK is the attestation key; its TPM is the one quoted.
	AK *AK
	// Certificate is the AK certificate (DER) sent in every response. If
	// nil, the AK's public key (DER SubjectPublicKeyInfo) is sent instead,
	// which only verifiers that pin the key accept.
	Certificate []byte
	// RefusalGrace: after a negative TpmResult the prover waits this long
	// for the verifier to close the connection (with RA_VERIFIER_FAILED, the
	// real cause) before failing with RA_PROVER_FAILED itself. 0 means
	// DefaultRefusalGrace; negative fails at once, as the reference does.
	RefusalGrace time.Duration
	// Logger receives a warning per failure; nil means slog.Default().
	Logger *slog.Logger
	// OnFailure, if set, is called with the Reason of every failed run. It
	// must not block.
	OnFailure func(reason string)
}

// Prover is the prover driver of suite TPM. It is safe for concurrent use:
// runs of several connections take turns at the TPM.
type Prover struct {
	cfg  ProverConfig
	cert []byte
	log  *slog.Logger
}

var _ attestation.Prover = (*Prover)(nil)

// NewProver checks cfg and returns a prover.
func NewProver(cfg ProverConfig) (*Prover, error) {
	if cfg.AK == nil {
		return nil, errors.New("tpm: prover needs an AK")
	}
	cert := cfg.Certificate
	if cert == nil {
		der, err := x509.MarshalPKIXPublicKey(cfg.AK.Public())
		if err != nil {
			return nil, err
		}
		cert = der
	} else {
		c, err := x509.ParseCertificate(cert)
		if err != nil {
			return nil, fmt.Errorf("tpm: AK certificate: %w", err)
		}
		if k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cfg.AK.Public()) {
			return nil, errors.New("tpm: the AK certificate is not for this AK")
		}
	}
	if cfg.RefusalGrace == 0 {
		cfg.RefusalGrace = DefaultRefusalGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Prover{cfg: cfg, cert: cert, log: log.With(slog.String("ra_suite", Suite), slog.String("role", "prover"))}, nil
}

// Prove runs the prover side of one attestation: wait for the challenge,
// quote, send the response, wait for the result.
func (p *Prover) Prove(ctx context.Context, s *attestation.Session) error {
	err := p.prove(ctx, s)
	// A stopped run is no failure, except a refusal, which waits for the stop.
	if r := ReasonOf(err); r != "" && (ctx.Err() == nil || r == ReasonRefused) {
		p.log.Warn("attestation failed", slog.String("reason", string(r)), slog.Any("err", err))
		if p.cfg.OnFailure != nil {
			p.cfg.OnFailure(string(r))
		}
	}
	return err
}

func (p *Prover) prove(ctx context.Context, s *attestation.Session) error {
	in, err := s.Recv(ctx)
	if err != nil {
		return err
	}
	m, err := DecodeTpmMessage(in)
	if err != nil {
		return err
	}
	ch := m.GetRatChallenge()
	if ch == nil {
		return fail(ReasonProtocol, "expected a TpmChallenge, got %T", m.GetMessage())
	}
	resp, err := p.Respond(ctx, ch, s.PeerCert)
	if err != nil {
		return err
	}
	b, err := EncodeTpmMessage(resp)
	if err != nil {
		return err
	}
	if err := s.Send(b); err != nil {
		return err
	}
	if in, err = recvResult(ctx, s); err != nil {
		return err
	}
	if m, err = DecodeTpmMessage(in); err != nil {
		return err
	}
	res := m.GetRatResult()
	if res == nil {
		return fail(ReasonProtocol, "expected a TpmResult, got %T", m.GetMessage())
	}
	if res.GetResult() {
		return nil
	}
	// Refused. The verifier closes the connection right after its result;
	// failing here at once would race that close with our own
	// RA_PROVER_FAILED and hide the real cause from both sides' logs.
	if p.cfg.RefusalGrace > 0 {
		t := time.NewTimer(p.cfg.RefusalGrace)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return fail(ReasonRefused, "the verifier refused our attestation")
}

// recvResult waits for the verifier's result. The verifier closes the
// connection right after a negative result, which stops this run; a result
// that arrived before the stop is still taken, so the refusal is reported.
func recvResult(ctx context.Context, s *attestation.Session) ([]byte, error) {
	in, err := s.Recv(ctx)
	if err != nil && ctx.Err() != nil {
		select {
		case m, ok := <-s.In:
			if ok {
				return m, nil
			}
		default:
		}
	}
	return in, err
}

// Respond answers a challenge: it quotes the PCRs ch asks for over
// Binding(ch.nonce, verifierCert) and returns the response. Only the nonce of
// the challenge it is given is ever quoted.
func (p *Prover) Respond(ctx context.Context, ch *tpmpb.TpmChallenge, verifierCert *x509.Certificate) (*tpmpb.TpmResponse, error) {
	if verifierCert == nil {
		return nil, errors.New("tpm: no verifier certificate to bind the quote to")
	}
	if n := len(ch.GetNonce()); n < MinNonceSize || n > maxNonce {
		return nil, fail(ReasonChallenge, "nonce of %d bytes (want %d..%d)", n, MinNonceSize, maxNonce)
	}
	mask, err := MaskFor(ch.GetAtype(), ch.GetPcrIndices())
	if err != nil {
		return nil, fail(ReasonChallenge, "%v", err)
	}
	q, err := p.cfg.AK.Quote(ctx, Binding(ch.GetNonce(), verifierCert), mask)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &Error{Reason: ReasonTPM, Err: err}
	}
	atype, hashAlg := ch.GetAtype(), PCRBank
	return &tpmpb.TpmResponse{
		Atype:       &atype,
		HashAlg:     &hashAlg,
		Quoted:      q.Attest,
		Signature:   q.Signature,
		PcrValues:   pcrList(q.PCRs),
		Certificate: p.cert,
	}, nil
}

// Register registers the prover and the verifier (either may be nil) for
// Suite in r.
func Register(r *attestation.Registry, p *Prover, v *Verifier) {
	if p != nil {
		r.RegisterProver(Suite, p)
	}
	if v != nil {
		r.RegisterVerifier(Suite, v)
	}
}
