package tpm_test

import (
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
)

func TestQuoteAndCheck(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		for _, alg := range []tpm.KeyAlgorithm{tpm.RSA2048, tpm.ECCP256} {
			t.Run(alg.String(), func(t *testing.T) {
				start := time.Now()
				r := newRig(t, be, alg)
				t.Logf("rig (AK creation, PCR read): %v", time.Since(start))
				v := r.verifier(t, nil, nil)
				p := r.prover(t, nil)
				ch, err := v.Challenge()
				if err != nil {
					t.Fatal(err)
				}
				start = time.Now()
				resp, err := p.Respond(testCtx(t), ch, testPKI.Server.Cert)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("quote: %v", time.Since(start))
				if err := v.CheckResponse(ch, resp, testPKI.Server.Cert, nil); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
}
