package tpm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Provisioning: the functions behind `idscp2-sidecar tpm ...`.
//
//	(any)       Open("swtpm:127.0.0.1:2321" or a device path)
//	create-ak   CreateAK (Persist) → AK.PublicKeyPEM, CertificateRequest
//	show-ak     LoadAK → AK.PublicKeyPEM, AK.Name, CertificateRequest
//	issue-cert  IssueAKCertificate (a CA run by the operator, or tests)
//	read-pcrs   TPM.ReadPCRs
//	golden      TPM.ReadPCRs → WriteGoldenValues / GoldenValuesClaim
//	evict-ak    EvictAK

// OIDAKCertificate is the TCG extended key usage of AK certificates
// (tcg-kp-AIKCertificate, 2.23.133.8.3).
var OIDAKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 3}

// CertificateRequest returns a PKCS #10 certificate request (DER) for the AK
// with the given subject, signed by the AK itself: the TPM hashes the request
// and signs it with a hash ticket, which a restricted key allows because the
// request does not start with TPM_GENERATED_VALUE. The signature proves
// possession of the AK; it does not prove that the AK is a restricted TPM
// key (a CA checks that by other means: AK.PublicArea, credential activation
// against the EK, or provisioning in a trusted environment).
func CertificateRequest(ctx context.Context, ak *AK, subject pkix.Name) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, ak.Signer(ctx))
	if err != nil {
		return nil, fmt.Errorf("tpm: certificate request: %w", err)
	}
	return der, nil
}

// ParsePublicKeyPEM parses an AK public key from PEM ("PUBLIC KEY", as
// AK.PublicKeyPEM and tpm2_createak -f pem write it), for
// VerifierConfig.PinnedKeys.
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("tpm: no PEM PUBLIC KEY block")
	}
	key, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tpm: public key: %w", err)
	}
	if err := keyOK(key); err != nil {
		return nil, fmt.Errorf("tpm: public key: %v", err)
	}
	return key, nil
}

// ParseCertificateRequest parses a DER certificate request and checks its
// self-signature; it returns the requested key and subject.
func ParseCertificateRequest(der []byte) (crypto.PublicKey, pkix.Name, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, pkix.Name{}, fmt.Errorf("tpm: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, pkix.Name{}, fmt.Errorf("tpm: certificate request signature: %w", err)
	}
	return csr.PublicKey, csr.Subject, nil
}

// IssueAKCertificate signs an AK certificate (DER) for key with the CA
// (caCert, caKey), valid from one hour ago for validity (one year if 0),
// with key usage digitalSignature and the TCG AK certificate extended key
// usage. It is for tests and closed set-ups where the operator runs the CA.
func IssueAKCertificate(caCert *x509.Certificate, caKey crypto.Signer, key crypto.PublicKey, subject pkix.Name, validity time.Duration) ([]byte, error) {
	if caCert == nil || caKey == nil {
		return nil, errors.New("tpm: IssueAKCertificate needs a CA certificate and key")
	}
	if err := keyOK(key); err != nil {
		return nil, fmt.Errorf("tpm: AK key: %v", err)
	}
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDAKCertificate},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key, caKey)
	if err != nil {
		return nil, fmt.Errorf("tpm: issue AK certificate: %w", err)
	}
	return der, nil
}
