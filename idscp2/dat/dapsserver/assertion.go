package dapsserver

import (
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// assertionAlgs are the client assertion algorithms accepted (asymmetric
// only; Omejdn accepts RS256, RS512, ES256 and ES512).
var assertionAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// maxAssertionSize caps the client_assertion parameter.
const maxAssertionSize = 16 << 10

// authenticate identifies the client from the unverified sub of its
// assertion (as Omejdn does) and verifies the assertion with the
// registered certificate's key.
func (s *Server) authenticate(form url.Values) (*Client, error) {
	if form.Get("client_assertion_type") != ClientAssertionType {
		return nil, errInvalidClient("Client unknown (only private_key_jwt client authentication with client_assertion_type %s is supported)", ClientAssertionType)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" {
		return nil, errInvalidClient("Client unknown (no client_assertion)")
	}
	if len(assertion) > maxAssertionSize {
		return nil, errInvalidClient("Client authentication failed: client_assertion larger than %d bytes", maxAssertionSize)
	}
	unverified := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, unverified); err != nil {
		return nil, errInvalidClient("Client authentication failed: malformed client_assertion: %v", err)
	}
	sub, _ := unverified["sub"].(string)
	c := s.client(sub)
	if c == nil {
		return nil, errInvalidClient("Client unknown")
	}
	claims, err := s.verifyAssertion(c, assertion)
	if err != nil {
		return c, errInvalidClient("Client authentication failed: %v", err)
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		if s.cfg.RequireJTI {
			return c, errInvalidClient("Client authentication failed: the client assertion has no jti")
		}
		return c, nil
	}
	exp, _ := claims.GetExpirationTime() // required and checked
	switch s.replay.use(c.ID, jti, exp.Add(s.cfg.Leeway), s.cfg.Now()) {
	case replayed:
		return c, errInvalidClient("Client authentication failed: client assertion replayed (jti %q already used)", jti)
	case cacheFull:
		return c, &oauthError{429, "slow_down", "too many unexpired client assertions for this client; use shorter assertion lifetimes"}
	}
	return c, nil
}

// verifyAssertion checks signature, iss = sub = client id, aud, exp
// (required), nbf and iat with the leeway, and the maximum lifetime.
func (s *Server) verifyAssertion(c *Client, assertion string) (jwt.MapClaims, error) {
	p := jwt.NewParser(
		jwt.WithValidMethods(assertionAlgs),
		jwt.WithLeeway(s.cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(c.ID),
		jwt.WithSubject(c.ID),
		jwt.WithTimeFunc(s.cfg.Now),
		jwt.WithStrictDecoding(),
	)
	claims := jwt.MapClaims{}
	_, err := p.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("critical header parameters are not supported")
		}
		return c.Certificate.PublicKey, nil
	})
	if err != nil {
		return nil, err
	}
	aud, err := claims.GetAudience()
	if err != nil {
		return nil, err
	}
	ok := false
	for _, a := range aud {
		ok = ok || s.accepted[a]
	}
	if !ok {
		return nil, errors.New("aud names no accepted audience (token endpoint, issuer or idsc:IDS_CONNECTORS_ALL)")
	}
	exp, _ := claims.GetExpirationTime()
	start := s.cfg.Now()
	if iat, _ := claims.GetIssuedAt(); iat != nil {
		start = iat.Time
	}
	if exp.Sub(start) > s.cfg.MaxAssertionLifetime+s.cfg.Leeway {
		return nil, errors.New("the client assertion lives longer than " + s.cfg.MaxAssertionLifetime.String())
	}
	return claims, nil
}

// replayCache remembers used jti values per client until the assertion
// expires.
type replayCache struct {
	mu        sync.Mutex
	perClient int
	seen      map[string]map[string]time.Time // client → jti → forget after
}

type replayVerdict int

const (
	fresh replayVerdict = iota
	replayed
	cacheFull
)

func (rc *replayCache) use(client, jti string, until, now time.Time) replayVerdict {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	m := rc.seen[client]
	if m == nil {
		m = map[string]time.Time{}
		rc.seen[client] = m
	}
	if t, ok := m[jti]; ok && t.After(now) {
		return replayed
	}
	if len(m) >= rc.perClient {
		for k, t := range m {
			if !t.After(now) {
				delete(m, k)
			}
		}
		if len(m) >= rc.perClient {
			return cacheFull
		}
	}
	m[jti] = until
	return fresh
}

func (rc *replayCache) forget(client string) {
	rc.mu.Lock()
	delete(rc.seen, client)
	rc.mu.Unlock()
}
