package dat

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Fixed DAT claim values, as a DAPS (Omejdn with the omejdn-daps scope
// mapping, IDS-G DAT format) issues them.
const (
	datScope            = "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"
	datContext          = "https://w3id.org/idsa/contexts/context.jsonld"
	datType             = "ids:DatPayload"
	datDefaultProfile   = "idsc:BASE_SECURITY_PROFILE"
	datHeaderType       = "at+jwt" // RFC 9068, as Omejdn writes it (IDS-G's "jwt+at" is a typo)
	minLocalRSAKeyBits  = 2048
	defaultLocalLife    = time.Hour
	defaultLocalRenewal = 0.666
)

// LocalIssuer signs DATs shaped like a DAPS's with a local key, for tests,
// the demo and closed set-ups without a DAPS. It is immutable and safe for
// concurrent use.
type LocalIssuer struct {
	issuer string
	kid    string
	method jwt.SigningMethod
	key    any // the signing key in the form golang-jwt expects
	pub    crypto.PublicKey
}

// NewLocalIssuer returns an issuer named issuer (the "iss" of its tokens)
// signing with key under kid. key is an *ecdsa.PrivateKey (P-256 → ES256;
// P-384 → ES384 and P-521 → ES512 are accepted too), an *rsa.PrivateKey of at
// least 2048 bits (RS256) or an ed25519.PrivateKey (EdDSA). An empty kid is
// derived from the public key: the first 20 bytes of SHA-256 over its
// SubjectPublicKeyInfo DER, in lowercase hex.
func NewLocalIssuer(issuer string, key crypto.Signer, kid string) (*LocalIssuer, error) {
	if issuer == "" {
		return nil, errors.New("dat: local issuer name is required")
	}
	li := &LocalIssuer{issuer: issuer, kid: kid}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k == nil {
			return nil, errors.New("dat: nil signing key")
		}
		switch k.Curve {
		case elliptic.P256():
			li.method = jwt.SigningMethodES256
		case elliptic.P384():
			li.method = jwt.SigningMethodES384
		case elliptic.P521():
			li.method = jwt.SigningMethodES512
		default:
			return nil, errors.New("dat: unsupported ECDSA curve for a local issuer")
		}
		li.key, li.pub = k, &k.PublicKey
	case *rsa.PrivateKey:
		if k == nil {
			return nil, errors.New("dat: nil signing key")
		}
		if k.N == nil || k.N.BitLen() < minLocalRSAKeyBits {
			return nil, fmt.Errorf("dat: RSA signing key must have at least %d bits", minLocalRSAKeyBits)
		}
		li.method, li.key, li.pub = jwt.SigningMethodRS256, k, &k.PublicKey
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return nil, errors.New("dat: invalid Ed25519 signing key")
		}
		li.method, li.key, li.pub = jwt.SigningMethodEdDSA, k, k.Public()
	case *ed25519.PrivateKey:
		if k == nil || len(*k) != ed25519.PrivateKeySize {
			return nil, errors.New("dat: invalid Ed25519 signing key")
		}
		li.method, li.key, li.pub = jwt.SigningMethodEdDSA, *k, k.Public()
	default:
		return nil, fmt.Errorf("dat: unsupported signing key type %T (want *ecdsa.PrivateKey, *rsa.PrivateKey or ed25519.PrivateKey)", key)
	}
	if li.kid == "" {
		der, err := x509.MarshalPKIXPublicKey(li.pub)
		if err != nil {
			return nil, fmt.Errorf("dat: deriving kid: %w", err)
		}
		sum := sha256.Sum256(der)
		li.kid = hex.EncodeToString(sum[:20])
	}
	return li, nil
}

// Issuer is the "iss" of the tokens this issuer signs.
func (i *LocalIssuer) Issuer() string { return i.issuer }

// Kid is the key id in the header of the tokens this issuer signs.
func (i *LocalIssuer) Kid() string { return i.kid }

