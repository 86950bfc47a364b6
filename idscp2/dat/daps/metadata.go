package daps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// metadataStaleGrace is how long past its cache lifetime a metadata
// document or key set is still used while the DAPS cannot be reached.
const metadataStaleGrace = 24 * time.Hour

// WellKnownPath is the RFC 8414 metadata path.
const WellKnownPath = "/.well-known/oauth-authorization-server"

// Metadata is what the driver needs from the DAPS's RFC 8414 document.
type Metadata struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	JWKSURI       string `json:"jwks_uri"`
	// Fallback is true when the DAPS served no metadata (HTTP 404) and the
	// reference's fallback endpoints are used.
	Fallback bool `json:"-"`
}

// MetadataURL is where the metadata of the DAPS at dapsURL is discovered
// (RFC 8414 §3.1 path insertion): {scheme}://{host}/.well-known/
// oauth-authorization-server{path}, with any trailing "/" of the path
// removed. The port is kept.
func MetadataURL(dapsURL string) (string, error) {
	u, err := url.Parse(dapsURL)
	if err != nil {
		return "", err
	}
	return metadataURL(u), nil
}

func metadataURL(u *url.URL) string {
	return u.Scheme + "://" + u.Host + WellKnownPath + strings.TrimRight(u.EscapedPath(), "/")
}

// fallbackMetadata is idscp2-jvm's DapsMeta.fromDapsUrl, used when the DAPS
// answers the metadata request with 404.
func fallbackMetadata(u *url.URL) *Metadata {
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	return &Metadata{
		Issuer:        u.Scheme + "://" + u.Host,
		TokenEndpoint: base + "/token",
		JWKSURI:       base + "/.well-known/jwks.json",
		Fallback:      true,
	}
}

// ParseMetadata parses an RFC 8414 metadata document; issuer,
// token_endpoint and jwks_uri are required, the endpoints must be absolute
// http(s) URLs, and unknown members are ignored.
func ParseMetadata(body []byte) (*Metadata, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("daps: metadata is not a JSON object: %v", err)
	}
	m := &Metadata{}
	for _, f := range []struct {
		name string
		dst  *string
		url  bool
	}{
		{"issuer", &m.Issuer, false},
		{"token_endpoint", &m.TokenEndpoint, true},
		{"jwks_uri", &m.JWKSURI, true},
	} {
		v, ok := raw[f.name]
		if !ok {
			return nil, fmt.Errorf("daps: metadata lacks %q", f.name)
		}
		if err := json.Unmarshal(v, f.dst); err != nil || *f.dst == "" {
			return nil, fmt.Errorf("daps: metadata %q is not a non-empty string", f.name)
		}
		if f.url {
			u, err := url.Parse(*f.dst)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return nil, fmt.Errorf("daps: metadata %q = %q is not an absolute http(s) URL", f.name, *f.dst)
			}
		}
	}
	return m, nil
}

// fetchMetadata is the metadata cell's fetch.
func (d *Driver) fetchMetadata(ctx context.Context, note func(error)) (*Metadata, time.Time, time.Time, error) {
	target := metadataURL(d.base)
	resp, err := d.do(ctx, note, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err == nil {
			req.Header.Set("Accept", "application/json")
		}
		return req, err
	})
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("daps: metadata %s: %w", target, err)
	}
	var m *Metadata
	var ttl time.Duration
	switch resp.status {
	case http.StatusOK:
		if m, err = ParseMetadata(resp.body); err != nil {
			return nil, time.Time{}, time.Time{}, fmt.Errorf("%w (from %s)", err, target)
		}
		ttl = cacheTTL(resp.header, DefaultMetadataTTL)
	case http.StatusNotFound:
		m, ttl = fallbackMetadata(d.base), FallbackMetadataTTL
		d.log.Warn("DAPS serves no RFC 8414 metadata; using the reference's fallback endpoints",
			"url", target, "issuer", m.Issuer, "token_endpoint", m.TokenEndpoint, "jwks_uri", m.JWKSURI)
	default:
		return nil, time.Time{}, time.Time{}, &StatusError{URL: target, Status: resp.status, Body: snippet(resp.body)}
	}
	if old, ok := d.meta.peek(); ok && old.JWKSURI != m.JWKSURI {
		d.jwks.invalidate() // keys of another location
	}
	now := d.cfg.Now()
	return m, now.Add(ttl), now.Add(ttl + metadataStaleGrace), nil
}

// Metadata returns the DAPS metadata, discovering it if needed.
func (d *Driver) Metadata(ctx context.Context) (*Metadata, error) {
	m, err := d.meta.get(ctx)
	if err != nil {
		return nil, err
	}
	c := *m
	return &c, nil
}

// errNoKeys is returned when a JWKS holds no usable key.
var errNoKeys = errors.New("no usable keys")
