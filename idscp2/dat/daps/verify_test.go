package daps

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// forge signs claims with the DAPS's own key (or key) under kid.
func forge(t testing.TB, key any, method jwt.SigningMethod, kid string, claims jwt.MapClaims) []byte {
	t.Helper()
	tk := jwt.NewWithClaims(method, claims)
	tk.Header["typ"] = "at+jwt"
	if kid != "" {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rawToken(header, claims any, sig []byte) []byte {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return []byte(b64url(h) + "." + b64url(c) + "." + b64url(sig))
}

// datClaims is a valid DAT payload of d for the client certificate.
func (d *testDAPS) datClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"scope":                Scope,
		"aud":                  []any{dat.AudienceAll},
		"iss":                  d.url,
		"sub":                  dat.ConnectorID(pki.Client.Cert),
		"client_id":            dat.ConnectorID(pki.Client.Cert),
		"nbf":                  now.Unix(),
		"iat":                  now.Unix(),
		"exp":                  now.Add(time.Hour).Unix(),
		"jti":                  "f0e1d2c3-0000-4000-8000-000000000000",
		"@context":             AssertionContext,
		"@type":                "ids:DatPayload",
		"securityProfile":      "idsc:BASE_SECURITY_PROFILE",
		"transportCertsSha256": []any{dat.Fingerprint(pki.Client.Cert)},
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// TestVerifyRefusals: every kind of bad token is refused by Driver.Verify
// with the right reason, which is also reported to OnRefusal.
func TestVerifyRefusals(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	var rs reasons
	v := d.driverFor(t, pki.Server, func(c *Config) { c.OnRefusal = rs.hook; c.MaxTokenSize = 4096 })
	strict := d.driverFor(t, pki.Server, func(c *Config) {
		c.OnRefusal = rs.hook
		c.MinSecurityProfile = "idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE"
	})
	ctx := ctxTimeout(t, 10*time.Second)
	kid := d.srv.CurrentKeyID()
	now := time.Now()
	claims := d.datClaims(now)
	es := func(c jwt.MapClaims) []byte { return forge(t, d.key, jwt.SigningMethodES256, kid, c) }

	// The genuine article passes.
	if _, err := v.Verify(ctx, es(claims), pki.Client.Cert); err != nil {
		t.Fatalf("valid forged-with-the-real-key token refused: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(d.key.Public())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	jwksBody := fetchBody(t, d.srv.JWKSURI())
	hmacWith := func(secret []byte) []byte {
		h, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid})
		c, _ := json.Marshal(claims)
		input := b64url(h) + "." + b64url(c)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return []byte(input + "." + b64url(m.Sum(nil)))
	}
	valid := string(es(claims))
	parts := strings.Split(valid, ".")

	cases := []struct {
		name   string
		token  []byte
		cert   *x509.Certificate
		driver *Driver
		want   dat.Reason
	}{
		{"bad signature (other key, real kid)", forge(t, other, jwt.SigningMethodES256, kid, claims), nil, nil, dat.ReasonSignature},
		{"tampered payload", []byte(parts[0] + "." + b64url([]byte(`{"sub":"evil"}`)) + "." + parts[2]), nil, nil, dat.ReasonSignature},
		{"alg none", rawToken(map[string]any{"alg": "none", "kid": kid}, claims, nil), nil, nil, dat.ReasonAlgorithm},
		{"HS256 keyed with the public key PEM", hmacWith(pubPEM), nil, nil, dat.ReasonAlgorithm},
		{"HS256 keyed with the public key DER", hmacWith(pubDER), nil, nil, dat.ReasonAlgorithm},
		{"HS256 keyed with the JWKS document", hmacWith(jwksBody), nil, nil, dat.ReasonAlgorithm},
		{"RS256 under the EC kid", rawToken(map[string]any{"alg": "RS256", "kid": kid}, claims, make([]byte, 256)), nil, nil, dat.ReasonAlgorithm},
		{"unknown kid", forge(t, d.key, jwt.SigningMethodES256, "forged-kid", claims), nil, nil, dat.ReasonUnknownKey},
		{"no kid", forge(t, d.key, jwt.SigningMethodES256, "", claims), nil, nil, dat.ReasonUnknownKey},
		{"wrong issuer", es(with(claims, "iss", "https://evil.example/")), nil, nil, dat.ReasonIssuer},
		{"wrong audience", es(with(claims, "aud", "https://some-service.example/")), nil, nil, dat.ReasonAudience},
		{"expired", es(with(claims, "exp", now.Add(-time.Minute).Unix())), nil, nil, dat.ReasonExpired},
		{"not yet valid (nbf)", es(with(claims, "nbf", now.Add(time.Minute).Unix())), nil, nil, dat.ReasonNotYetValid},
		{"not yet valid (iat)", es(with(claims, "iat", now.Add(time.Minute).Unix())), nil, nil, dat.ReasonNotYetValid},
		{"fingerprint missing", es(with(claims, "transportCertsSha256", nil)), nil, nil, dat.ReasonFingerprint},
		{"fingerprint of another certificate", es(with(claims, "transportCertsSha256", dat.Fingerprint(pki.Server.Cert))), nil, nil, dat.ReasonFingerprint},
		{"presented by another certificate", es(claims), pki.Foreign.Cert, nil, dat.ReasonFingerprint},
		{"profile below the required one", es(claims), nil, strict, dat.ReasonProfile},
		{"profile missing, one required", es(with(claims, "securityProfile", nil)), nil, strict, dat.ReasonProfile},
		{"no sub", es(with(claims, "sub", nil)), nil, nil, dat.ReasonSubject},
		{"no exp", es(with(claims, "exp", nil)), nil, nil, dat.ReasonMissingClaim},
		{"malformed: garbage", []byte("definitely not a JWT"), nil, nil, dat.ReasonMalformed},
		{"malformed: NullDaps token", []byte(dat.NullToken), nil, nil, dat.ReasonMalformed},
		{"malformed: bad JSON", []byte(parts[0] + "." + b64url([]byte(`{"sub":`)) + "." + parts[2]), nil, nil, dat.ReasonMalformed},
		{"malformed: four segments", []byte(valid + ".x"), nil, nil, dat.ReasonMalformed},
		{"oversized", es(with(claims, "pad", strings.Repeat("x", 4096))), nil, nil, dat.ReasonOversized},
		{"oversized garbage", bytes.Repeat([]byte("A"), 1<<20), nil, nil, dat.ReasonOversized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			drv := c.driver
			if drv == nil {
				drv = v
			}
			cert := c.cert
			if cert == nil {
				cert = pki.Client.Cert
			}
			before := rs.get(c.want)
			id, err := drv.Verify(ctx, c.token, cert)
			wantReason(t, id, err, c.want)
			if rs.get(c.want) != before+1 {
				t.Errorf("OnRefusal(%q) not called once", c.want)
			}
		})
	}
	t.Run("profile accepted when high enough", func(t *testing.T) {
		if _, err := strict.Verify(ctx, es(with(claims, "securityProfile", "idsc:TRUST_SECURITY_PROFILE")), pki.Client.Cert); err != nil {
			t.Fatal(err)
		}
	})
}

func fetchBody(t testing.TB, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUnknownKidRateLimit: a flood of tokens with forged kids makes the
// driver fetch the JWKS at most once more; a new key published after the
// refresh interval is picked up.
func TestUnknownKidRateLimit(t *testing.T) {
	clk := newClock()
	d := startDAPS(t, dapsOpts{now: clk.Now})
	var rs reasons
	v := d.driverFor(t, pki.Server, func(c *Config) { c.OnRefusal = rs.hook; c.Now = clk.Now })
	ctx := ctxTimeout(t, 10*time.Second)
	claims := d.datClaims(clk.Now())
	if _, err := v.Verify(ctx, forge(t, d.key, jwt.SigningMethodES256, d.srv.CurrentKeyID(), claims), pki.Client.Cert); err != nil {
		t.Fatal(err)
	}
	if n := d.jwks.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches for the first token", n)
	}
	// Just after that fetch: 100 forged kids cause no fetch at all.
	for i := range 100 {
		_, err := v.Verify(ctx, forge(t, d.key, jwt.SigningMethodES256, fmt.Sprintf("forged-%d", i), claims), pki.Client.Cert)
		wantReason(t, nil, err, dat.ReasonUnknownKey)
	}
	if n := d.jwks.Load(); n != 1 {
		t.Errorf("%d JWKS fetches after 100 forged kids within the interval, want 1", n)
	}
	// After the interval: the next flood causes exactly one refresh.
	clk.Advance(DefaultJWKSRefreshInterval + time.Second)
	for i := range 100 {
		_, err := v.Verify(ctx, forge(t, d.key, jwt.SigningMethodES256, fmt.Sprintf("forged-b%d", i), claims), pki.Client.Cert)
		wantReason(t, nil, err, dat.ReasonUnknownKey)
	}
	if n := d.jwks.Load(); n != 2 {
		t.Errorf("%d JWKS fetches after the second flood, want 2", n)
	}
	if got := rs.get(dat.ReasonUnknownKey); got != 200 {
		t.Errorf("OnRefusal(unknown_kid) called %d times, want 200", got)
	}

	// Concurrent flood after the interval: still a single refresh.
	clk.Advance(DefaultJWKSRefreshInterval + time.Second)
	done := make(chan error, 100)
	for i := range 100 {
		go func() {
			_, err := v.Verify(ctx, forge(t, d.key, jwt.SigningMethodES256, fmt.Sprintf("forged-c%d", i), claims), pki.Client.Cert)
			done <- err
		}()
	}
	for range 100 {
		if r := dat.ReasonOf(<-done); r != dat.ReasonUnknownKey {
			t.Errorf("reason %q", r)
		}
	}
	if n := d.jwks.Load(); n != 3 {
		t.Errorf("%d JWKS fetches after a concurrent flood, want 3", n)
	}

	// A real rotation is picked up by the next refresh.
	if err := d.srv.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated, err := d.srv.Issue(dat.ConnectorID(pki.Client.Cert), 0)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultJWKSRefreshInterval + time.Second)
	if _, err := v.Verify(ctx, rotated, pki.Client.Cert); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
}