// Keys returns the issuer's verification key set (a new map on every call),
// for VerifierConfig.Keys.
func (i *LocalIssuer) Keys() StaticKeys { return StaticKeys{i.kid: i.pub} }

// Issue signs a DAT for the connector whose TLS leaf is cert, valid for
// lifetime from now. Header: alg, kid, typ "at+jwt". Claims: iss, sub and
// client_id (ConnectorID(cert)), aud ["idsc:IDS_CONNECTORS_ALL"], iat, nbf,
// exp, jti (a random UUID), scope, @context, @type, securityProfile
// ("idsc:BASE_SECURITY_PROFILE") and transportCertsSha256
// ([Fingerprint(cert)]). referringConnector is not set unless given in extra.
// extra adds or overrides claims; a nil value removes the claim.
func (i *LocalIssuer) Issue(cert *x509.Certificate, lifetime time.Duration, extra map[string]any) ([]byte, error) {
	return i.issueAt(time.Now(), cert, lifetime, extra)
}

func (i *LocalIssuer) issueAt(now time.Time, cert *x509.Certificate, lifetime time.Duration, extra map[string]any) ([]byte, error) {
	if cert == nil {
		return nil, errors.New("dat: a certificate is required to issue a DAT")
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("dat: non-positive DAT lifetime %v", lifetime)
	}
	jti, err := randomUUID()
	if err != nil {
		return nil, err
	}
	sub := ConnectorID(cert)
	claims := jwt.MapClaims{
		"iss":                  i.issuer,
		"sub":                  sub,
		"client_id":            sub,
		"aud":                  []string{AudienceAll},
		"iat":                  now.Unix(),
		"nbf":                  now.Unix(),
		"exp":                  now.Add(lifetime).Unix(),
		"jti":                  jti,
		"scope":                datScope,
		"@context":             datContext,
		"@type":                datType,
		"securityProfile":      datDefaultProfile,
		"transportCertsSha256": []string{Fingerprint(cert)},
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	t := jwt.NewWithClaims(i.method, claims)
	t.Header["typ"] = datHeaderType
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		return nil, fmt.Errorf("dat: signing DAT: %w", err)
	}
	return []byte(s), nil
}

func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("dat: random jti: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// ConnectorID is the IDS connector id of the certificate's holder, as DAPS
// "sub" and client assertions use it (IDS-G Connector_Identities.md,
// idscp2-jvm AisecDapsDriver.extractConnectorUUID): the SubjectKeyIdentifier
// as uppercase two-digit hex bytes joined by ':', then ":keyid:", then the
// AuthorityKeyIdentifier's keyIdentifier the same way, e.g.
// "DD:CB:...:4A:keyid:CB:8C:...:E8".
//
// idscp2-jvm fails on certificates without these extensions; here a missing
// SKI is computed by RFC 5280 §4.2.1.2 method 1 (SHA-1 over the
// subjectPublicKey bits, OpenSSL's default), and a missing AKI is
// taken to be the SKI on a self-issued certificate and left empty otherwise.
// A nil certificate gives "".
func ConnectorID(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	ski := cert.SubjectKeyId
	if len(ski) == 0 {
		ski = computeSKI(cert)
	}
	aki := cert.AuthorityKeyId
	if len(aki) == 0 && bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		aki = ski
	}
	return colonHex(ski) + ":keyid:" + colonHex(aki)
}

func computeSKI(cert *x509.Certificate) []byte {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.PublicKey.RightAlign())
	return sum[:]
}

func colonHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(3 * len(b))
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0x0f])
	}
	return sb.String()
}

