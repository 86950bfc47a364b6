package dat

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type keySourceFunc func(ctx context.Context, kid string) (crypto.PublicKey, error)

func (f keySourceFunc) Key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	return f(ctx, kid)
}

func wantReason(t *testing.T, id *Identity, err error, want Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted (identity %+v), want refusal %q", id, want)
	}
	if id != nil {
		t.Errorf("identity %+v returned with error", id)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T %v is not a *VerifyError", err, err)
	}
	if ve.Reason != want {
		t.Fatalf("reason %q (%v), want %q", ve.Reason, err, want)
	}
}

func hs256(secret []byte, signingInput string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signingInput))
	return m.Sum(nil)
}

func TestVerifyHappyPaths(t *testing.T) {
	f := fx(t)
	v := newTestVerifier(t, nil)
	claims := baseClaims(f.peer.cert)
	cases := []struct {
		name  string
		token []byte
	}{
		{"ES256", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", claims)},
		{"ES384", mint(t, jwt.SigningMethodES384, f.ec384Key, "ec384", claims)},
		{"ES512", mint(t, jwt.SigningMethodES512, f.ec521Key, "ec521", claims)},
		{"EdDSA key as pointer", mint(t, jwt.SigningMethodEdDSA, f.edKey, "edptr", claims)},
		{"RS256", mint(t, jwt.SigningMethodRS256, f.rsaKey, "rsa", claims)},
		{"RS512", mint(t, jwt.SigningMethodRS512, f.rsaKey, "rsa", claims)},
		{"PS256", mint(t, jwt.SigningMethodPS256, f.rsaKey, "rsa", claims)},
		{"EdDSA", mint(t, jwt.SigningMethodEdDSA, f.edKey, "ed", claims)},
		{"fingerprint string", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "transportCertsSha256", Fingerprint(f.peer.cert)))},
		{"fingerprint array", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "transportCertsSha256", []any{Fingerprint(f.other.cert), Fingerprint(f.peer.cert)}))},
		{"aud string", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "aud", "idsc:IDS_CONNECTORS_ALL"))},
		{"aud array", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "aud", []any{"https://other", "idsc:IDS_CONNECTORS_ALL"}))},
		{"aud legacy string", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "aud", "IDS_Connector"))},
		{"aud legacy array", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "aud", []any{"IDS_Connector"}))},
		{"exp within leeway", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "exp", t0.Add(-29*time.Second).Unix()))},
		{"nbf within leeway", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "nbf", t0.Add(29*time.Second).Unix()))},
		{"iat within leeway", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "iat", t0.Add(29*time.Second).Unix()))},
		{"no nbf no iat", mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "nbf", nil, "iat", nil))},
		{"typ jwt+at", func() []byte {
			tk := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
			tk.Header["typ"], tk.Header["kid"] = "jwt+at", "ec"
			s, err := tk.SignedString(f.ecKey)
			if err != nil {
				t.Fatal(err)
			}
			return []byte(s)
		}()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := bytes.Clone(c.token)
			id, err := v.Verify(context.Background(), in, f.peer.cert)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Subject != ConnectorID(f.peer.cert) || id.Issuer != testIssuer {
				t.Errorf("subject/issuer = %q/%q", id.Subject, id.Issuer)
			}
			if id.SecurityProfile != "idsc:BASE_SECURITY_PROFILE" {
				t.Errorf("SecurityProfile = %q", id.SecurityProfile)
			}
			if id.ReferringConnector != "https://connector-a.example.org/" {
				t.Errorf("ReferringConnector = %q", id.ReferringConnector)
			}
			wantExp := time.Unix(int64(unverifiedExp(t, c.token)), 0)
			if !id.Expiry.Equal(wantExp) {
				t.Errorf("Expiry = %v, want %v", id.Expiry, wantExp)
			}
			if id.Claims["jti"] != "0267a2d6-455a-4a1a-b361-d273bb8357f5" || id.Claims["@type"] != "ids:DatPayload" {
				t.Errorf("Claims = %v", id.Claims)
			}
			if !bytes.Equal(id.Token, c.token) {
				t.Errorf("Token not the input")
			}
			in[0] ^= 0xff
			if !bytes.Equal(id.Token, c.token) {
				t.Errorf("Token aliases the caller's slice")
			}
		})
	}
}

