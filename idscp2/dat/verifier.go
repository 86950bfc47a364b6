package dat

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sync"
	"time"
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
	// SignatureCache, if positive, is how many verified signatures are
	// remembered, keyed by SHA-256 over the whole token and bound to the
	// key that verified them. A DAT presented again (peers reuse their DAT
	// for most of its lifetime: on every new connection and in DAT
	// renewals) then costs no public-key operation. Every other check runs
	// on each call, including the key lookup by kid, so a key withdrawn
	// from the KeySource is not honoured from the cache. 0 disables it.
	SignatureCache int
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
//
// The compact serialisation is decoded here with the standard library
// (strict base64url, exact-case JSON member names, one JSON decode per
// segment) rather than through a generic JWT library: verification runs on
// every handshake and DAT renewal, and the generic path (reflection-driven
// claims validation, repeated conversions) cost a large fraction of the
// signature check itself.
type JWTVerifier struct {
	issuer     string
	keys       KeySource
	leeway     time.Duration
	maxSize    int
	minProfile int
	now        func() time.Time
	sigs       *sigCache // nil: no signature cache
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
		leeway:     cfg.Leeway,
		maxSize:    cfg.MaxTokenSize,
		minProfile: minProfile,
		now:        cfg.Now,
	}
	if cfg.SignatureCache > 0 {
		v.sigs = &sigCache{max: cfg.SignatureCache, keys: make(map[[sha256.Size]byte]crypto.PublicKey)}
	}
	return v, nil
}

// sigCache remembers tokens whose signature verified, with the key that
// verified them; the oldest entry is evicted first.
type sigCache struct {
	mu   sync.Mutex
	max  int
	keys map[[sha256.Size]byte]crypto.PublicKey
	ring [][sha256.Size]byte
	next int
}

func (c *sigCache) hit(sum [sha256.Size]byte, key crypto.PublicKey) bool {
	c.mu.Lock()
	k, ok := c.keys[sum]
	c.mu.Unlock()
	if !ok {
		return false
	}
	eq, ok := k.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(key)
}

func (c *sigCache) add(sum [sha256.Size]byte, key crypto.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.keys[sum]; !ok {
		if len(c.ring) < c.max {
			c.ring = append(c.ring, sum)
		} else {
			delete(c.keys, c.ring[c.next])
			c.ring[c.next] = sum
			c.next = (c.next + 1) % c.max
		}
	}
	c.keys[sum] = key
}

// jwsEncoding is base64url without padding, rejecting non-canonical
// trailing bits, as RFC 7515 requires.
var jwsEncoding = base64.RawURLEncoding.Strict()

// jws is a decoded JWS compact token.
type jws struct {
	header       map[string]any
	claims       map[string]any
	signingInput []byte // ASCII(BASE64URL(header) || '.' || BASE64URL(payload))
	rawSig       []byte // still base64url
}

// parseJWS splits and decodes a compact token. Every failure is
// ReasonMalformed. The signature segment is only decoded later, after the
// algorithm has been accepted.
func parseJWS(token []byte) (*jws, error) {
	i := bytes.IndexByte(token, '.')
	if i < 0 {
		return nil, Refuse(ReasonMalformed, "not a JWS compact token (no '.')")
	}
	j := bytes.IndexByte(token[i+1:], '.')
	if j < 0 {
		return nil, Refuse(ReasonMalformed, "not a JWS compact token (2 segments)")
	}
	j += i + 1
	if bytes.IndexByte(token[j+1:], '.') >= 0 {
		return nil, Refuse(ReasonMalformed, "not a JWS compact token (more than 3 segments)")
	}
	// One buffer for both JSON segments.
	buf := make([]byte, jwsEncoding.DecodedLen(i)+jwsEncoding.DecodedLen(j-i-1))
	n, err := jwsEncoding.Decode(buf, token[:i])
	if err != nil {
		return nil, Refuse(ReasonMalformed, "header is not base64url: %v", err)
	}
	hdr := buf[:n:n]
	m, err := jwsEncoding.Decode(buf[n:], token[i+1:j])
	if err != nil {
		return nil, Refuse(ReasonMalformed, "payload is not base64url: %v", err)
	}
	payload := buf[n : n+m]
	t := &jws{signingInput: token[:j], rawSig: token[j+1:]}
	if t.header, err = jsonObject(hdr); err != nil {
		return nil, Refuse(ReasonMalformed, "header is not a JSON object: %v", err)
	}
	if t.claims, err = jsonObject(payload); err != nil {
		return nil, Refuse(ReasonMalformed, "payload is not a JSON object: %v", err)
	}
	return t, nil
}