// LocalConfig configures NewLocal.
type LocalConfig struct {
	Issuer    *LocalIssuer      // signs this side's tokens
	Cert      *x509.Certificate // this side's TLS leaf: its fingerprint goes into transportCertsSha256, sub = ConnectorID(cert)
	Lifetime  time.Duration     // of this side's tokens; 0 means 1 h
	Threshold float64           // in (0,1]; 0 means 0.666. Used for this side's token cache and as RenewalThreshold
	Claims    map[string]any    // extra/overriding claims, e.g. securityProfile; a nil value removes a claim
	// Verify says how peers' tokens are checked (Issuer + Keys of the
	// trusted issuer(s)). If both Verify.Issuer and Verify.Keys are unset,
	// peers' tokens must come from this side's own Issuer (a closed set-up
	// sharing one issuer key).
	Verify VerifierConfig
	// Now is the clock for issuing and caching tokens, for tests; nil means
	// time.Now. It is also the verifier's clock unless Verify.Now is set.
	Now func() time.Time
}

type localDriver struct {
	issuer    *LocalIssuer
	cert      *x509.Certificate
	lifetime  time.Duration
	threshold float64
	claims    map[string]any
	now       func() time.Time
	verifier  *JWTVerifier

	mu      sync.Mutex
	token   []byte
	renewAt time.Time
}

// NewLocal returns a Driver that issues this side's DATs with a LocalIssuer
// and verifies peers' DATs with a JWTVerifier. Token caches the issued token
// and re-issues it once Threshold of its lifetime has passed (as idscp2-jvm's
// DAPS driver renews at now + (exp−now)×threshold). The first token is issued
// here, so a bad Claims value fails early.
func NewLocal(cfg LocalConfig) (Driver, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("dat: LocalConfig.Issuer is required")
	}
	if cfg.Cert == nil {
		return nil, errors.New("dat: LocalConfig.Cert is required")
	}
	if cfg.Lifetime < 0 {
		return nil, fmt.Errorf("dat: negative LocalConfig.Lifetime %v", cfg.Lifetime)
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = defaultLocalLife
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = defaultLocalRenewal
	}
	if !(cfg.Threshold > 0 && cfg.Threshold <= 1) {
		return nil, fmt.Errorf("dat: LocalConfig.Threshold %v is not in (0,1]", cfg.Threshold)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	vc := cfg.Verify
	if vc.Issuer == "" && vc.Keys == nil {
		vc.Issuer, vc.Keys = cfg.Issuer.issuer, cfg.Issuer.Keys()
	}
	if vc.Now == nil {
		vc.Now = cfg.Now
	}
	v, err := NewJWTVerifier(vc)
	if err != nil {
		return nil, err
	}
	claims := make(map[string]any, len(cfg.Claims))
	for k, val := range cfg.Claims {
		claims[k] = val
	}
	d := &localDriver{
		issuer:    cfg.Issuer,
		cert:      cfg.Cert,
		lifetime:  cfg.Lifetime,
		threshold: cfg.Threshold,
		claims:    claims,
		now:       cfg.Now,
		verifier:  v,
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.renewLocked(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *localDriver) renewLocked() error {
	now := d.now()
	tok, err := d.issuer.issueAt(now, d.cert, d.lifetime, d.claims)
	if err != nil {
		return err
	}
	d.token = tok
	// exp is whole seconds (rounded down), so renew against it, not against
	// the nominal lifetime: a token must never be served past its exp.
	exp := time.Unix(now.Add(d.lifetime).Unix(), 0)
	d.renewAt = now.Add(time.Duration(float64(exp.Sub(now)) * d.threshold))
	return nil
}

// Token returns the cached DAT, re-issuing it once the renewal time is reached.
func (d *localDriver) Token(context.Context) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.token == nil || !d.now().Before(d.renewAt) {
		if err := d.renewLocked(); err != nil {
			return nil, err
		}
	}
	return bytes.Clone(d.token), nil
}

func (d *localDriver) Verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*Identity, error) {
	return d.verifier.Verify(ctx, token, peerCert)
}

func (d *localDriver) RenewalThreshold() float64 { return d.threshold }
