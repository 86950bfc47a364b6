package daps

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

var rsaTestKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	raw, _ := k.Bytes()
	n := (k.Curve.Params().BitSize + 7) / 8
	return map[string]any{"kty": "EC", "kid": kid, "crv": k.Curve.Params().Name, "x": enc(raw[1 : 1+n]), "y": enc(raw[1+n:])}
}

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes()), "use": "sig", "alg": "RS256"}
}

func jwksDoc(keys ...map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

func TestParseJWKS(t *testing.T) {
	p256, p384, p521 := mustEC(t, elliptic.P256()), mustEC(t, elliptic.P384()), mustEC(t, elliptic.P521())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rk := rsaTestKey()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
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
	good := map[string]map[string]any{
		"rsa":  rsaJWK("rsa", &rk.PublicKey),
		"p256": with(ecJWK("p256", &p256.PublicKey), "alg", "ES256", "key_ops", []string{"verify"}),
		"p384": ecJWK("p384", &p384.PublicKey),
		"p521": ecJWK("p521", &p521.PublicKey),
		"ed":   {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": enc(edPub), "alg": "EdDSA"},
	}
	offCurve := with(ecJWK("offcurve", &p256.PublicKey), "y", ecJWK("", &mustEC(t, elliptic.P256()).PublicKey)["y"])
	bad := []map[string]any{
		{"kty": "oct", "kid": "hmac", "k": enc([]byte("secret"))},
		with(rsaJWK("private", &rk.PublicKey), "d", enc(rk.D.Bytes())),
		with(rsaJWK("enc", &rk.PublicKey), "use", "enc"),
		with(ecJWK("ops", &p256.PublicKey), "key_ops", []string{"sign"}),
		rsaJWK("small", &small.PublicKey),
		with(rsaJWK("e1", &rk.PublicKey), "e", enc([]byte{1})),
		with(rsaJWK("even", &rk.PublicKey), "n", enc(new(big.Int).Lsh(big.NewInt(1), 2047).Bytes())),
		offCurve,
		with(ecJWK("short", &p256.PublicKey), "x", enc([]byte{1, 2, 3})),
		with(ecJWK("curve", &p256.PublicKey), "crv", "secp256k1"),
		with(ecJWK("algmismatch", &p256.PublicKey), "alg", "ES384"),
		with(rsaJWK("hs", &rk.PublicKey), "alg", "HS256"),
		with(ecJWK("", &p256.PublicKey)),
		{"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": enc(edPub)},
		{"kty": "OKP", "crv": "Ed25519", "kid": "edshort", "x": enc(edPub[:31])},
		{"kid": "nokty"},
		{"kty": "RSA", "kid": "non", "e": "AQAB"},
		{"kty": 7, "kid": "ktynum"},
		with(rsaJWK("badb64", &rk.PublicKey), "n", "!!!"),
		with(good["rsa"]), // duplicate kid "rsa"
	}
	var all []map[string]any
	for _, k := range []string{"rsa", "p256", "p384", "p521", "ed"} {
		all = append(all, good[k])
	}
	all = append(all, bad...)
	set, err := ParseJWKS(jwksDoc(all...))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != len(good) {
		t.Errorf("%d keys, want %d: %v", len(set.Keys), len(good), set.Skipped)
	}
	if len(set.Skipped) != len(bad) {
		t.Errorf("%d skipped, want %d:\n%v", len(set.Skipped), len(bad), errors.Join(set.Skipped...))
	}
	checks := map[string]crypto.PublicKey{"rsa": &rk.PublicKey, "p256": &p256.PublicKey, "p384": &p384.PublicKey, "p521": &p521.PublicKey, "ed": edPub}
	for kid, want := range checks {
		got, ok := set.Keys[kid]
		if !ok {
			t.Errorf("kid %s missing", kid)
			continue
		}
		if eq, ok := got.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(want) {
			t.Errorf("kid %s: key differs", kid)
		}
	}
	if set.Algs["p256"] != "ES256" || set.Algs["rsa"] != "RS256" || set.Algs["p384"] != "" {
		t.Errorf("algs %v", set.Algs)
	}
	for _, doc := range []string{``, `null`, `[]`, `{}`, `{"keys":{}}`, `{"keys":null}`, `{"keys":[1,2]`, `"x"`} {
		if s, err := ParseJWKS([]byte(doc)); err == nil && doc != `{"keys":[1,2]` {
			t.Errorf("ParseJWKS(%q) = %+v, want an error", doc, s)
		}
	}
	many := make([]map[string]any, MaxJWKSKeys+1)
	for i := range many {
		many[i] = map[string]any{"kty": "oct"}
	}
	if _, err := ParseJWKS(jwksDoc(many...)); err == nil {
		t.Error("oversized key set accepted")
	}
	if kid, alg, key, err := ParseJWK(mustMarshal(good["ed"])); err != nil || kid != "ed" || alg != "EdDSA" || key == nil {
		t.Errorf("ParseJWK: %q %q %v %v", kid, alg, key, err)
	}
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzParseJWKS(f *testing.F) {
	p256 := mustEC(f, elliptic.P256())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(jwksDoc(ecJWK("a", &p256.PublicKey)))
	f.Add(jwksDoc(rsaJWK("r", &rsaTestKey().PublicKey)))
	f.Add(jwksDoc(map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": enc(edPub)}))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-521","kid":"x","x":"","y":""}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseJWKS(data)
		if err != nil {
			if set != nil {
				t.Fatal("set with error")
			}
			return
		}
		for kid, k := range set.Keys {
			if kid == "" {
				t.Fatal("key without kid")
			}
			switch key := k.(type) {
			case *rsa.PublicKey:
				if key.N.BitLen() < MinRSAKeyBits || key.E < 3 {
					t.Fatal("weak RSA key accepted")
				}
			case *ecdsa.PublicKey:
				if !key.Curve.IsOnCurve(key.X, key.Y) {
					t.Fatal("EC point off the curve")
				}
			case ed25519.PublicKey:
				if len(key) != ed25519.PublicKeySize {
					t.Fatal("bad Ed25519 key")
				}
			default:
				t.Fatalf("key of type %T", k)
			}
		}
	})
}

func TestParseTokenResponse(t *testing.T) {
	for _, c := range []struct {
		body string
		want time.Duration
	}{
		{`{"access_token":"a.b.c","expires_in":3600,"token_type":"bearer","scope":"idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"}`, time.Hour},
		{`{"access_token":"a.b.c","expires_in":"3600"}`, time.Hour},
		{`{"access_token":"a.b.c","expires_in":" 60 "}`, time.Minute},
		{`{"access_token":"a.b.c","expires_in":1.5}`, 1500 * time.Millisecond},
		{`{"access_token":"a.b.c","expires_in":null}`, 0},
		{`{"access_token":"a.b.c"}`, 0},
		{`{"access_token":"a.b.c","expires_in":1e30}`, maxExpiresIn},
	} {
		tr, err := ParseTokenResponse([]byte(c.body))
		if err != nil {
			t.Errorf("%s: %v", c.body, err)
			continue
		}
		if tr.AccessToken != "a.b.c" || tr.ExpiresIn != c.want {
			t.Errorf("%s: %+v", c.body, tr)
		}
	}
	for _, body := range []string{
		``, `null`, `[]`, `"x"`, `{}`, `{"access_token":""}`, `{"access_token":5}`,
		`{"access_token":"a","expires_in":-1}`, `{"access_token":"a","expires_in":"soon"}`,
		`{"access_token":"a","expires_in":"NaN"}`, `{"access_token":"a","expires_in":true}`,
		`{"access_token":"a","token_type":5}`,
	} {
		if tr, err := ParseTokenResponse([]byte(body)); err == nil {
			t.Errorf("%s accepted: %+v", body, tr)
		}
	}
	// An error document in a 200 is reported as such.
	_, err := ParseTokenResponse([]byte(`{"error":"invalid_client","error_description":"Client unknown"}`))
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Errorf("error %v", err)
	}
	if oe := ParseOAuthError(400, []byte(`{"error":"access_denied","error_description":"No scopes granted"}`)); oe == nil ||
		oe.Error() != "access_denied: No scopes granted (HTTP 400)" {
		t.Errorf("ParseOAuthError: %v", oe)
	}
	for _, body := range []string{`<html>`, `{"error":5}`, `{}`, `{"error":""}`} {
		if oe := ParseOAuthError(500, []byte(body)); oe != nil {
			t.Errorf("%s parsed as %v", body, oe)
		}
	}
}

// TestAcceptToken: the cache schedule follows expires_in and the token's
// own exp (the earlier of the two), and a token already expired is refused.
func TestAcceptToken(t *testing.T) {
	clk := newClock()
	d := &Driver{cfg: Config{Threshold: 0.5, MaxTokenSize: 1 << 14, Now: clk.Now}, log: quiet()}
	now := clk.Now()
	payload := func(claims map[string]any) string {
		return enc([]byte(`{"alg":"ES256"}`)) + "." + enc(mustMarshal(claims)) + ".c2ln"
	}
	body := func(tok string, expiresIn any) []byte {
		m := map[string]any{"access_token": tok}
		if expiresIn != nil {
			m["expires_in"] = expiresIn
		}
		return mustMarshal(m)
	}
	for _, c := range []struct {
		name    string
		body    []byte
		life    time.Duration
		wantErr bool
	}{
		{"expires_in only", body("opaque-token", 100), 100 * time.Second, false},
		{"expires_in as string", body("opaque-token", "100"), 100 * time.Second, false},
		{"exp claim only", body(payload(map[string]any{"exp": now.Add(200 * time.Second).Unix()}), nil), 200 * time.Second, false},
		{"earlier exp claim wins", body(payload(map[string]any{"exp": now.Add(50 * time.Second).Unix()}), 3600), 50 * time.Second, false},
		{"earlier expires_in wins", body(payload(map[string]any{"exp": now.Add(500 * time.Second).Unix()}), "60"), 60 * time.Second, false},
		{"no lifetime at all", body("opaque-token", nil), 0, true},
		{"already expired", body(payload(map[string]any{"exp": now.Add(-time.Second).Unix()}), nil), 0, true},
		{"oversized", body(strings.Repeat("x", 1<<14+1), 60), 0, true},
	} {
		tv, renewAt, usable, err := d.acceptToken(c.body)
		if c.wantErr {
			if err == nil {
				t.Errorf("%s: accepted", c.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		life := tv.exp.Sub(now)
		if life < c.life-time.Second || life > c.life {
			t.Errorf("%s: lifetime %v, want %v", c.name, life, c.life)
		}
		if want := now.Add(life / 2); !renewAt.Equal(want) {
			t.Errorf("%s: renewAt %v, want %v", c.name, renewAt.Sub(now), life/2)
		}
		if margin := tv.exp.Sub(usable); margin != min(5*time.Second, life/10) {
			t.Errorf("%s: usable until exp - %v", c.name, margin)
		}
	}
	// Threshold 1: renewal at the end of the usable window.
	d.cfg.Threshold = 1
	tv, renewAt, usable, err := d.acceptToken(body("opaque", 100))
	if err != nil || !renewAt.Equal(usable) || !usable.Before(tv.exp) {
		t.Errorf("threshold 1: renew %v usable %v exp %v (%v)", renewAt, usable, tv.exp, err)
	}
}

// FuzzParseTokenResponse fuzzes the decoders of DAPS answers: token
// response, OAuth error, metadata document and the unverified DAT payload.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"a.b.c","expires_in":3600,"token_type":"bearer","scope":"x"}`))
	f.Add([]byte(`{"access_token":"a.b.c","expires_in":"3600"}`))
	f.Add([]byte(`{"error":"invalid_client","error_description":"Client unknown"}`))
	f.Add([]byte(`{"access_token":"a","expires_in":1e400}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"issuer":"https://d/auth","token_endpoint":"https://d/auth/token","jwks_uri":"https://d/auth/jwks.json"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := ParseTokenResponse(body)
		if err == nil {
			if tr == nil || tr.AccessToken == "" || tr.ExpiresIn < 0 || tr.ExpiresIn > maxExpiresIn {
				t.Fatalf("bad result %+v", tr)
			}
		} else if tr != nil {
			t.Fatal("result with error")
		}
		if oe := ParseOAuthError(400, body); oe != nil && oe.Code == "" {
			t.Fatal("OAuth error without code")
		}
		unverifiedClaims(string(body))
		if m, err := ParseMetadata(body); err == nil && (m.Issuer == "" || m.TokenEndpoint == "" || m.JWKSURI == "") {
			t.Fatalf("metadata without a required member: %+v", m)
		}
	})
}
