package dapsserver

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Defaults of Config.
const (
	DefaultKeyAlgorithm         = "RS256" // Omejdn's default: RSA 2048
	DefaultTokenLifetime        = time.Hour
	DefaultMaxAssertionLifetime = 24 * time.Hour // idscp2-jvm and TRUE send exp = iat + 24 h
	DefaultLeeway               = 30 * time.Second
	DefaultReplayCachePerClient = 1024
	DefaultRetiredKeyGrace      = 30 * time.Second // verifiers accept exp + 30 s
	DefaultCacheMaxAge          = 24 * time.Hour   // Omejdn: public, max-age=86400, must-revalidate
	maxFormSize                 = 64 << 10
)

// Protocol constants.
const (
	Scope               = "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	GrantType           = "client_credentials"
	WellKnownPath       = "/.well-known/oauth-authorization-server"
	OpenIDPath          = "/.well-known/openid-configuration"
)

// Config configures a Server. Issuer is required.
type Config struct {
	// Issuer is the DAPS's issuer URL (the "iss" of its DATs) and the base
	// of its endpoints: <Issuer>/token and <Issuer>/jwks.json. The
	// handler serves the paths of this URL, so mount it at the root of the
	// listener Issuer names (or behind a proxy that keeps the paths).
	Issuer string

	// StateDir keeps the signing key (SigningKeyFile, created 0600 if
	// absent) and the retired public keys (RetiredKeysFile). It is created
	// 0700 if needed. Empty means keys live in memory only: a restart
	// makes every issued DAT unverifiable.
	StateDir string
	// KeyAlgorithm of newly created signing keys: RS256 (default), ES256,
	// ES384, ES512 or EdDSA. An existing key keeps its type.
	KeyAlgorithm string
	// SigningKey, if set, is the initial signing key instead of StateDir's
	// (rotated keys are still written to StateDir if it is set).
	SigningKey crypto.Signer

	// TokenLifetime of issued DATs. Default 1 h (Omejdn, IDS-G).
	TokenLifetime time.Duration

	// ClientDir, if set, is loaded with LoadClientDir by New.
	ClientDir string
	// Clients are registered by New.
	Clients []Client

	// AcceptAudiences are the client assertion audiences accepted. Default:
	// the token endpoint URL, the issuer and idsc:IDS_CONNECTORS_ALL (what
	// idscp2-jvm, RFC 7523 and omejdn-daps's clients send).
	AcceptAudiences []string
	// AllowedResources are the values a client may ask for with the RFC
	// 8707 resource parameter (they become the DAT's aud). Default
	// idsc:IDS_CONNECTORS_ALL only, which is also the aud when no
	// resource is requested.
	AllowedResources []string
	// MaxAssertionLifetime bounds exp − iat of client assertions. Default
	// 24 h, what idscp2-jvm sends.
	MaxAssertionLifetime time.Duration
	// Leeway for the assertion's exp, nbf and iat. Default 30 s (Omejdn).
	Leeway time.Duration
	// RequireJTI refuses assertions without jti (idscp2-jvm sends none).
	RequireJTI bool
	// ReplayCachePerClient bounds the unexpired jti values remembered per
	// client; a client that exceeds it is refused until some expire.
	// Default 1024.
	ReplayCachePerClient int
	// RetiredKeyGrace is how long after the last exp of a retired key's
	// tokens the key stays in the JWKS. Default 30 s (verifiers' leeway).
	RetiredKeyGrace time.Duration
	// CacheMaxAge is the Cache-Control max-age of metadata and JWKS.
	// Default 24 h (Omejdn). Verifiers refetch the JWKS early when they
	// meet a new kid, so rotation does not wait for it.
	CacheMaxAge time.Duration

	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// Server is the built-in DAPS; it is an http.Handler and safe for
// concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	basePath  string
	tokenURL  string
	jwksURL   string
	accepted  map[string]bool
	resources map[string]bool

	regMu   sync.RWMutex
	clients map[string]*Client

	rotateMu sync.Mutex
	keyMu    sync.Mutex
	current  *signingKey
	retired  []*signingKey

	replay *replayCache
}