// unverifiedExp reads exp from a token without verifying it.
func unverifiedExp(t *testing.T, token []byte) float64 {
	t.Helper()
	mc := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(string(token), mc); err != nil {
		t.Fatal(err)
	}
	return mc["exp"].(float64)
}

func TestVerifyRefusals(t *testing.T) {
	f := fx(t)
	v := newTestVerifier(t, nil)
	claims := baseClaims(f.peer.cert)
	es := func(c jwt.MapClaims) []byte { return mint(t, jwt.SigningMethodES256, f.ecKey, "ec", c) }

	noneHeader := map[string]any{"alg": "none", "typ": "JWT", "kid": "ec"}
	pubDER, err := x509.MarshalPKIXPublicKey(&f.ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	rsaDER, err := x509.MarshalPKIXPublicKey(&f.rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	hmacToken := func(kid string, secret []byte) []byte {
		h := b64(mustJSON(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}))
		p := b64(mustJSON(claims))
		return []byte(h + "." + p + "." + b64(hs256(secret, h+"."+p)))
	}
	garbage := make([]byte, 200)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	valid := string(es(claims))
	parts := strings.Split(valid, ".")

	cases := []struct {
		name  string
		token []byte
		cert  *x509.Certificate
		want  Reason
	}{
		// signature and algorithm
		{"bad signature (other key, same kid)", mint(t, jwt.SigningMethodES256, f.otherEC, "ec", claims), nil, ReasonSignature},
		{"tampered payload", []byte(parts[0] + "." + b64(mustJSON(with(claims, "sub", "evil"))) + "." + parts[2]), nil, ReasonSignature},
		{"truncated signature", []byte(parts[0] + "." + parts[1] + "." + parts[2][:20]), nil, ReasonSignature},
		{"alg none", compact(noneHeader, claims, nil), nil, ReasonAlgorithm},
		{"alg none with signature", compact(noneHeader, claims, []byte("sig")), nil, ReasonAlgorithm},
		{"alg None", compact(map[string]any{"alg": "None", "kid": "ec"}, claims, nil), nil, ReasonAlgorithm},
		{"alg unknown", compact(map[string]any{"alg": "XS256", "kid": "ec"}, claims, []byte("x")), nil, ReasonAlgorithm},
		{"HS256 with EC public key PEM", hmacToken("ec", pubPEM), nil, ReasonAlgorithm},
		{"HS256 with EC public key DER", hmacToken("ec", pubDER), nil, ReasonAlgorithm},
		{"HS256 with RSA public key PEM", hmacToken("rsa", rsaPEM), nil, ReasonAlgorithm},
		{"HS512 via golang-jwt", mint(t, jwt.SigningMethodHS512, rsaPEM, "rsa", claims), nil, ReasonAlgorithm},
		{"RS256 under an EC kid", mint(t, jwt.SigningMethodRS256, f.rsaKey, "ec", claims), nil, ReasonAlgorithm},
		{"ES384 under a P-256 kid", mint(t, jwt.SigningMethodES384, f.ec384Key, "ec", claims), nil, ReasonAlgorithm},
		{"ES256 under an RSA kid", mint(t, jwt.SigningMethodES256, f.ecKey, "rsa", claims), nil, ReasonAlgorithm},
		{"EdDSA under an EC kid", mint(t, jwt.SigningMethodEdDSA, f.edKey, "ec", claims), nil, ReasonAlgorithm},
		{"alg not a string", compact(map[string]any{"alg": 256, "kid": "ec"}, claims, []byte("x")), nil, ReasonMalformed},
		{"crit header", func() []byte {
			tk := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
			tk.Header["kid"], tk.Header["crit"] = "ec", []string{"exp"}
			s, _ := tk.SignedString(f.ecKey)
			return []byte(s)
		}(), nil, ReasonMalformed},
		// keys
		{"unknown kid", mint(t, jwt.SigningMethodES256, f.ecKey, "nope", claims), nil, ReasonUnknownKey},
		{"missing kid", mint(t, jwt.SigningMethodES256, f.ecKey, "", claims), nil, ReasonUnknownKey},
		{"kid not a string", compact(map[string]any{"alg": "ES256", "kid": 7}, claims, make([]byte, 64)), nil, ReasonUnknownKey},
		// registered claims
		{"wrong issuer", es(with(claims, "iss", "https://evil.example.org")), nil, ReasonIssuer},
		{"missing issuer", es(with(claims, "iss", nil)), nil, ReasonIssuer},
		{"issuer not a string", es(with(claims, "iss", 42)), nil, ReasonIssuer},
		{"wrong audience", es(with(claims, "aud", "https://other")), nil, ReasonAudience},
		{"wrong audience array", es(with(claims, "aud", []any{"a", "b", "idsc:IDS_CONNECTORS"})), nil, ReasonAudience},
		{"audience case differs", es(with(claims, "aud", "IDSC:IDS_CONNECTORS_ALL")), nil, ReasonAudience},
		{"missing audience", es(with(claims, "aud", nil)), nil, ReasonAudience},
		{"empty audience array", es(with(claims, "aud", []any{})), nil, ReasonAudience},
		{"audience with non-string", es(with(claims, "aud", []any{"idsc:IDS_CONNECTORS_ALL", 1})), nil, ReasonAudience},
		{"expired", es(with(claims, "exp", t0.Add(-31*time.Second).Unix())), nil, ReasonExpired},
		{"expired long ago", es(with(claims, "exp", int64(1), "nbf", int64(0), "iat", int64(0))), nil, ReasonExpired},
		{"missing exp", es(with(claims, "exp", nil)), nil, ReasonMissingClaim},
		{"exp not a number", es(with(claims, "exp", "tomorrow")), nil, ReasonMalformed},
		{"nbf in the future", es(with(claims, "nbf", t0.Add(31*time.Second).Unix())), nil, ReasonNotYetValid},
		{"iat in the future", es(with(claims, "iat", t0.Add(31*time.Second).Unix())), nil, ReasonNotYetValid},
		{"iat not a number", es(with(claims, "iat", []any{1})), nil, ReasonMalformed},
		{"nbf not a number", es(with(claims, "nbf", "soon")), nil, ReasonMalformed},
		{"missing sub", es(with(claims, "sub", nil)), nil, ReasonSubject},
		{"empty sub", es(with(claims, "sub", "")), nil, ReasonSubject},
		{"sub not a string", es(with(claims, "sub", 12)), nil, ReasonSubject},
		// certificate binding
		{"fingerprint missing", es(with(claims, "transportCertsSha256", nil)), nil, ReasonFingerprint},
		{"fingerprint of another certificate", es(with(claims, "transportCertsSha256", Fingerprint(f.other.cert))), nil, ReasonFingerprint},
		{"fingerprint array of another certificate", es(with(claims, "transportCertsSha256", []any{Fingerprint(f.other.cert)})), nil, ReasonFingerprint},
		{"fingerprint uppercase", es(with(claims, "transportCertsSha256", strings.ToUpper(Fingerprint(f.peer.cert)))), nil, ReasonFingerprint},
		{"fingerprint colon separated", es(with(claims, "transportCertsSha256", colonHex(mustHex(t, Fingerprint(f.peer.cert))))), nil, ReasonFingerprint},
		{"fingerprint not a string", es(with(claims, "transportCertsSha256", 5)), nil, ReasonFingerprint},
		{"fingerprint array with non-string", es(with(claims, "transportCertsSha256", []any{Fingerprint(f.peer.cert), 5})), nil, ReasonFingerprint},
		{"fingerprint empty array", es(with(claims, "transportCertsSha256", []any{})), nil, ReasonFingerprint},
		{"peer certificate for another token", es(claims), f.other.cert, ReasonFingerprint},
		// malformed
		{"empty", []byte{}, nil, ReasonMalformed},
		{"random bytes", garbage, nil, ReasonMalformed},
		{"two segments", []byte(parts[0] + "." + parts[1]), nil, ReasonMalformed},
		{"four segments", []byte(valid + "." + parts[2]), nil, ReasonMalformed},
		{"bad base64 header", []byte("e30!." + parts[1] + "." + parts[2]), nil, ReasonMalformed},
		{"padded base64 header", []byte(parts[0] + "==." + parts[1] + "." + parts[2]), nil, ReasonMalformed},
		{"bad base64 payload", []byte(parts[0] + ".%%%." + parts[2]), nil, ReasonMalformed},
		{"bad base64 signature", []byte(parts[0] + "." + parts[1] + ".***"), nil, ReasonMalformed},
		{"bad JSON header", []byte(b64([]byte(`{"alg":"ES256",`)) + "." + parts[1] + "." + parts[2]), nil, ReasonMalformed},
		{"bad JSON payload", []byte(parts[0] + "." + b64([]byte(`{"sub":`)) + "." + parts[2]), nil, ReasonMalformed},
		{"JSON array payload", []byte(parts[0] + "." + b64([]byte(`[1,2]`)) + "." + parts[2]), nil, ReasonMalformed},
		{"NullDaps token", []byte(NullToken), nil, ReasonMalformed},
		{"INVALID_DAT", InvalidToken, nil, ReasonMalformed},
		// size
		{"oversized garbage", bytes.Repeat([]byte("a"), DefaultMaxTokenSize+1), nil, ReasonOversized},
		{"oversized valid token", es(with(claims, "pad", strings.Repeat("x", DefaultMaxTokenSize))), nil, ReasonOversized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert := c.cert
			if cert == nil {
				cert = f.peer.cert
			}
			id, err := v.Verify(context.Background(), c.token, cert)
			wantReason(t, id, err, c.want)
		})
	}

	t.Run("nil peer certificate", func(t *testing.T) {
		id, err := v.Verify(context.Background(), es(claims), nil)
		wantReason(t, id, err, ReasonFingerprint)
	})
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	for i := range b {
		var hi, lo byte
		for j, p := range []*byte{&hi, &lo} {
			c := s[2*i+j]
			switch {
			case c >= '0' && c <= '9':
				*p = c - '0'
			case c >= 'a' && c <= 'f':
				*p = c - 'a' + 10
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = hi<<4 | lo
	}
	return b
}

func TestVerifyMaxTokenSizeBoundary(t *testing.T) {
	f := fx(t)
	tok := mint(t, jwt.SigningMethodES256, f.ecKey, "ec", baseClaims(f.peer.cert))
	v := newTestVerifier(t, func(c *VerifierConfig) { c.MaxTokenSize = len(tok) })
	if _, err := v.Verify(context.Background(), tok, f.peer.cert); err != nil {
		t.Fatalf("token of exactly MaxTokenSize: %v", err)
	}
	v = newTestVerifier(t, func(c *VerifierConfig) { c.MaxTokenSize = len(tok) - 1 })
	id, err := v.Verify(context.Background(), tok, f.peer.cert)
	wantReason(t, id, err, ReasonOversized)
}

func TestVerifyLeewayConfig(t *testing.T) {
	f := fx(t)
	tok := mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(baseClaims(f.peer.cert), "exp", t0.Add(-10*time.Second).Unix()))
	v := newTestVerifier(t, func(c *VerifierConfig) { c.Leeway = 5 * time.Second })
	id, err := v.Verify(context.Background(), tok, f.peer.cert)
	wantReason(t, id, err, ReasonExpired)
	v = newTestVerifier(t, func(c *VerifierConfig) { c.Leeway = 11 * time.Second })
	if _, err := v.Verify(context.Background(), tok, f.peer.cert); err != nil {
		t.Fatalf("within 11 s leeway: %v", err)
	}
}

func TestVerifyKeySourceErrors(t *testing.T) {
	f := fx(t)
	tok := mint(t, jwt.SigningMethodES256, f.ecKey, "ec", baseClaims(f.peer.cert))
	cases := []struct {
		name string
		src  KeySource
		want Reason
	}{
		{"fetch failure", keySourceFunc(func(context.Context, string) (crypto.PublicKey, error) {
			return nil, errors.New("jwks: connection refused")
		}), ReasonUnavailable},
		{"context error", keySourceFunc(func(ctx context.Context, _ string) (crypto.PublicKey, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}), ReasonUnavailable},
		{"wrapped unknown kid", keySourceFunc(func(_ context.Context, kid string) (crypto.PublicKey, error) {
			return nil, errors.Join(errors.New("after refresh"), ErrUnknownKey)
		}), ReasonUnknownKey},
		{"nil key", keySourceFunc(func(context.Context, string) (crypto.PublicKey, error) { return nil, nil }), ReasonUnknownKey},
		{"unsupported key type", StaticKeys{"ec": []byte("secret")}, ReasonAlgorithm},
		{"private key instead of public", StaticKeys{"ec": f.ecKey}, ReasonAlgorithm},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newTestVerifier(t, func(cfg *VerifierConfig) { cfg.Keys = c.src })
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			id, err := v.Verify(ctx, tok, f.peer.cert)
			wantReason(t, id, err, c.want)
		})
	}

	t.Run("kid passed through", func(t *testing.T) {
		var got string
		v := newTestVerifier(t, func(cfg *VerifierConfig) {
			cfg.Keys = keySourceFunc(func(_ context.Context, kid string) (crypto.PublicKey, error) {
				got = kid
				return &f.ecKey.PublicKey, nil
			})
		})
		if _, err := v.Verify(context.Background(), tok, f.peer.cert); err != nil {
			t.Fatal(err)
		}
		if got != "ec" {
			t.Fatalf("kid %q", got)
		}
	})
}

