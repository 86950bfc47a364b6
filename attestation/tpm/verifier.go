package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// DefaultNonceSize is the challenge nonce length, as the reference's.
const DefaultNonceSize = 20

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Roots are the CAs AK certificates must chain to, through
	// Intermediates if needed. The certificate must be valid now; its key
	// usages are not restricted.
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
	// PinnedKeys are AK public keys accepted without a certificate chain
	// (from AK.PublicKeyPEM, tpm2_createak -f pem, ...). With a pinned key
	// the peer may send a bare SubjectPublicKeyInfo instead of a
	// certificate. At least one of Roots and PinnedKeys is required.
	PinnedKeys []crypto.PublicKey

	// AttestationType and PCRMask are what the challenge asks for: BASIC
	// (PCR 0–11, the zero value and the reference's default), ALL (0–23) or
	// ADVANCED with the PCRs in PCRMask.
	AttestationType tpmpb.IdsAttestationType
	PCRMask         PCRMask

	// Golden are local golden values; GoldenFromDAT takes golden values from
	// the peer DAT's pcrGoldenValues claim, as the reference does. If both
	// are set, the PCRs must match both. At least one is required.
	Golden        *GoldenValues
	GoldenFromDAT bool

	// NonceSize is the challenge nonce length; 0 means DefaultNonceSize.
	NonceSize int
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
	// Logger receives a warning per refusal; nil means slog.Default().
	Logger *slog.Logger
	// OnFailure, if set, is called with the Reason of every refusal (for a
	// metric label). It must not block.
	OnFailure func(reason string)
}

// Verifier is the verifier driver of suite TPM. It is safe for concurrent
// use; every run is independent.
type Verifier struct {
	cfg  VerifierConfig
	mask PCRMask
	log  *slog.Logger

	mu      sync.Mutex
	trusted map[[32]byte]trustedAK // AK certificates whose chain verified
}

// trustedAK is a verified AK certificate and the window in which its
// chain is valid.
type trustedAK struct {
	key       crypto.PublicKey
	notBefore time.Time
	notAfter  time.Time
}

// maxTrustedAKs bounds the cache of verified AK certificates.
const maxTrustedAKs = 1024

var _ attestation.Verifier = (*Verifier)(nil)

// NewVerifier checks cfg and returns a verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Roots == nil && len(cfg.PinnedKeys) == 0 {
		return nil, errors.New("tpm: verifier needs Roots or PinnedKeys to trust AKs")
	}
	for _, k := range cfg.PinnedKeys {
		if err := keyOK(k); err != nil {
			return nil, fmt.Errorf("tpm: pinned AK key: %v", err)
		}
	}
	if cfg.Golden == nil && !cfg.GoldenFromDAT {
		return nil, errors.New("tpm: verifier needs golden values (Golden or GoldenFromDAT)")
	}
	mask, err := MaskFor(cfg.AttestationType, uint32(cfg.PCRMask))
	if err != nil {
		return nil, fmt.Errorf("tpm: verifier: %v", err)
	}
	if cfg.Golden != nil {
		if _, missing := cfg.Golden.mismatch(cfg.Golden.PCRs, mask); len(missing) > 0 {
			return nil, fmt.Errorf("tpm: golden values lack PCRs %v", missing)
		}
	}
	if cfg.NonceSize == 0 {
		cfg.NonceSize = DefaultNonceSize
	}
	if cfg.NonceSize < 8 || cfg.NonceSize > maxNonce {
		return nil, fmt.Errorf("tpm: nonce size %d not in 8..%d", cfg.NonceSize, maxNonce)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Verifier{cfg: cfg, mask: mask, log: log.With(slog.String("ra_suite", Suite), slog.String("role", "verifier"))}, nil
}

