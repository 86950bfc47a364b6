package dat

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audiences a DAT must name (one of them): the IDS-G default audience and
// the legacy value idscp2-jvm still accepts.
const (
	AudienceAll    = "idsc:IDS_CONNECTORS_ALL"
	AudienceLegacy = "IDS_Connector"
)

// Security profile levels, ordered as in idscp2-jvm (SecurityProfile.kt):
// INVALID < BASE < TRUSTED < TRUSTED_PLUS.
const (
	ProfileInvalid     = 0
	ProfileBase        = 1
	ProfileTrusted     = 2
	ProfileTrustedPlus = 3
)

// ProfileLevel maps a securityProfile claim value to its level. Both naming
// generations of the IDS Information Model are recognised: the pre-2020 names
// idscp2-jvm knows (idsc:BASE_CONNECTOR_SECURITY_PROFILE, ...) and the current
// ones Omejdn and IDS-G use (idsc:BASE_SECURITY_PROFILE, ...). Anything else,
// including the empty string, is ProfileInvalid. The comparison is exact.
func ProfileLevel(name string) int {
	switch name {
	case "idsc:BASE_CONNECTOR_SECURITY_PROFILE", "idsc:BASE_SECURITY_PROFILE":
		return ProfileBase
	case "idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", "idsc:TRUST_SECURITY_PROFILE":
		return ProfileTrusted
	case "idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE", "idsc:TRUST_PLUS_SECURITY_PROFILE":
		return ProfileTrustedPlus
	default:
		return ProfileInvalid
	}
}

// ErrUnknownKey is wrapped by KeySource errors meaning "no key with this kid".
var ErrUnknownKey = errors.New("no verification key with this kid")

// KeySource finds the public key for a token's kid. An unknown kid is an
// error wrapping ErrUnknownKey; any other error means the keys could not be
// obtained (the DAT is then refused with ReasonUnavailable). Implementations
// must be safe for concurrent use.
type KeySource interface {
	Key(ctx context.Context, kid string) (crypto.PublicKey, error)
}

// StaticKeys is a fixed kid → public key set. Values are *rsa.PublicKey,
// *ecdsa.PublicKey or ed25519.PublicKey.
type StaticKeys map[string]crypto.PublicKey

// Key implements KeySource.
func (s StaticKeys) Key(_ context.Context, kid string) (crypto.PublicKey, error) {
	if k, ok := s[kid]; ok && k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
}

