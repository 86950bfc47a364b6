package dapsserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/daps"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

var pki = func() *testpki.Bundle {
	b, err := testpki.NewBundle()
	if err != nil {
		panic(err)
	}
	return b
}()

func quiet() *slog.Logger {
	if os.Getenv("IDSCP2_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serve starts s's handler on 127.0.0.1; the issuer URL must name that
// listener, so the server is built by mk once the address is known.
func serve(t testing.TB, mk func(issuer string) *Server) (*Server, *httptest.Server) {
	t.Helper()
	return serveAt(t, "", mk)
}

// serveAt is serve on a given address ("" = any port).
func serveAt(t testing.TB, addr string, mk func(issuer string) *Server) (*Server, *httptest.Server) {
	t.Helper()
	var s *Server
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.ServeHTTP(w, r) }))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("cannot listen on %s again: %v", addr, err)
		}
		ts.Listener.Close()
		ts.Listener = l
	}
	s = mk("http://" + ts.Listener.Addr().String())
	ts.Start()
	t.Cleanup(ts.Close)
	return s, ts
}

var ecKey = func() crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

func newServer(t testing.TB, mod func(*Config)) (*Server, *httptest.Server) {
	return serve(t, func(issuer string) *Server {
		cfg := Config{
			Issuer:     issuer + "/auth",
			SigningKey: ecKey,
			Clients:    []Client{{Certificate: pki.Client.Cert, ReferringConnector: "https://client.example/"}},
			Logger:     quiet(),
		}
		if mod != nil {
			mod(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// assertion signs client assertion claims with key.
func assertion(t testing.TB, key any, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionClaims(s *Server, id string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": id, "sub": id, "aud": s.TokenEndpoint(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti":      fmt.Sprintf("jti-%d", jtiSeq.Add(1)),
		"@context": "https://w3id.org/idsa/contexts/context.jsonld", "@type": "ids:DatRequestToken",
	}
}

var jtiSeq atomic.Int64

func tokenForm(a string) url.Values {
	return url.Values{
		"grant_type":            {GrantType},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {a},
		"scope":                 {Scope},
	}
}

type answer struct {
	status int
	body   map[string]any
	header http.Header
}

func post(t testing.TB, u string, form url.Values) answer {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return answer{resp.StatusCode, body, resp.Header}
}

func get(t testing.TB, u string) answer {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &body)
	return answer{resp.StatusCode, body, resp.Header}
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

func TestTokenEndpointIssues(t *testing.T) {
	s, _ := newServer(t, nil)
	id := dat.ConnectorID(pki.Client.Cert)
	for _, aud := range []any{s.TokenEndpoint(), s.Issuer(), dat.AudienceAll, []any{"x", dat.AudienceAll}} {
		a := post(t, s.TokenEndpoint(), tokenForm(assertion(t, pki.Client.Key, jwt.SigningMethodES256, with(assertionClaims(s, id), "aud", aud))))
		if a.status != http.StatusOK {
			t.Fatalf("aud %v: %d %v", aud, a.status, a.body)
		}
		if a.body["token_type"] != "bearer" || a.body["expires_in"] != float64(3600) || a.body["scope"] != Scope {
			t.Errorf("answer %v", a.body)
		}
		if a.header.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control %q", a.header.Get("Cache-Control"))
		}
		tok := a.body["access_token"].(string)
		mc := jwt.MapClaims{}
		hdr, _, err := jwt.NewParser().ParseUnverified(tok, mc)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Header["typ"] != "at+jwt" || hdr.Header["kid"] != s.CurrentKeyID() || hdr.Header["alg"] != "ES256" {
			t.Errorf("DAT header %v", hdr.Header)
		}
		for k, want := range map[string]any{
			"iss": s.Issuer(), "sub": id, "client_id": id, "scope": Scope,
			"@context": "https://w3id.org/idsa/contexts/context.jsonld", "@type": "ids:DatPayload",
			"securityProfile": DefaultSecurityProfile, "referringConnector": "https://client.example/",
		} {
			if mc[k] != want {
				t.Errorf("claim %s = %v, want %v", k, mc[k], want)
			}
		}
		if fmt.Sprint(mc["aud"]) != "[idsc:IDS_CONNECTORS_ALL]" || fmt.Sprint(mc["transportCertsSha256"]) != "["+dat.Fingerprint(pki.Client.Cert)+"]" {
			t.Errorf("aud %v transportCertsSha256 %v", mc["aud"], mc["transportCertsSha256"])
		}
		if exp, iat := mc["exp"].(float64), mc["iat"].(float64); exp-iat < 3600 || exp-iat > 3601 {
			t.Errorf("lifetime %v", exp-iat)
		}
	}
}

// TestTokenEndpointRefuses: every bad request is answered with HTTP 400
// and the OAuth error code Omejdn uses.
func TestTokenEndpointRefuses(t *testing.T) {
	s, _ := newServer(t, func(c *Config) { c.MaxAssertionLifetime = time.Hour })
	id := dat.ConnectorID(pki.Client.Cert)
	good := assertionClaims(s, id)
	es := func(c jwt.MapClaims) string { return assertion(t, pki.Client.Key, jwt.SigningMethodES256, c) }
	now := time.Now()
	replayed := es(with(good, "jti", "once"))
	if a := post(t, s.TokenEndpoint(), tokenForm(replayed)); a.status != 200 {
		t.Fatalf("first use: %v", a.body)
	}
	hs := func(secret []byte) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
		p := base64.RawURLEncoding.EncodeToString(must(json.Marshal(good)))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(h + "." + p))
		return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(must(json.Marshal(good))) + "."
	form := func(mod func(url.Values)) url.Values {
		f := tokenForm(es(with(good, "jti", fmt.Sprint(jtiSeq.Add(1)))))
		mod(f)
		return f
	}
	cases := []struct {
		name string
		form url.Values
		code string
		desc string
	}{
		{"unknown client", tokenForm(assertion(t, pki.Server.Key, jwt.SigningMethodES256, assertionClaims(s, dat.ConnectorID(pki.Server.Cert)))), "invalid_client", "Client unknown"},
		{"connector id without keyid (OpenSSL 3 pitfall)", tokenForm(es(with(good, "sub", strings.Replace(id, ":keyid:", ":", 1)))), "invalid_client", "Client unknown"},
		{"wrong key", tokenForm(assertion(t, pki.Server.Key, jwt.SigningMethodES256, good)), "invalid_client", "Client authentication failed"},
		{"iss != sub", tokenForm(es(with(good, "iss", "someone-else"))), "invalid_client", "Client authentication failed"},
		{"wrong aud", tokenForm(es(with(good, "aud", "https://other.example/token"))), "invalid_client", "Client authentication failed"},
		{"no aud", tokenForm(es(with(good, "aud", nil))), "invalid_client", "Client authentication failed"},
		{"expired", tokenForm(es(with(good, "exp", now.Add(-time.Minute).Unix()))), "invalid_client", "Client authentication failed"},
		{"no exp", tokenForm(es(with(good, "exp", nil))), "invalid_client", "Client authentication failed"},
		{"not yet valid", tokenForm(es(with(good, "nbf", now.Add(time.Minute).Unix()))), "invalid_client", "Client authentication failed"},
		{"issued in the future", tokenForm(es(with(good, "iat", now.Add(time.Minute).Unix()))), "invalid_client", "Client authentication failed"},
		{"lifetime too long", tokenForm(es(with(good, "exp", now.Add(2*time.Hour).Unix()))), "invalid_client", "Client authentication failed"},
		{"alg none", tokenForm(none), "invalid_client", "Client authentication failed"},
		{"HS256 with the certificate as secret", tokenForm(hs(pki.Client.CertPEM)), "invalid_client", "Client authentication failed"},
		{"garbage assertion", tokenForm("garbage"), "invalid_client", "Client authentication failed"},
		{"replayed assertion", tokenForm(replayed), "invalid_client", "Client authentication failed: client assertion replayed"},
		{"no assertion", form(func(f url.Values) { f.Del("client_assertion") }), "invalid_client", "Client unknown"},
		{"client secret instead", form(func(f url.Values) {
			f.Del("client_assertion_type")
			f.Set("client_id", id)
			f.Set("client_secret", "s3cret")
		}), "invalid_client", "Client unknown"},
		{"wrong grant type", form(func(f url.Values) { f.Set("grant_type", "authorization_code") }), "invalid_request", "Grant type not allowed"},
		{"password grant", form(func(f url.Values) { f.Set("grant_type", "password") }), "invalid_request", "Grant type not allowed"},
		{"no grant type", form(func(f url.Values) { f.Del("grant_type") }), "invalid_request", "Grant type not allowed"},
		{"no scope", form(func(f url.Values) { f.Del("scope") }), "access_denied", "No scopes granted"},
		{"other scope", form(func(f url.Values) { f.Set("scope", "openid profile") }), "access_denied", "No scopes granted"},
		{"resource not allowed", form(func(f url.Values) { f.Set("resource", "https://elsewhere.example/") }), "invalid_target", "Access denied to"},
		{"duplicate parameter", form(func(f url.Values) { f.Add("scope", Scope) }), "invalid_request", "more than once"},
		{"claims not JSON", form(func(f url.Values) { f.Set("claims", "{") }), "invalid_request", "claims"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := post(t, s.TokenEndpoint(), c.form)
			if a.status != http.StatusBadRequest || a.body["error"] != c.code {
				t.Fatalf("HTTP %d %v, want 400 %s", a.status, a.body, c.code)
			}
			if d, _ := a.body["error_description"].(string); !strings.Contains(d, c.desc) {
				t.Errorf("description %q lacks %q", d, c.desc)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		if a := get(t, s.TokenEndpoint()); a.status != http.StatusMethodNotAllowed {
			t.Errorf("GET /token: %d", a.status)
		}
	})
	t.Run("jti required", func(t *testing.T) {
		strict, _ := newServer(t, func(c *Config) { c.RequireJTI = true })
		a := post(t, strict.TokenEndpoint(), tokenForm(es(with(assertionClaims(strict, id), "jti", nil))))
		if a.status != 400 || a.body["error"] != "invalid_client" {
			t.Errorf("%d %v", a.status, a.body)
		}
		// Without RequireJTI, idscp2-jvm's jti-less assertions are accepted.
		if a := post(t, s.TokenEndpoint(), tokenForm(es(with(good, "jti", nil)))); a.status != 200 {
			t.Errorf("jti-less assertion: %d %v", a.status, a.body)
		}
	})
	t.Run("24 h assertion as idscp2-jvm sends it", func(t *testing.T) {
		def, _ := newServer(t, nil)
		c := with(assertionClaims(def, id), "exp", now.Add(24*time.Hour).Unix(), "jti", nil)
		if a := post(t, def.TokenEndpoint(), tokenForm(es(c))); a.status != 200 {
			t.Errorf("%d %v", a.status, a.body)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestReplayCacheBounded(t *testing.T) {
	rc := &replayCache{perClient: 3, seen: map[string]map[string]time.Time{}}
	now := time.Now()
	for i := range 3 {
		if v := rc.use("a", fmt.Sprint(i), now.Add(time.Minute), now); v != fresh {
			t.Fatalf("jti %d: %v", i, v)
		}
	}
	if v := rc.use("a", "0", now.Add(time.Minute), now); v != replayed {
		t.Errorf("replay not detected: %v", v)
	}
	if v := rc.use("a", "3", now.Add(time.Minute), now); v != cacheFull {
		t.Errorf("full cache: %v", v)
	}
	if v := rc.use("b", "0", now.Add(time.Minute), now); v != fresh {
		t.Errorf("another client is affected: %v", v)
	}
	later := now.Add(2 * time.Minute)
	if v := rc.use("a", "0", later.Add(time.Minute), later); v != fresh {
		t.Errorf("expired entries not reused: %v", v)
	}
}

func TestTransportCertsClaimsRequest(t *testing.T) {
	extra := strings.Repeat("ab", 32)
	s, _ := newServer(t, func(c *Config) {
		c.Clients = []Client{{Certificate: pki.Client.Cert, TransportCerts: []string{extra}}}
	})
	id := dat.ConnectorID(pki.Client.Cert)
	fp := dat.Fingerprint(pki.Client.Cert)
	for _, c := range []struct {
		claims string
		want   []string
	}{
		{"", []string{fp, extra}},
		{`{"access_token":{"transportCertsSha256":{"value":["` + fp + `"]}}}`, []string{fp}},
		{`{"access_token":{"transportCertsSha256":{"value":"` + extra + `"}}}`, []string{fp, extra}},
		{`{"access_token":{"transportCertsSha256":{"values":["` + extra + `","` + strings.Repeat("cd", 32) + `"]}}}`, []string{fp, extra}},
		{`{"access_token":{"transportCertsSha256":{"value":["` + strings.Repeat("cd", 32) + `"]}}}`, []string{fp}},
		{`{"id_token":{}}`, []string{fp, extra}},
	} {
		f := tokenForm(assertion(t, pki.Client.Key, jwt.SigningMethodES256, assertionClaims(s, id)))
		if c.claims != "" {
			f.Set("claims", c.claims)
		}
		a := post(t, s.TokenEndpoint(), f)
		if a.status != 200 {
			t.Fatalf("%s: %v", c.claims, a.body)
		}
		mc := jwt.MapClaims{}
		jwt.NewParser().ParseUnverified(a.body["access_token"].(string), mc)
		var got []string
		for _, v := range mc["transportCertsSha256"].([]any) {
			got = append(got, v.(string))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("claims %s: transportCertsSha256 %v, want %v", c.claims, got, c.want)
		}
	}
}

func TestMetadataAndJWKS(t *testing.T) {
	s, ts := newServer(t, nil)
	base := ts.URL
	for _, p := range []string{WellKnownPath, WellKnownPath + "/auth", OpenIDPath, "/auth" + OpenIDPath} {
		a := get(t, base+p)
		if a.status != 200 || a.body["issuer"] != s.Issuer() || a.body["token_endpoint"] != base+"/auth/token" || a.body["jwks_uri"] != base+"/auth/jwks.json" {
			t.Errorf("%s: %d %v", p, a.status, a.body)
		}
		if cc := a.header.Get("Cache-Control"); cc != "public, max-age=86400, must-revalidate" {
			t.Errorf("%s: Cache-Control %q", p, cc)
		}
	}
	for _, p := range []string{"/auth/jwks.json", "/auth/.well-known/jwks.json"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		set, err := daps.ParseJWKS(body)
		if err != nil || len(set.Keys) != 1 || set.Keys[s.CurrentKeyID()] == nil || len(set.Skipped) != 0 {
			t.Fatalf("%s: %s → %+v %v", p, body, set, err)
		}
		if !set.Keys[s.CurrentKeyID()].(*ecdsa.PublicKey).Equal(ecKey.Public()) {
			t.Error("JWKS key differs from the signing key")
		}
	}
	for _, p := range []string{"/", "/token", "/jwks.json", "/auth/other"} {
		if a := get(t, base+p); a.status != 404 {
			t.Errorf("%s: %d", p, a.status)
		}
	}
	resp, err := http.Post(base+WellKnownPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST metadata: %d", resp.StatusCode)
	}
}

// TestJWKFormats: RSA, P-384 and Ed25519 signing keys are published as
// JWKs the client driver parses and DATs verify.
func TestJWKFormats(t *testing.T) {
	for _, alg := range []string{"RS256", "ES384", "ES512", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			s, _ := serve(t, func(issuer string) *Server {
				s, err := New(Config{Issuer: issuer, KeyAlgorithm: alg, Logger: quiet(),
					Clients: []Client{{Certificate: pki.Client.Cert}}})
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
			drv, err := daps.New(daps.Config{URL: s.Issuer(), Certificate: pki.Server.Cert, Key: pki.Server.Key, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer drv.Close()
			tok, err := s.Issue(dat.ConnectorID(pki.Client.Cert), 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drv.Verify(context.Background(), tok, pki.Client.Cert); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRotation: after Rotate, tokens of the old key still verify and the
// old key stays in the JWKS until its last token has expired (plus the
// grace period); then it is dropped. State survives a restart.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Now()}
	var s *Server
	mk := func(issuer string) *Server {
		var err error
		s, err = New(Config{Issuer: issuer, StateDir: filepath.Join(dir, "state"), KeyAlgorithm: "ES256",
			TokenLifetime: 10 * time.Minute, RetiredKeyGrace: 30 * time.Second, Now: clk.Now, Logger: quiet(),
			Clients: []Client{{Certificate: pki.Client.Cert}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, ts := serve(t, mk)
	keyFile := filepath.Join(dir, "state", SigningKeyFile)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key file: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "state")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v", fi, err)
	}
	oldKid := s.CurrentKeyID()
	id := dat.ConnectorID(pki.Client.Cert)
	oldTok, err := s.Issue(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	newKid := s.CurrentKeyID()
	if newKid == oldKid {
		t.Fatal("Rotate kept the kid")
	}
	newTok, _ := s.Issue(id, 0)
	if kids := s.KeyIDs(); !slices.Equal(kids, []string{newKid, oldKid}) {
		t.Fatalf("JWKS kids %v", kids)
	}
	verify := func(tok []byte) error {
		drv, err := daps.New(daps.Config{URL: s.Issuer(), Certificate: pki.Server.Cert, Key: pki.Server.Key, Logger: quiet(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer drv.Close()
		_, err = drv.Verify(context.Background(), tok, pki.Client.Cert)
		return err
	}
	if err := verify(oldTok); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
	if err := verify(newTok); err != nil {
		t.Fatalf("new token: %v", err)
	}

	// A restart keeps both keys (the old one is in retired-keys.pem).
	addr := ts.Listener.Addr().String()
	ts.Close()
	_, ts = serveAt(t, addr, mk)
	if s.CurrentKeyID() != newKid || !slices.Equal(s.KeyIDs(), []string{newKid, oldKid}) {
		t.Fatalf("after restart: current %s, kids %v", s.CurrentKeyID(), s.KeyIDs())
	}
	if err := verify(oldTok); err != nil {
		t.Fatalf("old token after restart: %v", err)
	}

	// Until the old key's last token expires (+ grace) it stays published.
	clk.Advance(10*time.Minute + 29*time.Second)
	if !slices.Contains(s.KeyIDs(), oldKid) {
		t.Fatal("old key dropped before its tokens expired")
	}
	clk.Advance(2 * time.Second)
	if kids := s.KeyIDs(); !slices.Equal(kids, []string{newKid}) {
		t.Fatalf("kids %v after the old tokens expired, want only %s", kids, newKid)
	}
	resp, err := http.Get(s.JWKSURI())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	set, err := daps.ParseJWKS(body)
	if err != nil || len(set.Keys) != 1 || set.Keys[newKid] == nil {
		t.Fatalf("JWKS after expiry: %s", body)
	}
	if err := verify(oldTok); dat.ReasonOf(err) != dat.ReasonExpired && dat.ReasonOf(err) != dat.ReasonUnknownKey {
		t.Fatalf("old token after its key was dropped: %v", err)
	}
	// A restart now forgets the expired retired key.
	ts.Close()
	serveAt(t, addr, mk)
	if kids := s.KeyIDs(); !slices.Equal(kids, []string{newKid}) {
		t.Fatalf("kids after restart %v", kids)
	}
}

func TestClientDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("client.pem", pki.Client.CertPEM)
	write("client-key.pem", pki.Client.KeyPEM) // no certificate: skipped
	write("server.crt", pki.Server.CertPEM)
	write("server.json", []byte(`{"securityProfile":"idsc:TRUST_SECURITY_PROFILE","referringConnector":"https://server.example/","claims":{"extendedGuarantee":"idsc:USAGE_CONTROL_POLICY_ENFORCEMENT"},"tokenLifetime":"10m"}`))
	write("notes.txt", []byte("not a certificate"))
	s, _ := newServer(t, func(c *Config) { c.Clients = nil; c.ClientDir = dir })
	want := []string{dat.ConnectorID(pki.Client.Cert), dat.ConnectorID(pki.Server.Cert)}
	slices.Sort(want)
	if got := s.ClientIDs(); !slices.Equal(got, want) {
		t.Fatalf("clients %v, want %v", got, want)
	}
	tok, err := s.Issue(dat.ConnectorID(pki.Server.Cert), 0)
	if err != nil {
		t.Fatal(err)
	}
	mc := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(string(tok), mc)
	if mc["securityProfile"] != "idsc:TRUST_SECURITY_PROFILE" || mc["referringConnector"] != "https://server.example/" ||
		mc["extendedGuarantee"] != "idsc:USAGE_CONTROL_POLICY_ENFORCEMENT" || mc["exp"].(float64)-mc["iat"].(float64) != 600 {
		t.Errorf("claims %v", mc)
	}
	if !s.RemoveClient(dat.ConnectorID(pki.Server.Cert)) || len(s.ClientIDs()) != 1 {
		t.Error("RemoveClient")
	}

	write("bad.json", []byte(`{"securityProfil":"typo"}`))
	write("bad.pem", pki.Foreign.CertPEM)
	if _, err := s.LoadClientDir(dir); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("a typo in an attribute file: %v", err)
	}
	write("broken.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	os.Remove(filepath.Join(dir, "bad.json"))
	if _, err := s.LoadClientDir(dir); err == nil || !strings.Contains(err.Error(), "broken.pem") {
		t.Errorf("a broken certificate: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no issuer":       {},
		"relative issuer": {Issuer: "/auth"},
		"query":           {Issuer: "http://x/?a"},
		"bad alg":         {Issuer: "http://x", KeyAlgorithm: "HS256"},
		"neg lifetime":    {Issuer: "http://x", TokenLifetime: -1},
		"client no cert":  {Issuer: "http://x", KeyAlgorithm: "ES256", Clients: []Client{{}}},
		"bad fingerprint": {Issuer: "http://x", KeyAlgorithm: "ES256", Clients: []Client{{Certificate: pki.Client.Cert, TransportCerts: []string{"AB"}}}},
	} {
		cfg.Logger = quiet()
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, SigningKeyFile), []byte("garbage"), 0o600)
	if _, err := New(Config{Issuer: "http://x", StateDir: dir, Logger: quiet()}); err == nil {
		t.Error("garbage signing key accepted")
	}
	// A signing key readable by others is refused.
	loose := t.TempDir()
	if _, err := New(Config{Issuer: "http://x", StateDir: loose, KeyAlgorithm: "ES256", Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(loose, SigningKeyFile), 0o644)
	if _, err := New(Config{Issuer: "http://x", StateDir: loose, Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable signing key: %v", err)
	}
}

// TestConcurrentIssueAndRotate: token requests, JWKS reads and rotations
// at once (for the race detector); every issued token verifies.
func TestConcurrentIssueAndRotate(t *testing.T) {
	s, _ := newServer(t, func(c *Config) { c.SigningKey = nil; c.KeyAlgorithm = "ES256" })
	drv, err := daps.New(daps.Config{URL: s.Issuer(), Certificate: pki.Server.Cert, Key: pki.Server.Key, Logger: quiet(),
		JWKSRefreshInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	id := dat.ConnectorID(pki.Client.Cert)
	var wg sync.WaitGroup
	toks := make(chan string, 40)
	for range 4 {
		wg.Go(func() {
			for range 10 {
				a := post(t, s.TokenEndpoint(), tokenForm(assertion(t, pki.Client.Key, jwt.SigningMethodES256, assertionClaims(s, id))))
				if a.status != 200 {
					t.Errorf("%d %v", a.status, a.body)
					return
				}
				toks <- a.body["access_token"].(string)
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := s.Rotate(); err != nil {
				t.Error(err)
			}
			get(t, s.JWKSURI())
		}
	})
	wg.Wait()
	close(toks)
	published := s.KeyIDs()
	for tok := range toks {
		if _, err := drv.Verify(context.Background(), []byte(tok), pki.Client.Cert); err != nil {
			t.Fatalf("token issued during rotations: %v", err)
		}
		h, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
		if kid := h.Header["kid"].(string); !slices.Contains(published, kid) {
			t.Errorf("kid %s of a live token is not published (%v)", kid, published)
		}
	}
	// Keys that signed nothing are not kept after their rotation.
	if n := len(published); n < 1 || n > 6 {
		t.Errorf("%d keys published after 5 rotations", n)
	}
}

// FuzzTokenEndpoint feeds arbitrary form bodies to the token endpoint: it
// must answer with an OAuth error document (or a DAT for a valid request)
// and never panic.
func FuzzTokenEndpoint(f *testing.F) {
	s, err := New(Config{Issuer: "http://daps.test", SigningKey: ecKey, Logger: quiet(),
		Clients: []Client{{Certificate: pki.Client.Cert}}})
	if err != nil {
		f.Fatal(err)
	}
	id := dat.ConnectorID(pki.Client.Cert)
	good := assertion(f, pki.Client.Key, jwt.SigningMethodES256, assertionClaims(s, id))
	form := tokenForm(good)
	form.Set("claims", `{"access_token":{"transportCertsSha256":{"value":["`+dat.Fingerprint(pki.Client.Cert)+`"]}}}`)
	f.Add(form.Encode())
	f.Add(tokenForm("a.b.c").Encode())
	f.Add("grant_type=client_credentials&claims=%7B")
	f.Add("")
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "http://daps.test/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var doc map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case http.StatusOK:
			if _, ok := doc["access_token"].(string); !ok {
				t.Fatalf("200 without access_token: %v", doc)
			}
		case http.StatusBadRequest, http.StatusTooManyRequests:
			if c, _ := doc["error"].(string); c == "" {
				t.Fatalf("%d without error code: %v", rec.Code, doc)
			}
		default:
			t.Fatalf("status %d: %v", rec.Code, doc)
		}
	})
}
