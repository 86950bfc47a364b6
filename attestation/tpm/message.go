package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

// Size limits on the fields of an untrusted TpmMessage. Real values are far
// below them: a 20-byte nonce, a TPMS_ATTEST of ~150 bytes, a TPMT_SIGNATURE
// of ~260 bytes (RSA-2048) and an AK certificate of ~1 KiB.
const (
	maxMessage         = 1 << 20
	maxNonce           = 64
	maxQuoted          = 2048
	maxSignature       = 1024
	maxCertificate     = 16 << 10
	maxHashAlgName     = 16
	maxPCRValue        = 64
	maxMeasurementList = 512 << 10
)

// DecodeTpmMessage decodes an untrusted TpmMessage as it arrives in an RA
// message: proto2 with the reference's required fields, exactly one of
// ratChallenge, ratResponse and ratResult set, and every field within the
// size limits above. It does not interpret quoted or signature (see
// ParseAttest and ParseSignature).
func DecodeTpmMessage(b []byte) (*tpmpb.TpmMessage, error) {
	if len(b) > maxMessage {
		return nil, fail(ReasonMalformed, "TpmMessage of %d bytes", len(b))
	}
	var m tpmpb.TpmMessage
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fail(ReasonMalformed, "TpmMessage: %v", err)
	}
	// Unmarshal's own required-field check misses an empty ratResponse or
	// ratResult (protobuf-go v1.36.12), so check again.
	if err := proto.CheckInitialized(&m); err != nil {
		return nil, fail(ReasonMalformed, "TpmMessage: %v", err)
	}
	switch x := m.Message.(type) {
	case *tpmpb.TpmMessage_RatChallenge:
		if n := len(x.RatChallenge.GetNonce()); n > maxNonce {
			return nil, fail(ReasonMalformed, "challenge nonce of %d bytes", n)
		}
	case *tpmpb.TpmMessage_RatResponse:
		if err := checkResponseSizes(x.RatResponse); err != nil {
			return nil, err
		}
	case *tpmpb.TpmMessage_RatResult:
	default:
		return nil, fail(ReasonMalformed, "empty TpmMessage")
	}
	return &m, nil
}

func checkResponseSizes(r *tpmpb.TpmResponse) error {
	switch {
	case len(r.GetHashAlg()) > maxHashAlgName:
		return fail(ReasonMalformed, "hash_alg of %d bytes", len(r.GetHashAlg()))
	case len(r.GetQuoted()) > maxQuoted:
		return fail(ReasonMalformed, "quoted of %d bytes", len(r.GetQuoted()))
	case len(r.GetSignature()) > maxSignature:
		return fail(ReasonMalformed, "signature of %d bytes", len(r.GetSignature()))
	case len(r.GetCertificate()) > maxCertificate:
		return fail(ReasonMalformed, "certificate of %d bytes", len(r.GetCertificate()))
	case len(r.GetMeasurementList()) > maxMeasurementList:
		return fail(ReasonMalformed, "measurement list of %d bytes", len(r.GetMeasurementList()))
	case len(r.GetPcrValues()) > NumPCRs:
		return fail(ReasonMalformed, "%d PCR values", len(r.GetPcrValues()))
	}
	for _, p := range r.GetPcrValues() {
		if len(p.GetValue()) > maxPCRValue {
			return fail(ReasonMalformed, "PCR value of %d bytes", len(p.GetValue()))
		}
	}
	return nil
}

// EncodeTpmMessage marshals one of *tpmpb.TpmChallenge, *tpmpb.TpmResponse
// or *tpmpb.TpmResult wrapped in a TpmMessage.
func EncodeTpmMessage(inner proto.Message) ([]byte, error) {
	var m tpmpb.TpmMessage
	switch x := inner.(type) {
	case *tpmpb.TpmChallenge:
		m.Message = &tpmpb.TpmMessage_RatChallenge{RatChallenge: x}
	case *tpmpb.TpmResponse:
		m.Message = &tpmpb.TpmMessage_RatResponse{RatResponse: x}
	case *tpmpb.TpmResult:
		m.Message = &tpmpb.TpmMessage_RatResult{RatResult: x}
	default:
		return nil, fmt.Errorf("tpm: cannot wrap %T in a TpmMessage", inner)
	}
	return proto.Marshal(&m)
}

// Attest is a parsed quote.
type Attest struct {
	// Signed is the marshalled TPMS_ATTEST, the bytes the signature covers.
	Signed []byte
	// Attest is the structure; Attest.Type is TPM_ST_ATTEST_QUOTE.
	Attest *tpm2.TPMSAttest
	// Quote is Attest's TPMS_QUOTE_INFO.
	Quote *tpm2.TPMSQuoteInfo
}

// ParseAttest parses the quoted field of a TpmResponse: a marshalled
// TPMS_ATTEST (as the reference's tpm2d sends it and tpm2_quote -m writes
// it), or the same with the TPM2B_ATTEST size field in front. It must be
// TPM-generated (magic TPM_GENERATED_VALUE), of type TPM_ST_ATTEST_QUOTE,
// and encoded canonically with nothing after it.
func ParseAttest(quoted []byte) (*Attest, error) {
	if len(quoted) > maxQuoted {
		return nil, fmt.Errorf("quote of %d bytes", len(quoted))
	}
	body := quoted
	if len(quoted) >= 6 && binary.BigEndian.Uint32(quoted) != uint32(tpm2.TPMGeneratedValue) &&
		int(binary.BigEndian.Uint16(quoted)) == len(quoted)-2 &&
		binary.BigEndian.Uint32(quoted[2:]) == uint32(tpm2.TPMGeneratedValue) {
		body = quoted[2:] // a TPM2B_ATTEST
	}
	att, err := unmarshalCanonical[tpm2.TPMSAttest](body)
	if err != nil {
		return nil, fmt.Errorf("not a TPMS_ATTEST: %w", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, fmt.Errorf("magic %#x is not TPM_GENERATED_VALUE", uint32(att.Magic))
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("attestation type %#x is not a quote", uint16(att.Type))
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("quote info: %w", err)
	}
	return &Attest{Signed: body, Attest: att, Quote: qi}, nil
}

// ParseSignature parses the signature field of a TpmResponse: a marshalled
// TPMT_SIGNATURE of scheme RSASSA, RSAPSS or ECDSA, encoded canonically
// with nothing after it.
func ParseSignature(b []byte) (*tpm2.TPMTSignature, error) {
	if len(b) > maxSignature {
		return nil, fmt.Errorf("signature of %d bytes", len(b))
	}
	sig, err := unmarshalCanonical[tpm2.TPMTSignature](b)
	if err != nil {
		return nil, fmt.Errorf("not a TPMT_SIGNATURE: %w", err)
	}
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS, tpm2.TPMAlgECDSA:
		return sig, nil
	default:
		return nil, fmt.Errorf("signature scheme %#x not supported (RSASSA, RSAPSS, ECDSA)", uint16(sig.SigAlg))
	}
}

// unmarshalCanonical unmarshals b as a T and requires that marshalling the
// result gives b back: no trailing bytes, no alternative encodings. A panic
// in the decoder (untrusted input) becomes an error.
func unmarshalCanonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), b) {
		return nil, errors.New("trailing or non-canonical bytes")
	}
	return v, nil
}
