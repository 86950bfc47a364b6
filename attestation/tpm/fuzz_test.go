package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

// FuzzDecodeTpmMessage feeds untrusted bytes to everything that parses
// them: the TpmMessage decoder, TPMS_ATTEST and TPMT_SIGNATURE parsing (of
// the response's fields and of the raw input) and the verifier's whole
// check. Nothing may panic; whatever parses must re-encode to the same
// bytes.
func FuzzDecodeTpmMessage(f *testing.F) {
	vcert := testPKI.Server.Cert
	spki, _ := x509.MarshalPKIXPublicKey(softECKey.Public())
	v, err := tpm.NewVerifier(tpm.VerifierConfig{
		PinnedKeys: []crypto.PublicKey{softECKey.Public(), softRSAKey.Public()},
		Golden:     &tpm.GoldenValues{PCRs: softPCRs},
		Logger:     quietLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	// A fixed challenge, so a fuzzed response can pass the nonce check.
	basic := tpmpb.IdsAttestationType_BASIC
	zero := uint32(0)
	ch := &tpmpb.TpmChallenge{Atype: &basic, Nonce: bytes.Repeat([]byte{0x5a}, 20), PcrIndices: &zero}

	for _, key := range []crypto.Signer{softECKey, softRSAKey} {
		resp := softResponse(f, key, spki, ch, vcert)
		if key == crypto.Signer(softRSAKey) {
			der, _ := x509.MarshalPKIXPublicKey(softRSAKey.Public())
			resp.Certificate = der
		}
		b, err := tpm.EncodeTpmMessage(resp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(resp.Quoted)
		f.Add(resp.Signature)
	}
	if b, err := tpm.EncodeTpmMessage(ch); err == nil {
		f.Add(b)
	}
	ok := true
	if b, err := tpm.EncodeTpmMessage(&tpmpb.TpmResult{Result: &ok}); err == nil {
		f.Add(b)
	}
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		checkAttest(t, data)
		checkSignature(t, data)
		m, err := tpm.DecodeTpmMessage(data)
		if err != nil {
			if tpm.ReasonOf(err) != tpm.ReasonMalformed {
				t.Fatalf("decode error without reason malformed: %v", err)
			}
			return
		}
		resp := m.GetRatResponse()
		if resp == nil {
			return
		}
		checkAttest(t, resp.Quoted)
		checkSignature(t, resp.Signature)
		if err := v.CheckResponse(ch, resp, vcert, nil); err != nil && tpm.ReasonOf(err) == "" {
			t.Fatalf("refusal without a reason: %v", err)
		}
	})
}

func checkAttest(t *testing.T, b []byte) {
	att, err := tpm.ParseAttest(b)
	if err != nil {
		return
	}
	if !bytes.Equal(tpm2.Marshal(*att.Attest), att.Signed) {
		t.Fatalf("TPMS_ATTEST does not re-encode to its bytes")
	}
	if att.Attest.Type != tpm2.TPMSTAttestQuote || att.Quote == nil {
		t.Fatalf("accepted a non-quote")
	}
}

func checkSignature(t *testing.T, b []byte) {
	sig, err := tpm.ParseSignature(b)
	if err != nil {
		return
	}
	if !bytes.Equal(tpm2.Marshal(*sig), b) {
		t.Fatalf("TPMT_SIGNATURE does not re-encode to its bytes")
	}
}
