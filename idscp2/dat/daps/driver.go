package daps

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Driver is the DAPS client dat.Driver. It is safe for concurrent use; one
// Driver serves every connection of a process. Close stops its background
// fetches.
type Driver struct {
	cfg         Config
	base        *url.URL
	client      *http.Client
	connectorID string
	fingerprint string
	alg         string
	log         *slog.Logger

	bg   context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	meta  *cell[*Metadata]
	jwks  *cell[*JWKS]
	token *cell[*tokenValue]
	ver   atomic.Pointer[verifierEntry]
}

var _ dat.Driver = (*Driver)(nil)

type tokenValue struct {
	token []byte
	exp   time.Time
}

type verifierEntry struct {
	issuer string
	v      *dat.JWTVerifier
}

// New checks cfg and returns a driver. It makes no network request: the
// DAPS is contacted on the first Token or Verify, so a sidecar can start
// while its DAPS is down.
func New(cfg Config) (*Driver, error) {
	cfg, base, err := cfg.resolved()
	if err != nil {
		return nil, err
	}
	alg, _ := assertionAlg(cfg.Key.Public()) // checked by resolved
	d := &Driver{
		cfg:         cfg,
		base:        base,
		client:      newHTTPClient(&cfg),
		connectorID: dat.ConnectorID(cfg.Certificate),
		fingerprint: dat.Fingerprint(cfg.Certificate),
		alg:         alg,
		log:         cfg.Logger.With("component", "daps", "daps", cfg.URL),
	}
	d.bg, d.stop = context.WithCancel(context.Background())
	d.meta = &cell[*Metadata]{name: "DAPS metadata", fetch: d.fetchMetadata}
	d.jwks = &cell[*JWKS]{name: "DAPS key set", fetch: d.fetchJWKS}
	d.token = &cell[*tokenValue]{name: "DAT", fetch: d.fetchToken}
	for _, c := range []interface {
		init(d *Driver)
	}{d.meta, d.jwks, d.token} {
		c.init(d)
	}
	return d, nil
}

func (c *cell[T]) init(d *Driver) {
	c.now, c.bg, c.timeout, c.wg = d.cfg.Now, d.bg, d.cfg.FetchTimeout, &d.wg
}

// Close stops background fetches and waits for them to end. Token and
// Verify keep serving cached values afterwards but fetch nothing new.
func (d *Driver) Close() error {
	d.stop()
	d.wg.Wait()
	return nil
}

// ConnectorID is the connector id this driver authenticates as
// (dat.ConnectorID of Config.Certificate).
func (d *Driver) ConnectorID() string { return d.connectorID }

// RenewalThreshold is Config.Threshold.
func (d *Driver) RenewalThreshold() float64 { return d.cfg.Threshold }

// Token returns this connector's DAT. A cached token is returned at once
// while it is valid; once Threshold of its lifetime has passed a renewal
// starts in the background and the cached token is still returned until
// shortly before its exp. Only when no valid token is cached does Token
// wait for the DAPS, as long as ctx allows; the error then names the
// latest DAPS failure.
func (d *Driver) Token(ctx context.Context) ([]byte, error) {
	tv, err := d.token.get(ctx)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(tv.token), nil
}

