package dat

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestLocalIssuerRoundTrip(t *testing.T) {
	f := fx(t)
	cases := []struct {
		name   string
		key    crypto.Signer
		alg    string
		pubTyp any
	}{
		{"ES256", f.ecKey, "ES256", &ecdsa.PublicKey{}},
		{"RS256", f.rsaKey, "RS256", &rsa.PublicKey{}},
		{"EdDSA", f.edKey, "EdDSA", ed25519.PublicKey{}},
		{"EdDSA pointer", &f.edKey, "EdDSA", ed25519.PublicKey{}},
		{"ES384", f.ec384Key, "ES384", &ecdsa.PublicKey{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			li, err := NewLocalIssuer(testIssuer, c.key, "kid-1")
			if err != nil {
				t.Fatal(err)
			}
			if li.Issuer() != testIssuer || li.Kid() != "kid-1" {
				t.Fatalf("Issuer/Kid = %q/%q", li.Issuer(), li.Kid())
			}
			tok, err := li.Issue(f.peer.cert, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Header and claims shape, read without verification.
			mc := jwt.MapClaims{}
			pt, _, err := jwt.NewParser().ParseUnverified(string(tok), mc)
			if err != nil {
				t.Fatal(err)
			}
			if pt.Header["alg"] != c.alg || pt.Header["kid"] != "kid-1" || pt.Header["typ"] != "at+jwt" || len(pt.Header) != 3 {
				t.Errorf("header = %v", pt.Header)
			}
			sub := ConnectorID(f.peer.cert)
			want := map[string]any{
				"iss":             testIssuer,
				"sub":             sub,
				"client_id":       sub,
				"scope":           "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",
				"@context":        "https://w3id.org/idsa/contexts/context.jsonld",
				"@type":           "ids:DatPayload",
				"securityProfile": "idsc:BASE_SECURITY_PROFILE",
			}
			for k, v := range want {
				if mc[k] != v {
					t.Errorf("claim %s = %v, want %v", k, mc[k], v)
				}
			}
			if aud, ok := mc["aud"].([]any); !ok || len(aud) != 1 || aud[0] != "idsc:IDS_CONNECTORS_ALL" {
				t.Errorf("aud = %#v", mc["aud"])
			}
			if fp, ok := mc["transportCertsSha256"].([]any); !ok || len(fp) != 1 || fp[0] != Fingerprint(f.peer.cert) {
				t.Errorf("transportCertsSha256 = %#v", mc["transportCertsSha256"])
			}
			if jti, _ := mc["jti"].(string); !uuidRE.MatchString(jti) {
				t.Errorf("jti = %q", jti)
			}
			if _, ok := mc["referringConnector"]; ok {
				t.Errorf("referringConnector set by default")
			}
			iat, nbf, exp := mc["iat"].(float64), mc["nbf"].(float64), mc["exp"].(float64)
			if iat != nbf || exp-iat != 3600 {
				t.Errorf("iat/nbf/exp = %v/%v/%v", iat, nbf, exp)
			}

			keys := li.Keys()
			if len(keys) != 1 {
				t.Fatalf("Keys = %v", keys)
			}
			pub, err := keys.Key(context.Background(), "kid-1")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(c.key.Public()) {
				t.Errorf("Keys()[kid] is not the signer's public key")
			}
			v, err := NewJWTVerifier(VerifierConfig{Issuer: testIssuer, Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(context.Background(), tok, f.peer.cert)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Subject != sub || id.Issuer != testIssuer || id.SecurityProfile != "idsc:BASE_SECURITY_PROFILE" {
				t.Errorf("identity = %+v", id)
			}
			if _, err := v.Verify(context.Background(), tok, f.other.cert); ReasonOf(err) != ReasonFingerprint {
				t.Errorf("other cert: %v", err)
			}
		})
	}
}

func TestLocalIssuerExtraClaims(t *testing.T) {
	f := fx(t)
	li, err := NewLocalIssuer(testIssuer, f.ecKey, "ec")
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, func(c *VerifierConfig) { c.Keys = li.Keys(); c.Now = nil })

	tok, err := li.Issue(f.peer.cert, time.Hour, map[string]any{
		"securityProfile":    "idsc:TRUST_SECURITY_PROFILE",
		"referringConnector": "https://a.example/",
		"extendedGuarantee":  "idsc:USAGE_CONTROL_POLICY_ENFORCEMENT",
		"client_id":          nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), tok, f.peer.cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.SecurityProfile != "idsc:TRUST_SECURITY_PROFILE" || id.ReferringConnector != "https://a.example/" ||
		id.Claims["extendedGuarantee"] != "idsc:USAGE_CONTROL_POLICY_ENFORCEMENT" {
		t.Errorf("identity = %+v", id)
	}
	if _, ok := id.Claims["client_id"]; ok {
		t.Errorf("nil extra did not remove client_id")
	}

	// Crafted refusals through the issuer's overrides.
	for _, c := range []struct {
		extra map[string]any
		want  Reason
	}{
		{map[string]any{"transportCertsSha256": nil}, ReasonFingerprint},
		{map[string]any{"exp": nil}, ReasonMissingClaim},
		{map[string]any{"sub": nil}, ReasonSubject},
		{map[string]any{"aud": "elsewhere"}, ReasonAudience},
		{map[string]any{"iss": "https://evil"}, ReasonIssuer},
	} {
		tok, err := li.Issue(f.peer.cert, time.Hour, c.extra)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), tok, f.peer.cert); ReasonOf(err) != c.want {
			t.Errorf("extra %v: %v, want %s", c.extra, err, c.want)
		}
	}
}

func TestNewLocalIssuerErrors(t *testing.T) {
	f := fx(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224 := mustEC(elliptic.P224())
	cases := []struct {
		name   string
		issuer string
		key    crypto.Signer
	}{
		{"no issuer", "", f.ecKey},
		{"nil key", testIssuer, nil},
		{"nil ecdsa", testIssuer, (*ecdsa.PrivateKey)(nil)},
		{"RSA 1024", testIssuer, small},
		{"P-224", testIssuer, p224},
		{"short ed25519", testIssuer, ed25519.PrivateKey(make([]byte, 10))},
	}
	for _, c := range cases {
		if li, err := NewLocalIssuer(c.issuer, c.key, "k"); err == nil || li != nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	li, err := NewLocalIssuer(testIssuer, f.ecKey, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := li.Issue(nil, time.Hour, nil); err == nil {
		t.Error("Issue(nil cert) accepted")
	}
	if _, err := li.Issue(f.peer.cert, 0, nil); err == nil {
		t.Error("Issue(lifetime 0) accepted")
	}
	if _, err := li.Issue(f.peer.cert, time.Hour, map[string]any{"bad": make(chan int)}); err == nil {
		t.Error("Issue(unmarshalable claim) accepted")
	}
}

func TestNewLocalIssuerDerivedKid(t *testing.T) {
	f := fx(t)
	a, err := NewLocalIssuer(testIssuer, f.ecKey, "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewLocalIssuer(testIssuer, f.ecKey, "")
	c, _ := NewLocalIssuer(testIssuer, f.otherEC, "")
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(a.Kid()) || a.Kid() != b.Kid() || a.Kid() == c.Kid() {
		t.Fatalf("derived kids %q %q %q", a.Kid(), b.Kid(), c.Kid())
	}
}

func TestConnectorID(t *testing.T) {
	// The IDS-G example (ecosystem.md §1.3), built from real extensions.
	ski := []byte{0xDD, 0xCB, 0xFD, 0x0B, 0x93, 0x84, 0x33, 0x01, 0x11, 0xEB, 0x5D, 0x94, 0x94, 0x88, 0xBE, 0x78, 0x7D, 0x57, 0xFC, 0x4A}
	aki := []byte{0xCB, 0x8C, 0xC7, 0xB6, 0x85, 0x79, 0xA8, 0x23, 0xA6, 0xCB, 0x15, 0xAB, 0x17, 0x50, 0x2F, 0xE6, 0x65, 0x43, 0x5D, 0xE8}
	caKey := mustEC(elliptic.P256())
	caTmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "CA"},
		NotBefore: t0, NotAfter: t0.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: aki,
	}
	ca := createCert(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	leafKey := mustEC(elliptic.P256())
	leaf := createCert(&x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "connector"},
		NotBefore: t0, NotAfter: t0.Add(time.Hour), SubjectKeyId: ski,
	}, ca, &leafKey.PublicKey, caKey)
	const want = "DD:CB:FD:0B:93:84:33:01:11:EB:5D:94:94:88:BE:78:7D:57:FC:4A:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8"
	if got := ConnectorID(leaf); got != want {
		t.Fatalf("ConnectorID = %q\nwant          %q", got, want)
	}

	// Leading zero bytes keep two digits.
	if got := colonHex([]byte{0x00, 0x0a, 0xff}); got != "00:0A:FF" {
		t.Fatalf("colonHex = %q", got)
	}

	// Self-signed, no SKI/AKI extensions: SKI computed (SHA-1, 20 bytes), AKI = SKI.
	k := mustEC(elliptic.P256())
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "self"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	self := createCert(tmpl, tmpl, &k.PublicKey, k)
	if len(self.SubjectKeyId) != 0 || len(self.AuthorityKeyId) != 0 {
		t.Skip("this Go version adds key identifiers to non-CA self-signed certificates")
	}
	id := ConnectorID(self)
	re := regexp.MustCompile(`^((?:[0-9A-F]{2}:){19}[0-9A-F]{2}):keyid:((?:[0-9A-F]{2}:){19}[0-9A-F]{2})$`)
	m := re.FindStringSubmatch(id)
	if m == nil || m[1] != m[2] {
		t.Fatalf("self-signed ConnectorID = %q", id)
	}
	if ConnectorID(nil) != "" {
		t.Fatal("ConnectorID(nil) not empty")
	}
	// The fixture's CA-issued leaves: SKI from the cert, AKI = CA's SKI.
	f := fx(t)
	if got, want := ConnectorID(f.peer.cert), colonHex(f.peer.cert.SubjectKeyId)+":keyid:"+colonHex(f.ca.cert.SubjectKeyId); got != want {
		t.Fatalf("ConnectorID(peer) = %q, want %q", got, want)
	}
}

// localPair builds two local drivers, A and B, trusting one shared issuer.
func localPair(t *testing.T, clk *clock, mod func(*LocalConfig)) (a, b Driver, li *LocalIssuer) {
	t.Helper()
	f := fx(t)
	li, err := NewLocalIssuer("https://local-daps.test", f.ecKey, "local")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(cert *x509.Certificate) Driver {
		cfg := LocalConfig{
			Issuer: li,
			Cert:   cert,
			Verify: VerifierConfig{Issuer: li.Issuer(), Keys: li.Keys()},
			Now:    clk.Now,
		}
		if mod != nil {
			mod(&cfg)
		}
		d, err := NewLocal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return mk(f.peer.cert), mk(f.other.cert), li
}

func TestLocalRoundTrip(t *testing.T) {
	f := fx(t)
	clk := &clock{t: t0}
	a, b, _ := localPair(t, clk, nil)
	ctx := context.Background()

	tokA, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, err := b.Verify(ctx, tokA, f.peer.cert)
	if err != nil {
		t.Fatalf("B verifying A: %v", err)
	}
	if id.Subject != ConnectorID(f.peer.cert) || id.Issuer != "https://local-daps.test" {
		t.Errorf("identity = %+v", id)
	}
	if !id.Expiry.Equal(t0.Add(time.Hour)) {
		t.Errorf("Expiry = %v", id.Expiry)
	}
	if got := b.RenewalThreshold(); got != 0.666 {
		t.Errorf("RenewalThreshold = %v", got)
	}
	if rin := id.RenewIn(clk.Now(), b.RenewalThreshold()); rin <= 0 || rin > time.Hour {
		t.Errorf("RenewIn = %v", rin)
	}
	// A's token is bound to A's certificate.
	if _, err := b.Verify(ctx, tokA, f.other.cert); ReasonOf(err) != ReasonFingerprint {
		t.Errorf("A's token with B's cert: %v", err)
	}
	tokB, _ := b.Token(ctx)
	if _, err := a.Verify(ctx, tokB, f.other.cert); err != nil {
		t.Errorf("A verifying B: %v", err)
	}
}

func TestLocalCaching(t *testing.T) {
	f := fx(t)
	clk := &clock{t: t0}
	a, b, _ := localPair(t, clk, func(c *LocalConfig) {
		c.Lifetime = 100 * time.Second
		c.Threshold = 0.5
	})
	ctx := context.Background()
	first, _ := a.Token(ctx)
	first[len(first)-1] ^= 1 // a caller mutating its copy must not hurt the cache
	first, _ = a.Token(ctx)

	clk.Add(49 * time.Second)
	if again, _ := a.Token(ctx); string(again) != string(first) {
		t.Fatal("token re-issued before the threshold")
	}
	clk.Add(time.Second) // exactly 50% of 100 s
	renewed, _ := a.Token(ctx)
	if string(renewed) == string(first) {
		t.Fatal("token not re-issued at the threshold")
	}
	id, err := b.Verify(ctx, renewed, f.peer.cert)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Expiry.Equal(t0.Add(150 * time.Second)) {
		t.Errorf("renewed Expiry = %v", id.Expiry)
	}
	if again, _ := a.Token(ctx); string(again) != string(renewed) {
		t.Fatal("renewed token not cached")
	}
	// The old token is still valid for B until it expires (+ leeway).
	if _, err := b.Verify(ctx, first, f.peer.cert); err != nil {
		t.Errorf("old token: %v", err)
	}
	clk.Add(81 * time.Second) // t0+131s: first expired at t0+100s, leeway 30s
	if _, err := b.Verify(ctx, first, f.peer.cert); ReasonOf(err) != ReasonExpired {
		t.Errorf("old token after expiry: %v", err)
	}
}

func TestLocalRealClockShortLifetime(t *testing.T) {
	// Real clock, a tiny lifetime: the token is re-issued once its renewal
	// time has passed. The wait is bounded by a few ms.
	f := fx(t)
	li, err := NewLocalIssuer("https://local-daps.test", f.ecKey, "local")
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewLocal(LocalConfig{Issuer: li, Cert: f.peer.cert, Lifetime: 2 * time.Millisecond, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := d.Token(context.Background())
	time.Sleep(3 * time.Millisecond)
	second, _ := d.Token(context.Background())
	if string(first) == string(second) {
		t.Fatal("token not re-issued after its lifetime")
	}
}

func TestLocalDefaults(t *testing.T) {
	f := fx(t)
	li, err := NewLocalIssuer("https://local-daps.test", f.ecKey, "")
	if err != nil {
		t.Fatal(err)
	}
	// No Verify config: trust the own issuer. Claims override the profile.
	d, err := NewLocal(LocalConfig{
		Issuer: li,
		Cert:   f.peer.cert,
		Claims: map[string]any{"securityProfile": "idsc:TRUST_PLUS_SECURITY_PROFILE", "referringConnector": "https://me.example/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := d.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.Verify(context.Background(), tok, f.peer.cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.SecurityProfile != "idsc:TRUST_PLUS_SECURITY_PROFILE" || id.ReferringConnector != "https://me.example/" {
		t.Errorf("identity = %+v", id)
	}
	if d.RenewalThreshold() != 0.666 {
		t.Errorf("threshold = %v", d.RenewalThreshold())
	}
	if rin := id.RenewIn(time.Now(), d.RenewalThreshold()); rin < 39*time.Minute || rin > 40*time.Minute {
		t.Errorf("RenewIn = %v, want ≈ 0.666 h", rin)
	}

	// Peers' tokens from another issuer are refused.
	otherLI, _ := NewLocalIssuer("https://other-daps.test", f.otherEC, "")
	foreign, _ := otherLI.Issue(f.other.cert, time.Hour, nil)
	if _, err := d.Verify(context.Background(), foreign, f.other.cert); ReasonOf(err) != ReasonUnknownKey {
		t.Errorf("foreign token: %v", err)
	}
}

func TestNewLocalErrors(t *testing.T) {
	f := fx(t)
	li, _ := NewLocalIssuer("https://local-daps.test", f.ecKey, "k")
	bad := []LocalConfig{
		{Cert: f.peer.cert},
		{Issuer: li},
		{Issuer: li, Cert: f.peer.cert, Lifetime: -time.Second},
		{Issuer: li, Cert: f.peer.cert, Threshold: 1.5},
		{Issuer: li, Cert: f.peer.cert, Threshold: -0.1},
		{Issuer: li, Cert: f.peer.cert, Verify: VerifierConfig{Issuer: "https://x"}}, // keys missing
		{Issuer: li, Cert: f.peer.cert, Verify: VerifierConfig{Keys: li.Keys(), MinSecurityProfile: "nope"}},
		{Issuer: li, Cert: f.peer.cert, Claims: map[string]any{"x": func() {}}},
	}
	for i, c := range bad {
		if d, err := NewLocal(c); err == nil || d != nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

func TestLocalConcurrent(t *testing.T) {
	f := fx(t)
	clk := &clock{t: t0}
	a, b, _ := localPair(t, clk, func(c *LocalConfig) { c.Lifetime = 10 * time.Second })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if j%5 == 0 {
					clk.Add(time.Second)
				}
				tok, err := a.Token(ctx)
				if err != nil {
					errs <- err
					return
				}
				// Other goroutines may advance the clock between Token and
				// Verify, but never past the 10 s lifetime + 30 s leeway.
				if _, err := b.Verify(ctx, tok, f.peer.cert); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
