package daps

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// TestTokenRequestShape checks the token request against what idscp2-jvm
// sends (idscp2.md §4.1): form parameters, claims request, and the client
// assertion's header and claims.
func TestTokenRequestShape(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	var mu sync.Mutex
	var forms []map[string][]string
	d.onToken = func(r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		mu.Lock()
		forms = append(forms, r.PostForm)
		mu.Unlock()
	}
	extra := "4a27ddbeadeb2c8efd37b89bfda7213390e7a0192f728e09e132838a2733c6ec"
	drv := d.driverFor(t, pki.Client, func(c *Config) { c.TransportCerts = []string{extra} })
	if _, err := drv.Token(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forms) != 1 {
		t.Fatalf("%d token requests", len(forms))
	}
	f := forms[0]
	for k, want := range map[string]string{
		"grant_type":            "client_credentials",
		"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
		"scope":                 "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",
	} {
		if len(f[k]) != 1 || f[k][0] != want {
			t.Errorf("%s = %v, want %q", k, f[k], want)
		}
	}
	var claims map[string]map[string]map[string][]string
	if err := json.Unmarshal([]byte(f["claims"][0]), &claims); err != nil {
		t.Fatalf("claims %q: %v", f["claims"], err)
	}
	if got := claims["access_token"]["transportCertsSha256"]["value"]; len(got) != 2 || got[0] != dat.Fingerprint(pki.Client.Cert) || got[1] != extra {
		t.Errorf("claims request values %v", got)
	}

	assertion := f["client_assertion"][0]
	mc := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(assertion, mc)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header["alg"] != "ES256" || tok.Header["typ"] != "JWT" || tok.Header["kid"] != nil {
		t.Errorf("assertion header %v", tok.Header)
	}
	id := dat.ConnectorID(pki.Client.Cert)
	if !regexp.MustCompile(`^([0-9A-F]{2}:){19}[0-9A-F]{2}:keyid:([0-9A-F]{2}:){19}[0-9A-F]{2}$`).MatchString(id) {
		t.Errorf("connector id %q is not SKI:keyid:AKI", id)
	}
	if mc["iss"] != id || mc["sub"] != id {
		t.Errorf("iss %v sub %v, want %q", mc["iss"], mc["sub"], id)
	}
	if mc["aud"] != d.srv.TokenEndpoint() {
		t.Errorf("aud %v, want the token endpoint", mc["aud"])
	}
	if mc["@context"] != "https://w3id.org/idsa/contexts/context.jsonld" || mc["@type"] != "ids:DatRequestToken" {
		t.Errorf("@context %v @type %v", mc["@context"], mc["@type"])
	}
	iat, nbf, exp := mc["iat"].(float64), mc["nbf"].(float64), mc["exp"].(float64)
	if iat != nbf || exp-iat != DefaultAssertionLifetime.Seconds() {
		t.Errorf("iat %v nbf %v exp %v", iat, nbf, exp)
	}
	if jti, _ := mc["jti"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(jti) {
		t.Errorf("jti %q is not a UUIDv4", jti)
	}
	// The signature verifies with the connector certificate's key.
	if _, err := jwt.Parse(assertion, func(*jwt.Token) (any, error) { return pki.Client.Cert.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"})); err != nil {
		t.Errorf("assertion signature: %v", err)
	}
}

// TestAssertionAudienceAndKeys: the audience is configurable (omejdn-daps
// accepts only idsc:IDS_CONNECTORS_ALL), and RSA, P-384 and Ed25519
// connector keys all produce assertions the DAPS accepts.
func TestAssertionAudienceAndKeys(t *testing.T) {
	ca := pki.CA
	rsaLeaf, err := ca.Issue(testpki.LeafOptions{CommonName: "rsa", KeyType: testpki.RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	edLeaf, err := ca.Issue(testpki.LeafOptions{CommonName: "ed", KeyType: testpki.Ed25519})
	if err != nil {
		t.Fatal(err)
	}
	d := startDAPS(t, dapsOpts{
		clients: []dapsserver.Client{{Certificate: pki.Client.Cert}, {Certificate: rsaLeaf.Cert}, {Certificate: edLeaf.Cert}},
		modify:  func(c *dapsserver.Config) { c.AcceptAudiences = []string{dat.AudienceAll} }, // as omejdn-daps
	})
	ctx := ctxTimeout(t, 10*time.Second)
	// Default aud (token endpoint) is refused by this DAPS.
	if _, err := d.driverFor(t, pki.Client, nil).Token(ctx); err == nil {
		t.Fatal("aud = token endpoint accepted by a DAPS configured for idsc:IDS_CONNECTORS_ALL only")
	}
	for name, leaf := range map[string]*testpki.Leaf{"ES256": pki.Client, "RS256": rsaLeaf, "EdDSA": edLeaf} {
		t.Run(name, func(t *testing.T) {
			drv := d.driverFor(t, leaf, func(c *Config) { c.Audience = dat.AudienceAll })
			if drv.alg != name {
				t.Errorf("alg %s", drv.alg)
			}
			tok, err := drv.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drv.Verify(ctx, tok, leaf.Cert); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSignJWSAlgorithms(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, key := range []crypto.Signer{mustEC(t, elliptic.P256()), mustEC(t, elliptic.P384()), mustEC(t, elliptic.P521()), ed} {
		alg, err := assertionAlg(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		s, err := signJWS(key, alg, map[string]any{"x": 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwt.Parse(s, func(*jwt.Token) (any, error) { return key.Public(), nil }, jwt.WithValidMethods([]string{alg})); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	if _, err := assertionAlg("not a key"); err == nil {
		t.Error("a string accepted as key")
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := assertionAlg(small.Public()); err == nil {
		t.Error("RSA-1024 accepted")
	}
}

func mustEC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewConfigErrors(t *testing.T) {
	ok := Config{URL: "https://daps.example.org/auth", Certificate: pki.Client.Cert, Key: pki.Client.Key}
	if d, err := New(ok); err != nil {
		t.Fatal(err)
	} else {
		d.Close()
		if d.RenewalThreshold() != DefaultThreshold || d.ConnectorID() != dat.ConnectorID(pki.Client.Cert) {
			t.Error("defaults")
		}
	}
	for name, mod := range map[string]func(*Config){
		"no URL":        func(c *Config) { c.URL = "" },
		"relative URL":  func(c *Config) { c.URL = "/auth" },
		"ftp URL":       func(c *Config) { c.URL = "ftp://x/" },
		"query":         func(c *Config) { c.URL = "https://x/?a=b" },
		"no cert":       func(c *Config) { c.Certificate = nil },
		"no key":        func(c *Config) { c.Key = nil },
		"threshold > 1": func(c *Config) { c.Threshold = 1.5 },
		"threshold < 0": func(c *Config) { c.Threshold = -0.5 },
		"neg timeout":   func(c *Config) { c.RequestTimeout = -1 },
		"bad profile":   func(c *Config) { c.MinSecurityProfile = "TRUSTED" },
		"bad fp":        func(c *Config) { c.TransportCerts = []string{"ABC"} },
		"neg size":      func(c *Config) { c.MaxTokenSize = -1 },
	} {
		c := ok
		mod(&c)
		if d, err := New(c); err == nil {
			d.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestClosedDriver: after Close nothing new is fetched; cached values are
// still served.
func TestClosedDriver(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	drv := d.driverFor(t, pki.Client, nil)
	ctx := ctxTimeout(t, 10*time.Second)
	tok, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drv.Close()
	if again, err := drv.Token(ctx); err != nil || string(again) != string(tok) {
		t.Fatalf("cached token after Close: %v", err)
	}
	other := d.driverFor(t, pki.Server, nil)
	other.Close()
	if _, err := other.Token(context.Background()); err == nil {
		t.Fatal("a closed driver fetched a token")
	}
}