// fetchToken is the token cell's fetch: one token request (with retries).
func (d *Driver) fetchToken(ctx context.Context, note func(error)) (tv *tokenValue, renewAt, usable time.Time, err error) {
	outcome := FetchOK
	defer func() {
		if err != nil {
			if d.bg.Err() != nil {
				outcome = FetchCanceled
			}
			d.log.Warn("cannot obtain a DAT from the DAPS", "outcome", outcome, "err", err)
		}
		if d.cfg.OnTokenFetch != nil {
			d.cfg.OnTokenFetch(outcome)
		}
	}()
	meta, err := d.meta.get(ctx)
	if err != nil {
		outcome = FetchMetadata
		return nil, renewAt, usable, fmt.Errorf("daps: discovering the token endpoint: %w", err)
	}
	aud := d.cfg.Audience
	if aud == "" {
		aud = meta.TokenEndpoint
	}
	fps := []string{d.fingerprint}
	for _, fp := range d.cfg.TransportCerts {
		if !slices.Contains(fps, fp) {
			fps = append(fps, fp)
		}
	}
	claims, err := claimsRequest(fps)
	if err != nil {
		outcome = FetchAssertion
		return nil, renewAt, usable, err
	}
	signingFailed := false
	resp, err := d.do(ctx, note, func(ctx context.Context) (*http.Request, error) {
		assertion, err := d.clientAssertion(aud) // fresh jti for every attempt
		if err != nil {
			signingFailed = true
			return nil, permanentError{err}
		}
		form := url.Values{
			"grant_type":            {"client_credentials"},
			"client_assertion_type": {ClientAssertionType},
			"client_assertion":      {assertion},
			"scope":                 {Scope},
		}
		if !d.cfg.NoClaimsRequest {
			form.Set("claims", claims)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.TokenEndpoint, strings.NewReader(form.Encode()))
		if err != nil {
			return nil, permanentError{err}
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		return req, nil
	})
	if err != nil {
		if signingFailed {
			outcome = FetchAssertion
		} else {
			outcome = FetchNetwork
		}
		return nil, renewAt, usable, fmt.Errorf("daps: token request to %s: %w", meta.TokenEndpoint, err)
	}
	if resp.status != http.StatusOK {
		outcome = FetchHTTP
		if oe := ParseOAuthError(resp.status, resp.body); oe != nil {
			return nil, renewAt, usable, fmt.Errorf("daps: token request to %s refused: %w", meta.TokenEndpoint, oe)
		}
		return nil, renewAt, usable, fmt.Errorf("daps: token request refused: %w",
			&StatusError{URL: meta.TokenEndpoint, Status: resp.status, Body: snippet(resp.body)})
	}
	tv, renewAt, usable, err = d.acceptToken(resp.body)
	if err != nil {
		outcome = FetchResponse
		return nil, renewAt, usable, fmt.Errorf("daps: token response from %s: %w", meta.TokenEndpoint, err)
	}
	return tv, renewAt, usable, nil
}

// acceptToken parses a 200 token response and schedules the renewal:
// renewAt = now + lifetime × Threshold; the token is served until
// exp − min(5 s, lifetime/10), so that a peer never receives a DAT with no
// remaining validity.
func (d *Driver) acceptToken(body []byte) (*tokenValue, time.Time, time.Time, error) {
	tr, err := ParseTokenResponse(body)
	if err != nil {
		return nil, time.Time{}, time.Time{}, err
	}
	if len(tr.AccessToken) > d.cfg.MaxTokenSize {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("DAT of %d bytes exceeds the %d byte cap", len(tr.AccessToken), d.cfg.MaxTokenSize)
	}
	now := d.cfg.Now()
	claims, cerr := unverifiedClaims(tr.AccessToken)
	exp, haveExp := time.Time{}, false
	if cerr == nil {
		exp, haveExp = expClaim(claims)
	}
	if tr.ExpiresIn > 0 {
		if e := now.Add(tr.ExpiresIn); !haveExp || e.Before(exp) {
			exp, haveExp = e, true
		}
	}
	if !haveExp {
		return nil, time.Time{}, time.Time{}, errors.New("the DAT has neither expires_in nor an exp claim")
	}
	lifetime := exp.Sub(now)
	if lifetime <= 0 {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("the DAPS issued a DAT that expired at %s", exp.UTC().Format(time.RFC3339))
	}
	usable := exp.Add(-min(5*time.Second, lifetime/10))
	renewAt := now.Add(time.Duration(float64(lifetime) * d.cfg.Threshold))
	if renewAt.After(usable) {
		renewAt = usable
	}
	if cerr != nil {
		d.log.Warn("the DAT from the DAPS is not a JWT; peers will refuse it", "err", cerr)
	} else if !bindsCert(claims["transportCertsSha256"], d.fingerprint) {
		d.log.Warn("the DAT from the DAPS does not bind this connector's certificate (transportCertsSha256); peers will refuse it",
			"fingerprint", d.fingerprint, "transportCertsSha256", claims["transportCertsSha256"])
	}
	d.log.Info("obtained a DAT from the DAPS", "sub", claims["sub"], "exp", exp.UTC().Format(time.RFC3339),
		"lifetime", lifetime.Round(time.Second), "renew_at", renewAt.UTC().Format(time.RFC3339))
	return &tokenValue{token: []byte(tr.AccessToken), exp: exp}, renewAt, usable, nil
}

func bindsCert(v any, fp string) bool {
	switch t := v.(type) {
	case string:
		return t == fp
	case []any:
		for _, e := range t {
			if e == fp {
				return true
			}
		}
	}
	return false
}

// TokenResponse is the successful answer of a token endpoint (RFC 6749
// §5.1).
type TokenResponse struct {
	AccessToken string
	TokenType   string
	Scope       string
	// ExpiresIn is 0 when the DAPS sent none. Omejdn sends a number, IDS-G's
	// example a string; both are accepted.
	ExpiresIn time.Duration
}

// maxExpiresIn bounds expires_in (ten years) so that durations stay exact.
const maxExpiresIn = 10 * 365 * 24 * time.Hour

// ParseTokenResponse parses a token endpoint's 200 answer: a JSON object
// with a non-empty string access_token and optionally expires_in (a
// non-negative number or decimal string of seconds), token_type and scope.
func ParseTokenResponse(body []byte) (*TokenResponse, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("not a JSON object: %v (%s)", err, snippet(body))
	}
	tr := &TokenResponse{}
	str := func(name string, dst *string) error {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%q is not a string", name)
		}
		return nil
	}
	if err := str("access_token", &tr.AccessToken); err != nil {
		return nil, err
	}
	if tr.AccessToken == "" {
		if oe := ParseOAuthError(http.StatusOK, body); oe != nil {
			return nil, oe
		}
		return nil, errors.New("no access_token")
	}
	if err := str("token_type", &tr.TokenType); err != nil {
		return nil, err
	}
	if err := str("scope", &tr.Scope); err != nil {
		return nil, err
	}
	if v, ok := raw["expires_in"]; ok && string(v) != "null" {
		d, err := parseExpiresIn(v)
		if err != nil {
			return nil, err
		}
		tr.ExpiresIn = d
	}
	return tr, nil
}

