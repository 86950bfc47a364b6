package tpm_test

import (
	"context"
	"crypto"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
)

// BenchmarkAttestedHandshake: one IDSCP2 connection over loopback TLS 1.3
// (Dial until ESTABLISHED, Accept, Close), attested with TPM in both
// directions against one swtpm (two quotes and two verifications per
// handshake), next to the same handshake with Dummy2.
func BenchmarkAttestedHandshake(b *testing.B) {
	for _, tc := range []struct {
		name string
		alg  tpm.KeyAlgorithm
		tpm  bool
	}{
		{"Dummy2", 0, false},
		{"TPM/rsa2048", tpm.RSA2048, true},
		{"TPM/eccp256", tpm.ECCP256, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cs := tpmSide(nil, nil)
			ss := cs
			if tc.tpm {
				r := newRig(b, swtpmBackend, tc.alg)
				p := r.prover(b, nil)
				v := r.verifier(b, nil, nil)
				cs, ss = tpmSide(p, v), tpmSide(p, v)
			} else {
				cs.reg, ss.reg = attestation.Default(), attestation.Default()
			}
			srv := listen(b, ss)
			ccfg := idscpConfig(testPKI.Client, cs)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				c, err := idscp2.Dial(ctx, "tcp", srv.addr, ccfg)
				if err != nil {
					b.Fatal(err)
				}
				sc := srv.accept(b)
				c.Close()
				sc.Close()
			}
		})
	}
}

// BenchmarkVerifyQuote: the verifier's check of one response alone (AK
// certificate chain, quote parsing, signature, nonce binding, PCR digest and
// golden values for BASIC), on quotes with the structure a TPM produces.
func BenchmarkVerifyQuote(b *testing.B) {
	vcert := testPKI.Server.Cert
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{
		{"eccp256", softECKey},
		{"rsa2048", softRSAKey},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v := softVerifier(b, nil)
			ch, err := v.Challenge()
			if err != nil {
				b.Fatal(err)
			}
			resp := softResponse(b, tc.key, softCert(b, tc.key), ch, vcert)
			b.ReportAllocs()
			for b.Loop() {
				if err := v.CheckResponse(ch, resp, vcert, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuote: the prover's side against swtpm: PCR reads, TPM2_Quote and
// the self-check of the quote's digest.
func BenchmarkQuote(b *testing.B) {
	for _, alg := range []tpm.KeyAlgorithm{tpm.RSA2048, tpm.ECCP256} {
		b.Run(alg.String(), func(b *testing.B) {
			r := newRig(b, swtpmBackend, alg)
			p := r.prover(b, nil)
			v := r.verifier(b, nil, nil)
			ch, err := v.Challenge()
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.Respond(ctx, ch, testPKI.Server.Cert); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