func TestStaticKeys(t *testing.T) {
	f := fx(t)
	k := StaticKeys{"a": &f.ecKey.PublicKey, "nil": nil}
	if got, err := k.Key(context.Background(), "a"); err != nil || got != crypto.PublicKey(&f.ecKey.PublicKey) {
		t.Fatalf("Key(a) = %v, %v", got, err)
	}
	for _, kid := range []string{"b", "", "nil"} {
		if _, err := k.Key(context.Background(), kid); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Key(%q) error %v, want ErrUnknownKey", kid, err)
		}
	}
}

func TestProfileLevel(t *testing.T) {
	cases := map[string]int{
		"idsc:BASE_CONNECTOR_SECURITY_PROFILE":         ProfileBase,
		"idsc:BASE_SECURITY_PROFILE":                   ProfileBase,
		"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE":      ProfileTrusted,
		"idsc:TRUST_SECURITY_PROFILE":                  ProfileTrusted,
		"idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE": ProfileTrustedPlus,
		"idsc:TRUST_PLUS_SECURITY_PROFILE":             ProfileTrustedPlus,
		"":                                             ProfileInvalid,
		"BASE_SECURITY_PROFILE":                        ProfileInvalid,
		"idsc:base_security_profile":                   ProfileInvalid,
		"idsc:TRUSTED_SECURITY_PROFILE":                ProfileInvalid,
	}
	for name, want := range cases {
		if got := ProfileLevel(name); got != want {
			t.Errorf("ProfileLevel(%q) = %d, want %d", name, got, want)
		}
	}
	if !(ProfileInvalid < ProfileBase && ProfileBase < ProfileTrusted && ProfileTrusted < ProfileTrustedPlus) {
		t.Error("profile levels not ordered")
	}
}