// jsonObject decodes a JSON object. Decoding into an interface value takes
// encoding/json's reflection-free path, about twice as fast as decoding
// into a map directly.
func jsonObject(b []byte) (map[string]any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a JSON %T, not an object", v)
	}
	return m, nil
}

// Verify checks a DAT: size, algorithm, signature with the key named by kid,
// exp (required), nbf and iat, iss, aud, sub, the binding of
// transportCertsSha256 to peerCert and, if configured, the security profile.
// A refusal is a *VerifyError.
func (v *JWTVerifier) Verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*Identity, error) {
	if len(token) > v.maxSize {
		return nil, Refuse(ReasonOversized, "token of %d bytes exceeds the %d byte cap", len(token), v.maxSize)
	}
	t, err := parseJWS(token)
	if err != nil {
		return nil, err
	}
	if err := v.checkSignature(ctx, t, token); err != nil {
		return nil, err
	}
	claims := t.claims
	exp, err := v.checkTimes(claims)
	if err != nil {
		return nil, err
	}
	if iss, ok := claims["iss"].(string); !ok || iss != v.issuer {
		return nil, Refuse(ReasonIssuer, "iss %v is not the expected issuer %q", quoteAny(claims["iss"]), v.issuer)
	}
	if err := checkAudience(claims["aud"]); err != nil {
		return nil, err
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
	return &Identity{
		Subject:            sub,
		Issuer:             v.issuer,
		Expiry:             exp,
		SecurityProfile:    profile,
		ReferringConnector: referringConnector(claims["referringConnector"]),
		Claims:             claims,
		Token:              bytes.Clone(token),
	}, nil
}

// checkSignature checks the header (alg allow-list, crit, kid), resolves
// the key and verifies the signature.
func (v *JWTVerifier) checkSignature(ctx context.Context, t *jws, token []byte) error {
	alg, ok := t.header["alg"].(string)
	if !ok {
		return Refuse(ReasonMalformed, "token header has no alg")
	}
	if !algAllowed(alg) {
		return Refuse(ReasonAlgorithm, "alg %q is not allowed", alg)
	}
	sig := make([]byte, jwsEncoding.DecodedLen(len(t.rawSig)))
	n, err := jwsEncoding.Decode(sig, t.rawSig)
	if err != nil {
		return Refuse(ReasonMalformed, "signature is not base64url: %v", err)
	}
	sig = sig[:n]
	if _, ok := t.header["crit"]; ok {
		return Refuse(ReasonMalformed, "unsupported critical header parameters")
	}
	kid, ok := t.header["kid"].(string)
	if !ok || kid == "" {
		return Refuse(ReasonUnknownKey, "token header has no kid")
	}
	key, err := v.keys.Key(ctx, kid)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return &VerifyError{Reason: ReasonUnknownKey, Err: err}
		}
		return &VerifyError{Reason: ReasonUnavailable, Err: err}
	}
	if key == nil {
		return Refuse(ReasonUnknownKey, "key source returned no key for kid %q", kid)
	}
	key, err = fitKey(alg, key)
	if err != nil {
		return err
	}
	var sum [sha256.Size]byte
	if v.sigs != nil {
		if sum = sha256.Sum256(token); v.sigs.hit(sum, key) {
			return nil
		}
	}
	if !verifySignature(alg, key, t.signingInput, sig) {
		return Refuse(ReasonSignature, "%s signature does not verify with key %q", alg, kid)
	}
	if v.sigs != nil {
		v.sigs.add(sum, key)
	}
	return nil
}