// VerifierConfig configures a JWTVerifier.
type VerifierConfig struct {
	// Issuer is the required "iss" (the DAPS issuer from its metadata).
	Issuer string
	// Keys resolves the header kid to the DAPS signing key.
	Keys KeySource
	// Leeway is the allowed clock skew for exp, nbf and iat; 0 means 30 s,
	// the reference's value.
	Leeway time.Duration
	// MaxTokenSize caps the token length in bytes; 0 means 16 KiB. Longer
	// tokens are refused with ReasonOversized before any parsing.
	MaxTokenSize int
	// MinSecurityProfile, if not empty, is the lowest securityProfile
	// accepted, named in either naming generation (see ProfileLevel).
	MinSecurityProfile string
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// Defaults of VerifierConfig.
const (
	DefaultLeeway       = 30 * time.Second
	DefaultMaxTokenSize = 16 << 10
)

// allowedAlgs is the JWS allow-list: asymmetric algorithms only. "none" and
// the HMAC family are never accepted (key-confusion attacks).
var allowedAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

func algAllowed(alg string) bool {
	for _, a := range allowedAlgs {
		if a == alg {
			return true
		}
	}
	return false
}

// JWTVerifier verifies DAPS-issued DATs (JWS compact tokens) as idscp2-jvm's
// AISEC DAPS driver does, with the stricter algorithm policy above. It is
// immutable and safe for concurrent use.
type JWTVerifier struct {
	issuer     string
	keys       KeySource
	maxSize    int
	minProfile int
	now        func() time.Time
	parser     *jwt.Parser
}

// NewJWTVerifier checks cfg and builds a verifier.
func NewJWTVerifier(cfg VerifierConfig) (*JWTVerifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("dat: VerifierConfig.Issuer is required")
	}
	if cfg.Keys == nil {
		return nil, errors.New("dat: VerifierConfig.Keys is required")
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("dat: negative VerifierConfig.Leeway %v", cfg.Leeway)
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.MaxTokenSize < 0 {
		return nil, fmt.Errorf("dat: negative VerifierConfig.MaxTokenSize %d", cfg.MaxTokenSize)
	}
	if cfg.MaxTokenSize == 0 {
		cfg.MaxTokenSize = DefaultMaxTokenSize
	}
	minProfile := ProfileInvalid
	if cfg.MinSecurityProfile != "" {
		minProfile = ProfileLevel(cfg.MinSecurityProfile)
		if minProfile == ProfileInvalid {
			return nil, fmt.Errorf("dat: unknown VerifierConfig.MinSecurityProfile %q", cfg.MinSecurityProfile)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &JWTVerifier{
		issuer:     cfg.Issuer,
		keys:       cfg.Keys,
		maxSize:    cfg.MaxTokenSize,
		minProfile: minProfile,
		now:        cfg.Now,
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(allowedAlgs),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(AudienceAll, AudienceLegacy),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	)
	return v, nil
}

// Verify checks a DAT: size, algorithm, signature with the key named by kid,
// exp (required), nbf and iat, iss, aud, sub, the binding of
// transportCertsSha256 to peerCert and, if configured, the security profile.
// A refusal is a *VerifyError.
func (v *JWTVerifier) Verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*Identity, error) {
	if len(token) > v.maxSize {
		return nil, Refuse(ReasonOversized, "token of %d bytes exceeds the %d byte cap", len(token), v.maxSize)
	}
	claims := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(string(token), claims, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	})
	if err != nil {
		return nil, classify(tok, claims, err)
	}

	sub, ok := claims["sub"].(string)
	if !ok || sub == "" {
		return nil, Refuse(ReasonSubject, "missing or non-string sub")
	}
	if err := checkBinding(claims, peerCert); err != nil {
		return nil, err
	}
	profile, _ := claims["securityProfile"].(string)
	if v.minProfile != ProfileInvalid {
		if lvl := ProfileLevel(profile); lvl < v.minProfile {
			return nil, Refuse(ReasonProfile, "securityProfile %q (level %d) is below the required level %d", profile, lvl, v.minProfile)
		}
	}

	exp, _ := claims.GetExpirationTime() // present and well-typed: the parser checked it
	iss, _ := claims.GetIssuer()
	id := &Identity{
		Subject:            sub,
		Issuer:             iss,
		SecurityProfile:    profile,
		ReferringConnector: referringConnector(claims["referringConnector"]),
		Claims:             claims,
		Token:              bytes.Clone(token),
	}
	if exp != nil {
		id.Expiry = exp.Time
	}
	return id, nil
}

// keyFor is the jwt.Keyfunc: it re-checks the algorithm, selects the key by
// kid and checks that the key type fits the algorithm.
func (v *JWTVerifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !algAllowed(alg) { // already enforced by WithValidMethods; kept as a second guard
		return nil, Refuse(ReasonAlgorithm, "alg %q is not allowed", alg)
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, Refuse(ReasonMalformed, "unsupported critical header parameters")
	}
	kid, ok := t.Header["kid"].(string)
	if !ok || kid == "" {
		return nil, Refuse(ReasonUnknownKey, "token header has no kid")
	}
	key, err := v.keys.Key(ctx, kid)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, &VerifyError{Reason: ReasonUnknownKey, Err: err}
		}
		return nil, &VerifyError{Reason: ReasonUnavailable, Err: err}
	}
	if key == nil {
		return nil, Refuse(ReasonUnknownKey, "key source returned no key for kid %q", kid)
	}
	return fitKey(alg, key)
}

// fitKey returns key in the form golang-jwt expects for alg, or a
// ReasonAlgorithm refusal if the key type (or curve) does not fit alg.
func fitKey(alg string, key crypto.PublicKey) (any, error) {
	switch alg[:2] {
	case "RS", "PS":
		if k, ok := key.(*rsa.PublicKey); ok {
			return k, nil
		}
	case "ES":
		if k, ok := key.(*ecdsa.PublicKey); ok {
			var want elliptic.Curve
			switch alg {
			case "ES256":
				want = elliptic.P256()
			case "ES384":
				want = elliptic.P384()
			case "ES512":
				want = elliptic.P521()
			}
			if k.Curve != nil && k.Curve == want {
				return k, nil
			}
			name := "an unknown curve"
			if k.Curve != nil {
				name = k.Curve.Params().Name
			}
			return nil, Refuse(ReasonAlgorithm, "alg %s does not fit an ECDSA key on %s", alg, name)
		}
	case "Ed":
		switch k := key.(type) {
		case ed25519.PublicKey:
			if len(k) == ed25519.PublicKeySize {
				return k, nil
			}
		case *ed25519.PublicKey:
			if k != nil && len(*k) == ed25519.PublicKeySize {
				return *k, nil
			}
		}
	}
	return nil, Refuse(ReasonAlgorithm, "alg %s does not fit a key of type %T", alg, key)
}