func TestVerifySecurityProfile(t *testing.T) {
	f := fx(t)
	claims := baseClaims(f.peer.cert)
	tok := func(profile any) []byte {
		return mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "securityProfile", profile))
	}
	missing := mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(claims, "securityProfile", nil))
	cases := []struct {
		min   string
		token []byte
		ok    bool
	}{
		// required TRUSTED, named in the old generation
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:BASE_SECURITY_PROFILE"), false},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:BASE_CONNECTOR_SECURITY_PROFILE"), false},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:TRUST_SECURITY_PROFILE"), true},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE"), true},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:TRUST_PLUS_SECURITY_PROFILE"), true},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE"), true},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok("idsc:SOMETHING_ELSE"), false},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", tok(3), false},
		{"idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE", missing, false},
		// required TRUSTED_PLUS, named in the new generation
		{"idsc:TRUST_PLUS_SECURITY_PROFILE", tok("idsc:TRUST_SECURITY_PROFILE"), false},
		{"idsc:TRUST_PLUS_SECURITY_PROFILE", tok("idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE"), false},
		{"idsc:TRUST_PLUS_SECURITY_PROFILE", tok("idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE"), true},
		{"idsc:TRUST_PLUS_SECURITY_PROFILE", tok("idsc:TRUST_PLUS_SECURITY_PROFILE"), true},
		// required BASE, both names
		{"idsc:BASE_SECURITY_PROFILE", tok("idsc:BASE_CONNECTOR_SECURITY_PROFILE"), true},
		{"idsc:BASE_CONNECTOR_SECURITY_PROFILE", tok("idsc:BASE_SECURITY_PROFILE"), true},
		{"idsc:BASE_CONNECTOR_SECURITY_PROFILE", missing, false},
		// no requirement: anything goes
		{"", missing, true},
		{"", tok("idsc:SOMETHING_ELSE"), true},
	}
	for _, c := range cases {
		v := newTestVerifier(t, func(cfg *VerifierConfig) { cfg.MinSecurityProfile = c.min })
		id, err := v.Verify(context.Background(), c.token, f.peer.cert)
		if c.ok {
			if err != nil {
				t.Errorf("min %q: %v", c.min, err)
			}
			continue
		}
		t.Run(c.min, func(t *testing.T) { wantReason(t, id, err, ReasonProfile) })
	}
}