// Challenge returns a fresh challenge as this verifier sends it.
func (v *Verifier) Challenge() (*tpmpb.TpmChallenge, error) {
	nonce := make([]byte, v.cfg.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	atype, mask := v.cfg.AttestationType, uint32(v.cfg.PCRMask)
	if atype != tpmpb.IdsAttestationType_ADVANCED {
		mask = 0 // as the reference sends it
	}
	return &tpmpb.TpmChallenge{Atype: &atype, Nonce: nonce, PcrIndices: &mask}, nil
}

// Verify runs the verifier side of one attestation: challenge, check the
// response, send the result.
func (v *Verifier) Verify(ctx context.Context, s *attestation.Session) error {
	ch, err := v.Challenge()
	if err != nil {
		return err
	}
	b, err := EncodeTpmMessage(ch)
	if err != nil {
		return err
	}
	if err := s.Send(b); err != nil {
		return err
	}
	in, err := s.Recv(ctx)
	if err != nil {
		return err // the connection stopped the run: not a refusal
	}
	err = v.check(ch, in, s.LocalCert, s.PeerIdentity)
	ok := err == nil
	rb, encErr := EncodeTpmMessage(&tpmpb.TpmResult{Result: &ok})
	if encErr != nil {
		return encErr
	}
	sendErr := s.Send(rb)
	if err != nil {
		v.refused(err)
		return err
	}
	return sendErr
}

func (v *Verifier) check(ch *tpmpb.TpmChallenge, in []byte, localCert *x509.Certificate, peer *dat.Identity) error {
	m, err := DecodeTpmMessage(in)
	if err != nil {
		return err
	}
	resp := m.GetRatResponse()
	if resp == nil {
		return fail(ReasonProtocol, "expected a TpmResponse, got %T", m.GetMessage())
	}
	return v.CheckResponse(ch, resp, localCert, peer)
}

func (v *Verifier) refused(err error) {
	r := ReasonOf(err)
	v.log.Warn("peer attestation refused", slog.String("reason", string(r)), slog.Any("err", err))
	if v.cfg.OnFailure != nil {
		v.cfg.OnFailure(string(r))
	}
}

// Binding is the qualifying data of a quote answering nonce for a verifier
// whose TLS certificate is cert: SHA-1(nonce ‖ DER(cert)), as the reference
// computes it (TpmHelper.calculateHash).
func Binding(nonce []byte, cert *x509.Certificate) []byte {
	h := sha1.New()
	h.Write(nonce)
	h.Write(cert.Raw)
	return h.Sum(nil)
}

// CheckResponse checks a prover's response to ch. localCert is this
// verifier's TLS certificate (bound into the quote), peer the peer's verified
// DAT (for golden values from its claims; may be nil if GoldenFromDAT is
// off). A refusal is an *Error with its Reason.
func (v *Verifier) CheckResponse(ch *tpmpb.TpmChallenge, resp *tpmpb.TpmResponse, localCert *x509.Certificate, peer *dat.Identity) error {
	if localCert == nil {
		return errors.New("tpm: verifier has no local certificate to bind the quote to")
	}
	mask, err := MaskFor(ch.GetAtype(), ch.GetPcrIndices())
	if err != nil {
		return fmt.Errorf("tpm: own challenge: %v", err)
	}
	if err := checkResponseSizes(resp); err != nil {
		return err
	}
	if resp.GetAtype() != ch.GetAtype() {
		return fail(ReasonAttestationType, "asked for %v, got %v", ch.GetAtype(), resp.GetAtype())
	}
	if h := resp.GetHashAlg(); h != "" && !strings.EqualFold(h, PCRBank) {
		return fail(ReasonHashAlgorithm, "hash_alg %q, only %s is supported", h, PCRBank)
	}
	key, err := v.trustAK(resp.GetCertificate())
	if err != nil {
		return err
	}
	att, err := ParseAttest(resp.GetQuoted())
	if err != nil {
		return fail(ReasonQuoteMalformed, "%v", err)
	}
	sig, err := ParseSignature(resp.GetSignature())
	if err != nil {
		return fail(ReasonSignature, "%v", err)
	}
	h, err := verifySignature(key, sig, att.Signed)
	if err != nil {
		return err
	}
	if want := Binding(ch.GetNonce(), localCert); !hmac.Equal(att.Attest.ExtraData.Buffer, want) {
		return fail(ReasonNonce, "quote's extraData %x is not SHA-1(nonce ‖ own certificate) %x", att.Attest.ExtraData.Buffer, want)
	}
	if err := checkSelection(att.Quote.PCRSelect, mask); err != nil {
		return err
	}
	vals, err := reportedValues(resp.GetPcrValues(), mask)
	if err != nil {
		return err
	}
	if d := pcrDigest(h, vals, mask); !hmac.Equal(d, att.Quote.PCRDigest.Buffer) {
		return fail(ReasonPCRDigest, "quote's PCR digest %x is not the digest %x of the reported values", att.Quote.PCRDigest.Buffer, d)
	}
	if v.cfg.Golden != nil {
		if err := compareGolden(v.cfg.Golden, vals, mask, "local golden values"); err != nil {
			return err
		}
	}
	if v.cfg.GoldenFromDAT {
		var claim any
		if peer != nil {
			claim = peer.Claims[ClaimGoldenValues]
		}
		g, err := GoldenValuesFromClaim(claim)
		if err != nil {
			return fail(ReasonGoldenValues, "%v", err)
		}
		if err := compareGolden(g, vals, mask, "the DAT's "+ClaimGoldenValues); err != nil {
			return err
		}
	}
	return nil
}

func compareGolden(g *GoldenValues, vals PCRValues, mask PCRMask, source string) error {
	differ, missing := g.mismatch(vals, mask)
	if len(missing) > 0 {
		return fail(ReasonGoldenValues, "%s lack PCRs %v", source, missing)
	}
	if len(differ) > 0 {
		return fail(ReasonPCRMismatch, "PCRs %v differ from %s", differ, source)
	}
	return nil
}

// trustAK returns the AK public key if the peer's certificate field is
// trusted: a pinned key (as a certificate or a bare SubjectPublicKeyInfo) or
// a certificate chaining to Roots.
func (v *Verifier) trustAK(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, fail(ReasonAKUntrusted, "no AK certificate")
	}
	now := v.cfg.Now()
	id := sha256.Sum256(der)
	v.mu.Lock()
	t, ok := v.trusted[id]
	v.mu.Unlock()
	if ok && !now.Before(t.notBefore) && !now.After(t.notAfter) {
		return t.key, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		pub, perr := x509.ParsePKIXPublicKey(der)
		if perr != nil {
			return nil, fail(ReasonAKUntrusted, "AK certificate: %v", err)
		}
		if !v.pinned(pub) {
			return nil, fail(ReasonAKUntrusted, "bare AK public key is not pinned")
		}
		return pub, nil
	}
	if v.pinned(cert.PublicKey) {
		return cert.PublicKey, nil
	}
	if v.cfg.Roots == nil {
		return nil, fail(ReasonAKUntrusted, "AK key is not pinned")
	}
	if err := keyOK(cert.PublicKey); err != nil {
		return nil, fail(ReasonAKUntrusted, "AK certificate key: %v", err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.cfg.Roots,
		Intermediates: v.cfg.Intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fail(ReasonAKUntrusted, "AK certificate %q: %v", cert.Subject, err)
	}
	// Remember it for as long as the whole chain is valid.
	t = trustedAK{key: cert.PublicKey, notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	for _, c := range chains[0] {
		if c.NotBefore.After(t.notBefore) {
			t.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(t.notAfter) {
			t.notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	if v.trusted == nil || len(v.trusted) >= maxTrustedAKs {
		v.trusted = make(map[[32]byte]trustedAK)
	}
	v.trusted[id] = t
	v.mu.Unlock()
	return cert.PublicKey, nil
}

func (v *Verifier) pinned(pub crypto.PublicKey) bool {
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return false
	}
	for _, p := range v.cfg.PinnedKeys {
		if k.Equal(p) {
			return true
		}
	}
	return false
}

// verifySignature checks sig over msg with key and returns the signing hash.
func verifySignature(key crypto.PublicKey, sig *tpm2.TPMTSignature, msg []byte) (crypto.Hash, error) {
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return 0, fail(ReasonSignature, "RSA signature, %T AK", key)
		}
		var s *tpm2.TPMSSignatureRSA
		var err error
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return 0, fail(ReasonSignature, "%v", err)
		}
		h, err := signingHash(s.Hash)
		if err != nil {
			return 0, err
		}
		d := h.New()
		d.Write(msg)
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(k, h, d.Sum(nil), s.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(k, h, d.Sum(nil), s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h})
		}
		if err != nil {
			return 0, fail(ReasonSignature, "quote signature does not verify with the AK")
		}
		return h, nil
	case tpm2.TPMAlgECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return 0, fail(ReasonSignature, "ECDSA signature, %T AK", key)
		}
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return 0, fail(ReasonSignature, "%v", err)
		}
		h, err := signingHash(s.Hash)
		if err != nil {
			return 0, err
		}
		d := h.New()
		d.Write(msg)
		r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(k, d.Sum(nil), r, ss) {
			return 0, fail(ReasonSignature, "quote signature does not verify with the AK")
		}
		return h, nil
	default:
		return 0, fail(ReasonSignature, "signature scheme %#x", uint16(sig.SigAlg))
	}
}