func parseExpiresIn(v json.RawMessage) (time.Duration, error) {
	var s string
	if len(v) > 0 && v[0] == '"' {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, errors.New(`"expires_in" is not a valid string`)
		}
		s = strings.TrimSpace(s)
	} else {
		var n json.Number
		if err := json.Unmarshal(v, &n); err != nil {
			return 0, errors.New(`"expires_in" is neither a number nor a string`)
		}
		s = n.String()
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f || f < 0 {
		return 0, fmt.Errorf(`"expires_in" %q is not a non-negative number of seconds`, s)
	}
	if f > maxExpiresIn.Seconds() {
		return maxExpiresIn, nil
	}
	return time.Duration(f * float64(time.Second)), nil
}

// OAuthError is an error answer of the token endpoint (RFC 6749 §5.2).
type OAuthError struct {
	Status      int    // HTTP status
	Code        string // "error", e.g. invalid_client
	Description string // "error_description"
}

func (e *OAuthError) Error() string {
	if e.Description == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Code, e.Status)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Description, e.Status)
}

// ParseOAuthError reads an OAuth error document; nil if body is not one.
func ParseOAuthError(status int, body []byte) *OAuthError {
	var doc struct {
		Error       any `json:"error"`
		Description any `json:"error_description"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil
	}
	code, ok := doc.Error.(string)
	if !ok || code == "" {
		return nil
	}
	desc, _ := doc.Description.(string)
	const maxLen = 300
	if len(desc) > maxLen {
		desc = desc[:maxLen] + "..."
	}
	if len(code) > 64 {
		code = code[:64]
	}
	return &OAuthError{Status: status, Code: strings.ToValidUTF8(code, "?"), Description: strings.ToValidUTF8(desc, "?")}
}

// ---- verification ----

// Verify checks a peer DAT with dat.JWTVerifier against the DAPS's keys and
// issuer; see dat.Driver. Every refusal is a *dat.VerifyError; it is
// reported to Config.OnRefusal and logged at debug level (the connection
// logs it too).
func (d *Driver) Verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*dat.Identity, error) {
	id, err := d.verify(ctx, token, peerCert)
	if err != nil {
		reason := dat.ReasonOf(err)
		d.log.Debug("DAT refused", "reason", string(reason), "err", err)
		if d.cfg.OnRefusal != nil {
			d.cfg.OnRefusal(reason)
		}
		return nil, err
	}
	return id, nil
}

func (d *Driver) verify(ctx context.Context, token []byte, peerCert *x509.Certificate) (*dat.Identity, error) {
	if len(token) > d.cfg.MaxTokenSize {
		return nil, dat.Refuse(dat.ReasonOversized, "token of %d bytes exceeds the %d byte cap", len(token), d.cfg.MaxTokenSize)
	}
	v, err := d.verifier(ctx)
	if err != nil {
		return nil, &dat.VerifyError{Reason: dat.ReasonUnavailable, Err: err}
	}
	return v.Verify(ctx, token, peerCert)
}

// verifier returns the JWTVerifier for the current issuer.
func (d *Driver) verifier(ctx context.Context) (*dat.JWTVerifier, error) {
	issuer := d.cfg.Issuer
	if issuer == "" {
		m, err := d.meta.get(ctx)
		if err != nil {
			return nil, err
		}
		issuer = m.Issuer
	}
	if e := d.ver.Load(); e != nil && e.issuer == issuer {
		return e.v, nil
	}
	v, err := dat.NewJWTVerifier(dat.VerifierConfig{
		Issuer:             issuer,
		Keys:               keySource{d},
		Leeway:             d.cfg.Leeway,
		MaxTokenSize:       d.cfg.MaxTokenSize,
		MinSecurityProfile: d.cfg.MinSecurityProfile,
		Now:                d.cfg.Now,
		SignatureCache:     d.cfg.SignatureCache,
	})
	if err != nil {
		return nil, err
	}
	d.ver.Store(&verifierEntry{issuer: issuer, v: v})
	return v, nil
}

// keySource is the dat.KeySource over the DAPS's JWKS.
type keySource struct{ d *Driver }

// Key returns the key for kid from the cached JWKS. An unknown kid makes
// the driver fetch the JWKS again, at most once per JWKSRefreshInterval.
func (k keySource) Key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	d := k.d
	set, err := d.jwks.get(ctx)
	if err != nil {
		return nil, err
	}
	if key, ok := set.Keys[kid]; ok {
		return key, nil
	}
	set, ran, err := d.jwks.refresh(ctx, d.cfg.JWKSRefreshInterval)
	if !ran {
		return nil, fmt.Errorf("%w: %q (the JWKS was fetched %v ago; it is refetched for unknown kids at most every %v)",
			dat.ErrUnknownKey, kid, d.jwks.sinceLastFetch().Round(time.Millisecond), d.cfg.JWKSRefreshInterval)
	}
	if err != nil {
		return nil, fmt.Errorf("kid %q is not in the cached JWKS and refetching it failed: %w", kid, err)
	}
	if key, ok := set.Keys[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %q (not in the DAPS's JWKS)", dat.ErrUnknownKey, kid)
}

// fetchJWKS is the JWKS cell's fetch.
func (d *Driver) fetchJWKS(ctx context.Context, note func(error)) (*JWKS, time.Time, time.Time, error) {
	meta, err := d.meta.get(ctx)
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("daps: discovering jwks_uri: %w", err)
	}
	resp, err := d.do(ctx, note, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, meta.JWKSURI, nil)
		if err == nil {
			req.Header.Set("Accept", "application/json")
		}
		return req, err
	})
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("daps: JWKS %s: %w", meta.JWKSURI, err)
	}
	if resp.status != http.StatusOK {
		return nil, time.Time{}, time.Time{}, &StatusError{URL: meta.JWKSURI, Status: resp.status, Body: snippet(resp.body)}
	}
	set, err := ParseJWKS(resp.body)
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("%w (from %s)", err, meta.JWKSURI)
	}
	for _, s := range set.Skipped {
		d.log.Warn("ignoring a key of the DAPS's JWKS", "jwks_uri", meta.JWKSURI, "err", s)
	}
	if len(set.Keys) == 0 {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("daps: JWKS %s: %w", meta.JWKSURI, errNoKeys)
	}
	ttl := cacheTTL(resp.header, DefaultMetadataTTL)
	now := d.cfg.Now()
	d.log.Debug("fetched the DAPS's JWKS", "jwks_uri", meta.JWKSURI, "keys", len(set.Keys), "ttl", ttl)
	return set, now.Add(ttl), now.Add(ttl + metadataStaleGrace), nil
}