func TestNewJWTVerifierConfig(t *testing.T) {
	keys := fx(t).keys()
	bad := []VerifierConfig{
		{Keys: keys},
		{Issuer: testIssuer},
		{Issuer: testIssuer, Keys: keys, Leeway: -time.Second},
		{Issuer: testIssuer, Keys: keys, MaxTokenSize: -1},
		{Issuer: testIssuer, Keys: keys, MinSecurityProfile: "TRUSTED"},
		{Issuer: testIssuer, Keys: keys, MinSecurityProfile: "idsc:UNKNOWN"},
	}
	for i, c := range bad {
		if v, err := NewJWTVerifier(c); err == nil || v != nil {
			t.Errorf("config %d accepted", i)
		}
	}
	v, err := NewJWTVerifier(VerifierConfig{Issuer: testIssuer, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if v.maxSize != DefaultMaxTokenSize {
		t.Errorf("default MaxTokenSize %d", v.maxSize)
	}
}

// TestVerifyDefaultClock checks the verifier's default clock with a token
// issued for the real present.
func TestVerifyDefaultClock(t *testing.T) {
	f := fx(t)
	now := time.Now()
	c := with(baseClaims(f.peer.cert), "iat", now.Unix(), "nbf", now.Unix(), "exp", now.Add(time.Hour).Unix())
	v, err := NewJWTVerifier(VerifierConfig{Issuer: testIssuer, Keys: f.keys()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), mint(t, jwt.SigningMethodES256, f.ecKey, "ec", c), f.peer.cert); err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), mint(t, jwt.SigningMethodES256, f.ecKey, "ec", baseClaims(f.peer.cert)), f.peer.cert)
	wantReason(t, id, err, ReasonExpired) // t0 is in the past
}

