package tpm_test

// Quotes made in software: the same structures a TPM produces, signed with
// a key in memory, so the verifier can be tested (and fuzzed, and
// benchmarked) without any TPM.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

var (
	softECKey = func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}()
	softRSAKey = func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}()
)

// softPCRs are arbitrary PCR values 0–23.
var softPCRs = func() tpm.PCRValues {
	v := tpm.PCRValues{}
	for i := range tpm.NumPCRs {
		d := sha256.Sum256([]byte{byte(i)})
		v[i] = d[:]
	}
	return v
}()

// softAttest builds the TPMS_ATTEST of a quote over mask of pcrs with
// extraData qual.
func softAttest(qual []byte, pcrs tpm.PCRValues, mask tpm.PCRMask) tpm2.TPMSAttest {
	d := sha256.New()
	for _, i := range mask.Indices() {
		d.Write(pcrs[i])
	}
	return tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, make([]byte, 32)...)},
		ExtraData:       tpm2.TPM2BData{Buffer: qual},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: 12345, ResetCount: 1, RestartCount: 0, Safe: true},
		FirmwareVersion: 0x2020,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{byte(mask), byte(mask >> 8), byte(mask >> 16)},
			}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: d.Sum(nil)},
		}),
	}
}

// softSign signs msg like a TPM with key (ECDSA or RSASSA, SHA-256).
func softSign(t testing.TB, key crypto.Signer, msg []byte) []byte {
	t.Helper()
	h := sha256.Sum256(msg)
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})})
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})})
	}
	t.Fatalf("key %T", key)
	return nil
}

// softResponse answers ch for a verifier with certificate verifierCert,
// signed by key, with certDER as the AK certificate.
func softResponse(t testing.TB, key crypto.Signer, certDER []byte, ch *tpmpb.TpmChallenge, verifierCert *x509.Certificate) *tpmpb.TpmResponse {
	t.Helper()
	mask, err := tpm.MaskFor(ch.GetAtype(), ch.GetPcrIndices())
	if err != nil {
		t.Fatal(err)
	}
	quoted := tpm2.Marshal(softAttest(tpm.Binding(ch.GetNonce(), verifierCert), softPCRs, mask))
	vals, err := softPCRs.Select(mask)
	if err != nil {
		t.Fatal(err)
	}
	var pcrs []*tpmpb.Pcr
	for _, i := range mask.Indices() {
		n := int32(i)
		pcrs = append(pcrs, &tpmpb.Pcr{Number: &n, Value: vals[i]})
	}
	atype, h := ch.GetAtype(), tpm.PCRBank
	return &tpmpb.TpmResponse{Atype: &atype, HashAlg: &h, Quoted: quoted, Signature: softSign(t, key, quoted), PcrValues: pcrs, Certificate: certDER}
}

// softCert is an AK certificate for key from the trusted test CA.
func softCert(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := tpm.IssueAKCertificate(testPKI.CA.Cert, testPKI.CA.Key, key.Public(), pkix.Name{CommonName: "soft AK"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
