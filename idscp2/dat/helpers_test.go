package dat

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the fixed "now" of the verifier tests.
var t0 = time.Unix(1_750_000_000, 0)

func fixedNow() time.Time { return t0 }

const testIssuer = "https://daps.example.org/auth"

// fixture holds keys and certificates shared by the tests; generating RSA
// keys is slow, so it is built once.
type fixture struct {
	ecKey    *ecdsa.PrivateKey // kid "ec"
	ec384Key *ecdsa.PrivateKey // kid "ec384"
	ec521Key *ecdsa.PrivateKey // kid "ec521"
	rsaKey   *rsa.PrivateKey   // kid "rsa"
	edKey    ed25519.PrivateKey
	otherEC  *ecdsa.PrivateKey // not in the key set

	ca    certKey
	peer  certKey // the peer's TLS leaf
	other certKey // another leaf
}

var fixtureOnce = sync.OnceValue(func() *fixture {
	f := &fixture{
		ecKey:    mustEC(elliptic.P256()),
		ec384Key: mustEC(elliptic.P384()),
		ec521Key: mustEC(elliptic.P521()),
		otherEC:  mustEC(elliptic.P256()),
	}
	var err error
	if f.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if _, f.edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	f.ca = newCA("Test CA")
	f.peer = newLeaf(f.ca, "peer.example.org")
	f.other = newLeaf(f.ca, "other.example.org")
	return f
})

func fx(tb testing.TB) *fixture {
	tb.Helper()
	return fixtureOnce()
}

func (f *fixture) keys() StaticKeys {
	return StaticKeys{
		"ec":    &f.ecKey.PublicKey,
		"ec384": &f.ec384Key.PublicKey,
		"ec521": &f.ec521Key.PublicKey,
		"edptr": func() *ed25519.PublicKey { p := f.edKey.Public().(ed25519.PublicKey); return &p }(),
		"rsa":   &f.rsaKey.PublicKey,
		"ed":    f.edKey.Public(),
	}
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

type certKey struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

func newCA(cn string) certKey {
	k := mustEC(elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              t0.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	return certKey{createCert(tmpl, tmpl, &k.PublicKey, k), k}
}

func newLeaf(ca certKey, cn string) certKey {
	k := mustEC(elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	ski := make([]byte, 20)
	if _, err := rand.Read(ski); err != nil {
		panic(err)
	}
	tmpl.SubjectKeyId = ski
	return certKey{createCert(tmpl, ca.cert, &k.PublicKey, ca.key), k}
}

// baseClaims is a valid DAT payload for cert at t0, shaped like the
// constructed example in ecosystem.md §1.5.
func baseClaims(cert *x509.Certificate) jwt.MapClaims {
	return jwt.MapClaims{
		"scope":                "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",
		"aud":                  []any{"idsc:IDS_CONNECTORS_ALL"},
		"iss":                  testIssuer,
		"sub":                  ConnectorID(cert),
		"nbf":                  t0.Unix(),
		"iat":                  t0.Unix(),
		"jti":                  "0267a2d6-455a-4a1a-b361-d273bb8357f5",
		"exp":                  t0.Add(time.Hour).Unix(),
		"client_id":            ConnectorID(cert),
		"@context":             "https://w3id.org/idsa/contexts/context.jsonld",
		"@type":                "ids:DatPayload",
		"securityProfile":      "idsc:BASE_SECURITY_PROFILE",
		"referringConnector":   "https://connector-a.example.org/",
		"transportCertsSha256": Fingerprint(cert),
	}
}

// with returns a copy of c with the given changes; a nil value deletes.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

// mint signs claims with golang-jwt; kid "" leaves the header without kid.
func mint(tb testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) []byte {
	tb.Helper()
	t := jwt.NewWithClaims(m, claims)
	t.Header["typ"] = "at+jwt"
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatalf("signing: %v", err)
	}
	return []byte(s)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// compact builds a JWS compact token by hand.
func compact(header, claims any, sig []byte) []byte {
	return []byte(b64(mustJSON(header)) + "." + b64(mustJSON(claims)) + "." + b64(sig))
}

func newTestVerifier(tb testing.TB, mod func(*VerifierConfig)) *JWTVerifier {
	tb.Helper()
	cfg := VerifierConfig{Issuer: testIssuer, Keys: fx(tb).keys(), Now: fixedNow}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewJWTVerifier(cfg)
	if err != nil {
		tb.Fatalf("NewJWTVerifier: %v", err)
	}
	return v
}