func TestVerifyReferringConnectorNode(t *testing.T) {
	f := fx(t)
	v := newTestVerifier(t, nil)
	tok := mint(t, jwt.SigningMethodES256, f.ecKey, "ec", with(baseClaims(f.peer.cert), "referringConnector", map[string]any{"@id": "https://c.example/"}))
	id, err := v.Verify(context.Background(), tok, f.peer.cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.ReferringConnector != "https://c.example/" {
		t.Fatalf("ReferringConnector = %q", id.ReferringConnector)
	}
}

func FuzzVerify(f *testing.F) {
	fix := fx(f)
	claims := baseClaims(fix.peer.cert)
	valid := mint(f, jwt.SigningMethodES256, fix.ecKey, "ec", claims)
	f.Add(valid)
	f.Add(mint(f, jwt.SigningMethodRS256, fix.rsaKey, "rsa", claims))
	f.Add(mint(f, jwt.SigningMethodEdDSA, fix.edKey, "ed", claims))
	f.Add(compact(map[string]any{"alg": "none", "kid": "ec"}, claims, nil))
	f.Add([]byte("garbage"))
	f.Add([]byte("a.b.c"))
	f.Add([]byte(NullToken))
	f.Add([]byte{})
	v, err := NewJWTVerifier(VerifierConfig{Issuer: testIssuer, Keys: fix.keys(), Now: fixedNow, MinSecurityProfile: "idsc:BASE_SECURITY_PROFILE"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token []byte) {
		id, err := v.Verify(context.Background(), token, fix.peer.cert)
		if err == nil {
			if id == nil || id.Subject == "" {
				t.Fatalf("accepted without identity: %+v", id)
			}
			return
		}
		if id != nil {
			t.Fatalf("identity with error %v", err)
		}
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Reason == "" {
			t.Fatalf("error %T %v is not a *VerifyError with a reason", err, err)
		}
	})
}

func benchmarkVerify(b *testing.B, m jwt.SigningMethod, key any, kid string) {
	f := fx(b)
	v := newTestVerifier(b, nil)
	tok := mint(b, m, key, kid, baseClaims(f.peer.cert))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok, f.peer.cert); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := v.Verify(ctx, tok, f.peer.cert); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyES256(b *testing.B) {
	benchmarkVerify(b, jwt.SigningMethodES256, fx(b).ecKey, "ec")
}

func BenchmarkVerifyRS256(b *testing.B) {
	benchmarkVerify(b, jwt.SigningMethodRS256, fx(b).rsaKey, "rsa")
}