// New builds a Server: it loads or creates the signing key and registers
// the configured clients.
func New(cfg Config) (*Server, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("dapsserver: Config.Issuer %q is not an absolute http(s) URL without query", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.KeyAlgorithm == "" {
		cfg.KeyAlgorithm = DefaultKeyAlgorithm
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TokenLifetime", &cfg.TokenLifetime, DefaultTokenLifetime},
		{"MaxAssertionLifetime", &cfg.MaxAssertionLifetime, DefaultMaxAssertionLifetime},
		{"Leeway", &cfg.Leeway, DefaultLeeway},
		{"RetiredKeyGrace", &cfg.RetiredKeyGrace, DefaultRetiredKeyGrace},
		{"CacheMaxAge", &cfg.CacheMaxAge, DefaultCacheMaxAge},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("dapsserver: negative Config.%s", d.name)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.ReplayCachePerClient <= 0 {
		cfg.ReplayCachePerClient = DefaultReplayCachePerClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "dapsserver"),
		basePath:  strings.TrimRight(u.EscapedPath(), "/"),
		tokenURL:  cfg.Issuer + "/token",
		jwksURL:   cfg.Issuer + "/jwks.json",
		accepted:  map[string]bool{},
		resources: map[string]bool{},
		clients:   map[string]*Client{},
		replay:    &replayCache{perClient: cfg.ReplayCachePerClient, seen: map[string]map[string]time.Time{}},
	}
	if len(cfg.AcceptAudiences) == 0 {
		cfg.AcceptAudiences = []string{s.tokenURL, cfg.Issuer, dat.AudienceAll}
	}
	for _, a := range cfg.AcceptAudiences {
		s.accepted[a] = true
	}
	if len(cfg.AllowedResources) == 0 {
		cfg.AllowedResources = []string{dat.AudienceAll}
	}
	for _, r := range cfg.AllowedResources {
		s.resources[r] = true
	}
	s.cfg = cfg
	if err := s.initKeys(); err != nil {
		return nil, err
	}
	if cfg.ClientDir != "" {
		if _, err := s.LoadClientDir(cfg.ClientDir); err != nil {
			return nil, err
		}
	}
	for _, c := range cfg.Clients {
		if err := s.AddClient(c); err != nil {
			return nil, err
		}
	}
	s.log.Warn("built-in DAPS: for development and closed test data spaces only",
		"issuer", cfg.Issuer, "token_endpoint", s.tokenURL, "jwks_uri", s.jwksURL, "kid", s.current.kid)
	return s, nil
}

func (s *Server) initKeys() error {
	now := s.cfg.Now()
	key := s.cfg.SigningKey
	if s.cfg.StateDir != "" {
		if err := os.MkdirAll(s.cfg.StateDir, 0o700); err != nil {
			return fmt.Errorf("dapsserver: state directory: %w", err)
		}
		if key == nil {
			k, created, err := loadOrCreateKey(s.cfg.StateDir, s.cfg.KeyAlgorithm)
			if err != nil {
				return err
			}
			if created {
				s.log.Info("created a new DAPS signing key", "file", SigningKeyFile, "dir", s.cfg.StateDir)
			}
			key = k
		}
		retired, err := readRetired(s.cfg.StateDir, now)
		if err != nil {
			return err
		}
		s.retired = retired
	}
	if key == nil {
		k, err := generateKey(s.cfg.KeyAlgorithm)
		if err != nil {
			return err
		}
		key = k
	}
	cur, err := newSigningKey(s.cfg.Issuer, key)
	if err != nil {
		return err
	}
	// Tokens this key signed before a restart may live up to one lifetime.
	cur.lastExp = now.Add(s.cfg.TokenLifetime)
	s.current = cur
	s.retired = dropKid(s.retired, cur.kid)
	return nil
}

func dropKid(keys []*signingKey, kid string) []*signingKey {
	out := keys[:0]
	for _, k := range keys {
		if k.kid != kid {
			out = append(out, k)
		}
	}
	return out
}

// Issuer is the issuer URL ("iss" of the DATs).
func (s *Server) Issuer() string { return s.cfg.Issuer }

// TokenEndpoint is <Issuer>/token.
func (s *Server) TokenEndpoint() string { return s.tokenURL }

// JWKSURI is <Issuer>/jwks.json.
func (s *Server) JWKSURI() string { return s.jwksURL }

// KeyIDs returns the kids in the JWKS, the current signing key first.
func (s *Server) KeyIDs() []string {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	ids := []string{s.current.kid}
	for _, k := range s.liveRetiredLocked() {
		ids = append(ids, k.kid)
	}
	return ids
}

// CurrentAlgorithm is the JWS algorithm of the current signing key.
func (s *Server) CurrentAlgorithm() string {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.current.alg
}

// CurrentKeyID is the kid of the current signing key.
func (s *Server) CurrentKeyID() string {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.current.kid
}

// Rotate makes a new signing key of the current key's type. The old
// public key stays in the JWKS until the last exp of the tokens it signed
// plus RetiredKeyGrace. With a StateDir, the retired key list is written
// before the new key, so a crash never loses a published key.
func (s *Server) Rotate() error {
	s.rotateMu.Lock() // one rotation at a time; issuing goes on meanwhile
	defer s.rotateMu.Unlock()
	key, err := generateKey(s.CurrentAlgorithm())
	if err != nil {
		return err
	}
	next, err := newSigningKey(s.cfg.Issuer, key)
	if err != nil {
		return err
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	old := *s.current
	old.issuer = nil
	old.dropAfter = old.lastExp.Add(s.cfg.RetiredKeyGrace)
	retired := append(s.liveRetiredLocked(), &old)
	if s.cfg.StateDir != "" {
		if err := writeRetired(s.cfg.StateDir, retired); err != nil {
			return err
		}
		if err := writeKey(s.cfg.StateDir, key); err != nil {
			return err
		}
	}
	s.retired = retired
	s.current = next
	s.log.Info("rotated the DAPS signing key", "kid", next.kid, "retired_kid", old.kid,
		"retired_until", old.dropAfter.UTC().Format(time.RFC3339))
	return nil
}

// liveRetiredLocked returns the retired keys still to be published.
func (s *Server) liveRetiredLocked() []*signingKey {
	now := s.cfg.Now()
	var out []*signingKey
	for _, k := range s.retired {
		if k.dropAfter.After(now) {
			out = append(out, k)
		}
	}
	s.retired = out
	return out
}

// ServeHTTP routes the metadata, JWKS and token endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch p {
	case WellKnownPath, WellKnownPath + s.basePath, OpenIDPath, s.basePath + OpenIDPath, s.basePath + WellKnownPath:
		s.serveStatic(w, r, s.metadata)
	case s.basePath + "/jwks.json", s.basePath + "/.well-known/jwks.json":
		s.serveStatic(w, r, s.jwks)
	case s.basePath + "/token":
		s.serveToken(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request, doc func() (any, error)) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	v, err := doc()
	if err != nil {
		s.log.Error("cannot render a DAPS document", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.CacheMaxAge/time.Second))+", must-revalidate")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

func (s *Server) metadata() (any, error) {
	return map[string]any{
		"issuer":                                s.cfg.Issuer,
		"token_endpoint":                        s.tokenURL,
		"jwks_uri":                              s.jwksURL,
		"scopes_supported":                      []string{Scope},
		"grant_types_supported":                 []string{GrantType},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": assertionAlgs,
		"claims_parameter_supported":                       true,
		"service_documentation":                            "built-in DAPS of idscp2-sidecar, for development and closed test data spaces",
	}, nil
}

func (s *Server) jwks() (any, error) {
	s.keyMu.Lock()
	keys := append([]*signingKey{s.current}, s.liveRetiredLocked()...)
	s.keyMu.Unlock()
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		j, err := jwk(k)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return map[string]any{"keys": out}, nil
}

// oauthError is an RFC 6749 §5.2 error answer.
type oauthError struct {
	status      int
	code        string
	description string
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func errInvalidClient(format string, args ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_client", fmt.Sprintf(format, args...)}
}

func errInvalidRequest(format string, args ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "use POST"})
		return
	}
	resp, clientID, err := s.token(w, r)
	if err != nil {
		var oe *oauthError
		if !errors.As(err, &oe) {
			oe = &oauthError{http.StatusInternalServerError, "server_error", "internal error"}
			s.log.Error("token request failed", "remote", r.RemoteAddr, "client", clientID, "err", err)
		} else {
			s.log.Warn("token request refused", "remote", r.RemoteAddr, "client", clientID, "error", oe.code, "description", oe.description)
		}
		writeJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.description})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// tokenResponse is the RFC 6749 §5.1 answer, as Omejdn writes it.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	TokenType   string `json:"token_type"`
	Scope       string `json:"scope"`
}

