package tpm

import (
	"errors"
	"fmt"
)

// Reason is a short, bounded label for why an attestation failed, for logs
// and as a metric label.
type Reason string

// Reasons the verifier refuses a peer.
const (
	ReasonMalformed       Reason = "malformed"        // TpmMessage undecodable, a required field missing or a field over its size limit
	ReasonProtocol        Reason = "protocol"         // a message other than the one expected at this step
	ReasonAttestationType Reason = "attestation_type" // the response's atype is not the one asked for
	ReasonHashAlgorithm   Reason = "hash_algorithm"   // hash_alg, the signature's hash or the PCR bank is not supported
	ReasonAKUntrusted     Reason = "ak_untrusted"     // AK certificate unparsable, not chaining to the roots, expired, or key not pinned
	ReasonQuoteMalformed  Reason = "quote_malformed"  // quoted is not a TPM-generated TPMS_ATTEST of a quote
	ReasonSignature       Reason = "signature"        // signature unparsable, of the wrong kind for the AK, or not valid over quoted
	ReasonNonce           Reason = "nonce"            // extraData is not SHA-1(own nonce ‖ own certificate): stale, replayed or relayed quote
	ReasonPCRSelection    Reason = "pcr_selection"    // the quote or the reported values do not cover exactly the PCRs asked for
	ReasonPCRDigest       Reason = "pcr_digest"       // the quote's PCR digest is not the digest of the reported values
	ReasonGoldenValues    Reason = "golden_values"    // no usable golden value for a PCR asked for (none configured, DAT claim absent or invalid)
	ReasonPCRMismatch     Reason = "pcr_mismatch"     // a PCR value differs from its golden value
)

// Reasons the prover fails.
const (
	ReasonChallenge Reason = "challenge" // the verifier's challenge cannot be answered (bad nonce size, bad mask)
	ReasonTPM       Reason = "tpm"       // the local TPM failed
	ReasonRefused   Reason = "refused"   // the verifier's TpmResult was false
	ReasonSend      Reason = "send"      // the connection would not take the message
)

// Error is a failed attestation with its reason.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("tpm attestation failed (%s): %v", e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func fail(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reason of an *Error in err's chain, or "" if there is
// none (for example when the connection stopped the run).
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