// TestSignatureCache: a token verified before skips the public-key
// operation, but every other check still runs: the key is looked up again
// (a withdrawn or replaced key is not honoured), and time, binding and
// profile are checked against this call.
func TestSignatureCache(t *testing.T) {
	clk := newClock()
	d := startDAPS(t, dapsOpts{now: clk.Now})
	tok := forge(t, d.key, jwt.SigningMethodES256, "k", d.datClaims(clk.Now()))
	keys := dat.StaticKeys{"k": d.key.Public()}
	v, err := dat.NewJWTVerifier(dat.VerifierConfig{Issuer: d.url, Keys: keys, Now: clk.Now, SignatureCache: 2,
		MinSecurityProfile: "idsc:BASE_SECURITY_PROFILE"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		if _, err := v.Verify(ctx, tok, pki.Client.Cert); err != nil {
			t.Fatal(err)
		}
	}
	_, err = v.Verify(ctx, tok, pki.Server.Cert)
	wantReason(t, nil, err, dat.ReasonFingerprint)
	keys["k"] = mustEC(t, elliptic.P256()).Public() // same kid, another key
	_, err = v.Verify(ctx, tok, pki.Client.Cert)
	wantReason(t, nil, err, dat.ReasonSignature)
	delete(keys, "k") // key withdrawn
	_, err = v.Verify(ctx, tok, pki.Client.Cert)
	wantReason(t, nil, err, dat.ReasonUnknownKey)
	keys["k"] = d.key.Public()
	// Evict it with two other tokens, then it verifies again (a miss).
	for i := range 2 {
		other := forge(t, d.key, jwt.SigningMethodES256, "k", with(d.datClaims(clk.Now()), "jti", fmt.Sprint(i)))
		if _, err := v.Verify(ctx, other, pki.Client.Cert); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Verify(ctx, tok, pki.Client.Cert); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour + time.Minute)
	_, err = v.Verify(ctx, tok, pki.Client.Cert)
	wantReason(t, nil, err, dat.ReasonExpired)
	// Tampering changes the hash: a miss, and the signature fails.
	parts := strings.Split(string(tok), ".")
	_, err = v.Verify(ctx, []byte(parts[0]+"."+parts[1]+"x."+parts[2]), pki.Client.Cert)
	if r := dat.ReasonOf(err); r != dat.ReasonSignature && r != dat.ReasonMalformed {
		t.Fatalf("tampered token: %v", err)
	}
}