// verifySignature checks sig over input; key has been checked by fitKey.
func verifySignature(alg string, key crypto.PublicKey, input, sig []byte) bool {
	if alg == "EdDSA" {
		return ed25519.Verify(key.(ed25519.PublicKey), input, sig)
	}
	var h crypto.Hash
	var digest []byte
	switch alg[2:] {
	case "256":
		d := sha256.Sum256(input)
		h, digest = crypto.SHA256, d[:]
	case "384":
		d := sha512.Sum384(input)
		h, digest = crypto.SHA384, d[:]
	case "512":
		d := sha512.Sum512(input)
		h, digest = crypto.SHA512, d[:]
	default:
		return false
	}
	switch alg[:2] {
	case "RS":
		return rsa.VerifyPKCS1v15(key.(*rsa.PublicKey), h, digest, sig) == nil
	case "PS":
		return rsa.VerifyPSS(key.(*rsa.PublicKey), h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
	case "ES":
		k := key.(*ecdsa.PublicKey)
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size { // JWS ECDSA signatures are R || S, fixed width
			return false
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k, digest, r, s)
	}
	return false
}

// fitKey returns key if its type (and curve) fits alg, or a
// ReasonAlgorithm refusal. A *ed25519.PublicKey is dereferenced.
func fitKey(alg string, key crypto.PublicKey) (crypto.PublicKey, error) {
	switch alg[:2] {
	case "RS", "PS":
		if k, ok := key.(*rsa.PublicKey); ok && k != nil && k.N != nil {
			return k, nil
		}
	case "ES":
		if k, ok := key.(*ecdsa.PublicKey); ok && k != nil {
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

// checkTimes checks exp (required), nbf and iat against the clock with the
// leeway and returns exp. Order of reasons, as before: exp type, presence,
// expiry; nbf and iat types; nbf or iat in the future.
func (v *JWTVerifier) checkTimes(claims map[string]any) (time.Time, error) {
	now := v.now()
	exp, present, ok := numericDate(claims, "exp")
	switch {
	case !present:
		return time.Time{}, Refuse(ReasonMissingClaim, "exp claim is required")
	case !ok:
		return time.Time{}, Refuse(ReasonMalformed, "exp is not a number")
	case now.After(exp.Add(v.leeway)):
		return time.Time{}, Refuse(ReasonExpired, "token expired at %s (now %s, leeway %s)",
			exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	nbf, nbfSet, ok := numericDate(claims, "nbf")
	if !ok {
		return time.Time{}, Refuse(ReasonMalformed, "nbf is not a number")
	}
	iat, iatSet, ok := numericDate(claims, "iat")
	if !ok {
		return time.Time{}, Refuse(ReasonMalformed, "iat is not a number")
	}
	if nbfSet && now.Before(nbf.Add(-v.leeway)) {
		return time.Time{}, Refuse(ReasonNotYetValid, "token not valid before %s (now %s, leeway %s)",
			nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	if iatSet && now.Before(iat.Add(-v.leeway)) {
		return time.Time{}, Refuse(ReasonNotYetValid, "token issued in the future at %s (now %s, leeway %s)",
			iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	return exp, nil
}

// maxDateSeconds bounds NumericDate values so that conversion to int64 and
// time.Time arithmetic stay exact; beyond it a date counts as "forever".
const maxDateSeconds = 1 << 53

// numericDate reads a NumericDate claim (JSON number of seconds since the
// epoch; fractions are truncated to whole seconds). present is false if the
// claim is absent; ok is false if it is present but not a number.
func numericDate(claims map[string]any, name string) (t time.Time, present, ok bool) {
	raw, present := claims[name]
	if !present {
		return time.Time{}, false, true
	}
	f, ok := raw.(float64)
	if !ok || math.IsNaN(f) {
		return time.Time{}, true, false
	}
	f = math.Max(-maxDateSeconds, math.Min(maxDateSeconds, math.Trunc(f)))
	return time.Unix(int64(f), 0), true, true
}

// checkAudience requires aud, a string or an array of strings, to contain
// AudienceAll or AudienceLegacy (exact match).
func checkAudience(raw any) error {
	switch a := raw.(type) {
	case string:
		if a == AudienceAll || a == AudienceLegacy {
			return nil
		}
	case []any:
		found := false
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return Refuse(ReasonAudience, "aud contains a non-string element")
			}
			if s == AudienceAll || s == AudienceLegacy {
				found = true
			}
		}
		if found {
			return nil
		}
	case nil:
		return Refuse(ReasonAudience, "aud claim is required")
	default:
		return Refuse(ReasonAudience, "aud of type %T", raw)
	}
	return Refuse(ReasonAudience, "aud %v names neither %q nor %q", quoteAny(raw), AudienceAll, AudienceLegacy)
}

// quoteAny renders a claim value for an error message, bounded in length.
func quoteAny(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%T", v)
	}
	if len(b) > 120 {
		b = append(b[:117:117], "..."...)
	}
	return string(b)
}

// checkBinding requires Fingerprint(peerCert) in transportCertsSha256, a
// JSON string or array of strings, compared exactly (case-sensitive), as
// idscp2-jvm does.
func checkBinding(claims map[string]any, peerCert *x509.Certificate) error {
	if peerCert == nil {
		return Refuse(ReasonFingerprint, "no peer certificate to bind the DAT to")
	}
	raw, ok := claims["transportCertsSha256"]
	if !ok {
		return Refuse(ReasonFingerprint, "missing transportCertsSha256")
	}
	fp := Fingerprint(peerCert)
	switch t := raw.(type) {
	case string:
		if t == fp {
			return nil
		}
	case []any:
		found := false
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return Refuse(ReasonFingerprint, "invalid transportCertsSha256: non-string element")
			}
			found = found || s == fp
		}
		if found {
			return nil
		}
	default:
		return Refuse(ReasonFingerprint, "invalid transportCertsSha256 of type %T", raw)
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