// token handles one token request, in Omejdn's order: authenticate the
// client, then check the grant type, scopes and resources, then issue.
func (s *Server) token(w http.ResponseWriter, r *http.Request) (*tokenResponse, string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := r.ParseForm(); err != nil {
		return nil, "", errInvalidRequest("cannot parse the form body: %v", err)
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 && k != "resource" {
			return nil, "", errInvalidRequest("parameter %q given more than once", k)
		}
	}
	client, err := s.authenticate(form)
	if err != nil {
		return nil, "", err
	}
	if form.Get("grant_type") != GrantType {
		return nil, client.ID, errInvalidRequest("Grant type not allowed")
	}
	granted := ""
	for _, sc := range strings.Fields(form.Get("scope")) {
		if sc == Scope {
			granted = Scope
		}
	}
	if granted == "" {
		return nil, client.ID, &oauthError{http.StatusBadRequest, "access_denied", "No scopes granted"}
	}
	aud := form["resource"]
	for _, res := range aud {
		if !s.resources[res] {
			return nil, client.ID, &oauthError{http.StatusBadRequest, "invalid_target", fmt.Sprintf("Access denied to: %q", res)}
		}
	}
	if len(aud) == 0 {
		aud = []string{dat.AudienceAll}
	}
	fps, err := s.transportCerts(client, form.Get("claims"))
	if err != nil {
		return nil, client.ID, err
	}
	tok, lifetime, err := s.issue(client, granted, aud, fps)
	if err != nil {
		return nil, client.ID, err
	}
	s.log.Info("issued a DAT", "client", client.ID, "lifetime", lifetime, "remote", r.RemoteAddr)
	return &tokenResponse{AccessToken: string(tok), ExpiresIn: int64(lifetime / time.Second), TokenType: "bearer", Scope: granted}, client.ID, nil
}