// classify maps a golang-jwt parse error to a *VerifyError.
func classify(tok *jwt.Token, claims jwt.MapClaims, err error) error {
	var ve *VerifyError
	if errors.As(err, &ve) { // raised by keyFor
		return ve
	}
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return &VerifyError{Reason: ReasonMalformed, Err: err}
	}
	if tok != nil && tok.Header != nil {
		alg, ok := tok.Header["alg"].(string)
		if !ok {
			return Refuse(ReasonMalformed, "token header has no alg")
		}
		if !algAllowed(alg) {
			return Refuse(ReasonAlgorithm, "alg %q is not allowed", alg)
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if errors.Is(err, jwt.ErrInvalidKeyType) || errors.Is(err, jwt.ErrInvalidKey) {
			return &VerifyError{Reason: ReasonAlgorithm, Err: err}
		}
		return &VerifyError{Reason: ReasonSignature, Err: err}
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return classifyClaims(claims, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return &VerifyError{Reason: ReasonAlgorithm, Err: err}
	}
	return &VerifyError{Reason: ReasonMalformed, Err: err}
}

// classifyClaims picks one reason when the (signature-verified) claims fail
// golang-jwt's validation, which may report several problems at once. Order:
// exp type/presence, expiry, nbf/iat, iss, aud.
func classifyClaims(c jwt.MapClaims, err error) error {
	exp, e := c.GetExpirationTime()
	switch {
	case e != nil:
		return Refuse(ReasonMalformed, "exp is not a number")
	case exp == nil:
		return Refuse(ReasonMissingClaim, "exp claim is required")
	case errors.Is(err, jwt.ErrTokenExpired):
		return &VerifyError{Reason: ReasonExpired, Err: err}
	}
	if _, e := c.GetNotBefore(); e != nil {
		return Refuse(ReasonMalformed, "nbf is not a number")
	}
	if _, e := c.GetIssuedAt(); e != nil {
		return Refuse(ReasonMalformed, "iat is not a number")
	}
	if errors.Is(err, jwt.ErrTokenNotValidYet) || errors.Is(err, jwt.ErrTokenUsedBeforeIssued) {
		return &VerifyError{Reason: ReasonNotYetValid, Err: err}
	}
	if iss, e := c.GetIssuer(); e != nil || iss == "" || errors.Is(err, jwt.ErrTokenInvalidIssuer) {
		return &VerifyError{Reason: ReasonIssuer, Err: err}
	}
	if aud, e := c.GetAudience(); e != nil || len(aud) == 0 || errors.Is(err, jwt.ErrTokenInvalidAudience) {
		return &VerifyError{Reason: ReasonAudience, Err: err}
	}
	if errors.Is(err, jwt.ErrTokenRequiredClaimMissing) {
		return &VerifyError{Reason: ReasonMissingClaim, Err: err}
	}
	return &VerifyError{Reason: ReasonMalformed, Err: err}
}

// checkBinding requires Fingerprint(peerCert) in transportCertsSha256, a
// JSON string or array of strings, compared exactly (case-sensitive), as
// idscp2-jvm does.
func checkBinding(claims jwt.MapClaims, peerCert *x509.Certificate) error {
	if peerCert == nil {
		return Refuse(ReasonFingerprint, "no peer certificate to bind the DAT to")
	}
	raw, ok := claims["transportCertsSha256"]
	if !ok {
		return Refuse(ReasonFingerprint, "missing transportCertsSha256")
	}
	var list []string
	switch t := raw.(type) {
	case string:
		list = []string{t}
	case []any:
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return Refuse(ReasonFingerprint, "invalid transportCertsSha256: non-string element")
			}
			list = append(list, s)
		}
	default:
		return Refuse(ReasonFingerprint, "invalid transportCertsSha256 of type %T", raw)
	}
	fp := Fingerprint(peerCert)
	for _, s := range list {
		if s == fp {
			return nil
		}
	}
	return Refuse(ReasonFingerprint, "peer certificate fingerprint %s is not in transportCertsSha256", fp)
}

// referringConnector reads the claim as a plain string or a JSON-LD node
// {"@id": "..."}.
func referringConnector(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case map[string]any:
		if s, ok := t["@id"].(string); ok {
			return s
		}
	}
	return ""
}
