// Package dat defines how an IDSCP2 connection obtains its own Dynamic
// Attribute Token (DAT) and verifies the peer's, and provides the drivers that
// need no DAPS: the reference's insecure NullDaps and a local JWT issuer for
// tests and closed set-ups. The DAPS client and the built-in DAPS plug into the
// same Driver interface.
package dat

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Driver issues the local DAT and verifies peers' DATs. Implementations must
// be safe for concurrent use: one driver serves every connection of a process.
type Driver interface {
	// Token returns the DAT this side sends in IdscpHello and IdscpDat.
	// It may block on a DAPS round trip; drivers cache and renew tokens so
	// that the common case returns at once.
	Token(ctx context.Context) ([]byte, error)
	// Verify checks a peer DAT and its binding to the peer's TLS leaf
	// certificate. A failure is a *VerifyError naming the reason.
	Verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*Identity, error)
	// RenewalThreshold is the fraction, in (0,1], of a verified peer DAT's
	// remaining lifetime after which the peer is asked for a fresh one
	// (IdscpDatExpired). The reference uses 0.666 for DAPS tokens and 1.0 for
	// NullDaps.
	RenewalThreshold() float64
}

// Identity is what a verified DAT says about the peer.
type Identity struct {
	Subject            string         // "sub": the connector id (SKI:keyid:AKI for DAPS tokens)
	Issuer             string         // "iss"
	Expiry             time.Time      // "exp"
	SecurityProfile    string         // "securityProfile", as sent
	ReferringConnector string         // "referringConnector", if any
	Claims             map[string]any // every claim, for policies and attestation drivers
	Token              []byte         // the DAT as received
}

// RenewIn is how long after now the peer should be asked for a fresh DAT:
// the remaining validity scaled by threshold, as the reference computes its
// DAT timer. It is negative when the token has already expired.
func (id *Identity) RenewIn(now time.Time, threshold float64) time.Duration {
	return time.Duration(float64(id.Expiry.Sub(now)) * threshold)
}

// Reason is a short, bounded label for why a DAT was refused; it is used in
// logs and as a metric label.
type Reason string

// Reasons a DAT is refused.
const (
	ReasonMalformed    Reason = "malformed"     // not a JWS compact token, bad JSON, bad encoding
	ReasonOversized    Reason = "oversized"     // longer than the configured cap
	ReasonAlgorithm    Reason = "algorithm"     // alg none, HMAC or otherwise not allowed
	ReasonUnknownKey   Reason = "unknown_kid"   // no key with this kid
	ReasonSignature    Reason = "signature"     // signature does not verify
	ReasonIssuer       Reason = "issuer"        // iss is not the expected DAPS
	ReasonAudience     Reason = "audience"      // aud lacks idsc:IDS_CONNECTORS_ALL / IDS_Connector
	ReasonExpired      Reason = "expired"       // exp in the past (beyond the leeway)
	ReasonNotYetValid  Reason = "not_yet_valid" // nbf or iat in the future (beyond the leeway)
	ReasonSubject      Reason = "subject"       // sub missing
	ReasonFingerprint  Reason = "fingerprint"   // peer certificate not in transportCertsSha256
	ReasonProfile      Reason = "profile"       // security profile below the required one
	ReasonUnavailable  Reason = "unavailable"   // keys could not be fetched
	ReasonMissingClaim Reason = "missing_claim" // a required claim (exp, ...) is absent
)

// VerifyError is returned by Driver.Verify when a DAT is refused.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string { return fmt.Sprintf("DAT refused (%s): %v", e.Reason, e.Err) }
func (e *VerifyError) Unwrap() error { return e.Err }

// Refuse builds a *VerifyError.
func Refuse(reason Reason, format string, args ...any) error {
	return &VerifyError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reason of a *VerifyError in err's chain, or "error".
func ReasonOf(err error) Reason {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return "error"
}

// Fingerprint is the certificate binding used in the DAT claim
// transportCertsSha256: SHA-256 over the whole DER certificate, lowercase hex
// without separators, exactly as idscp2-jvm computes it.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// InvalidToken is sent in place of the local DAT when the driver cannot
// provide one, as the reference does; the peer then refuses with NO_VALID_DAT.
var InvalidToken = []byte("INVALID_DAT")