// transportCerts resolves transportCertsSha256: the registered
// certificate's fingerprint, plus the values of a claims request
// ({"access_token":{"transportCertsSha256":{"value":[...]}}}, or
// "values", or a single string) that are registered for the client. Without
// a claims request every registered fingerprint is included. Requested
// values not registered are ignored (and logged).
func (s *Server) transportCerts(c *Client, claims string) ([]string, error) {
	registered := c.fingerprints()
	if claims == "" {
		return registered, nil
	}
	var req map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(claims), &req); err != nil {
		return nil, errInvalidRequest("the claims parameter is not a JSON object of claim requests: %v", err)
	}
	raw, ok := req["access_token"]["transportCertsSha256"]
	if !ok {
		return registered, nil
	}
	var spec struct {
		Value  json.RawMessage `json:"value"`
		Values []string        `json:"values"`
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, errInvalidRequest("transportCertsSha256 claim request: %v", err)
	}
	requested := spec.Values
	if len(spec.Value) > 0 {
		var one string
		var many []string
		switch {
		case json.Unmarshal(spec.Value, &one) == nil:
			requested = append(requested, one)
		case json.Unmarshal(spec.Value, &many) == nil:
			requested = append(requested, many...)
		default:
			return nil, errInvalidRequest("transportCertsSha256 value is neither a string nor an array of strings")
		}
	}
	out := []string{registered[0]}
	for _, fp := range requested {
		switch {
		case contains(out, fp):
		case contains(registered, fp):
			out = append(out, fp)
		default:
			s.log.Warn("ignoring a transportCertsSha256 value not registered for the client", "client", c.ID, "value", fp)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// issue signs a DAT for c with the current key.
func (s *Server) issue(c *Client, scope string, aud, fps []string) ([]byte, time.Duration, error) {
	lifetime := c.TokenLifetime
	if lifetime == 0 {
		lifetime = s.cfg.TokenLifetime
	}
	// As Omejdn: iat = nbf = now in whole seconds, exp = iat + lifetime.
	iat := s.cfg.Now().Unix()
	expUnix := iat + int64((lifetime+time.Second-1)/time.Second)
	extra := map[string]any{
		"sub":                  c.ID,
		"client_id":            c.ID,
		"aud":                  aud,
		"scope":                scope,
		"iat":                  iat,
		"nbf":                  iat,
		"exp":                  expUnix,
		"securityProfile":      c.SecurityProfile,
		"transportCertsSha256": fps,
	}
	if c.ReferringConnector != "" {
		extra["referringConnector"] = c.ReferringConnector
	}
	for k, v := range c.Claims {
		extra[k] = v
	}
	s.keyMu.Lock()
	key := s.current
	if last := time.Unix(expUnix, 0); last.After(key.lastExp) {
		key.lastExp = last
	}
	s.keyMu.Unlock()
	tok, err := key.issuer.Issue(c.Certificate, lifetime, extra)
	if err != nil {
		return nil, 0, err
	}
	return tok, lifetime, nil
}

// Issue signs a DAT for the registered client id directly, without a
// token request (for tests and the demo). lifetime 0 means the client's or
// the server's default.
func (s *Server) Issue(clientID string, lifetime time.Duration) ([]byte, error) {
	c := s.client(clientID)
	if c == nil {
		return nil, fmt.Errorf("dapsserver: unknown client %q", clientID)
	}
	if lifetime != 0 {
		cc := *c
		cc.TokenLifetime = lifetime
		c = &cc
	}
	tok, _, err := s.issue(c, Scope, []string{dat.AudienceAll}, c.fingerprints())
	return tok, err
}