func signingHash(alg tpm2.TPMIAlgHash) (crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, nil
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, nil
	default:
		return 0, fail(ReasonHashAlgorithm, "signature hash %#x (SHA-256, SHA-384 or SHA-512 required)", uint16(alg))
	}
}

// checkSelection requires the quote to cover exactly the PCRs in mask of
// the SHA-256 bank.
func checkSelection(sel tpm2.TPMLPCRSelection, mask PCRMask) error {
	var got PCRMask
	for _, s := range sel.PCRSelections {
		var m PCRMask
		for b, v := range s.PCRSelect {
			for bit := range 8 {
				if v&(1<<bit) == 0 {
					continue
				}
				if b*8+bit >= NumPCRs {
					return fail(ReasonPCRSelection, "quote selects PCR %d", b*8+bit)
				}
				m |= 1 << (b*8 + bit)
			}
		}
		if m == 0 {
			continue
		}
		if s.Hash != tpm2.TPMAlgSHA256 {
			return fail(ReasonHashAlgorithm, "quote covers PCR bank %#x, only %s is supported", uint16(s.Hash), PCRBank)
		}
		if got&m != 0 {
			return fail(ReasonPCRSelection, "quote selects PCRs twice")
		}
		got |= m
	}
	if got != mask {
		return fail(ReasonPCRSelection, "quote covers PCRs %v, asked for %v", got, mask)
	}
	return nil
}

// reportedValues checks that the response reports exactly the PCRs in mask,
// once each, with SHA-256 sized values.
func reportedValues(list []*tpmpb.Pcr, mask PCRMask) (PCRValues, error) {
	vals := make(PCRValues, len(list))
	for _, p := range list {
		i := int(p.GetNumber())
		if !mask.Has(i) {
			return nil, fail(ReasonPCRSelection, "PCR %d reported, not asked for", p.GetNumber())
		}
		if _, dup := vals[i]; dup {
			return nil, fail(ReasonPCRSelection, "PCR %d reported twice", i)
		}
		if len(p.GetValue()) != pcrSize {
			return nil, fail(ReasonPCRSelection, "PCR %d value of %d bytes, want %d", i, len(p.GetValue()), pcrSize)
		}
		vals[i] = p.GetValue()
	}
	if got := vals.Mask(); got != mask {
		return nil, fail(ReasonPCRSelection, "PCRs %v reported, asked for %v", got, mask)
	}
	return vals, nil
}

// ecdsaASN1 encodes an ECDSA signature as crypto/x509 expects it.
func ecdsaASN1(r, s []byte) ([]byte, error) {
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)})
}
