package daps

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
)

// TestTokenCache: many Token calls, sequential and concurrent, cost one
// metadata and one token request.
func TestTokenCache(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	var outcomes []string
	var mu sync.Mutex
	drv := d.driverFor(t, pki.Client, func(c *Config) {
		c.OnTokenFetch = func(o string) { mu.Lock(); outcomes = append(outcomes, o); mu.Unlock() }
	})
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	toks := make([][]byte, 50)
	for i := range toks {
		wg.Go(func() {
			tok, err := drv.Token(ctx)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	for range 200 {
		tok, err := drv.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tok, toks[0]) {
			t.Fatal("a different token from the cache")
		}
	}
	for i, tok := range toks {
		if !bytes.Equal(tok, toks[0]) {
			t.Fatalf("concurrent caller %d got another token", i)
		}
	}
	if n := d.token.Load(); n != 1 {
		t.Errorf("%d token requests for 250 Token calls, want 1", n)
	}
	if n := d.meta.Load(); n != 1 {
		t.Errorf("%d metadata requests, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outcomes) != 1 || outcomes[0] != FetchOK {
		t.Errorf("OnTokenFetch outcomes %v, want [ok]", outcomes)
	}
	// Token returns a copy.
	a, _ := drv.Token(ctx)
	a[0] ^= 0xff
	if b, _ := drv.Token(ctx); bytes.Equal(a, b) {
		t.Error("Token returned the cached slice itself")
	}
}

// TestRenewalInBackground: once the renewal threshold has passed, Token
// keeps returning the cached token at once while a single renewal runs in
// the background against a DAPS that is made to hang; the fresh token is
// served once the renewal is done.
func TestRenewalInBackground(t *testing.T) {
	clk := newClock()
	d := startDAPS(t, dapsOpts{lifetime: 20 * time.Second, now: clk.Now})
	drv := d.driverFor(t, pki.Client, func(c *Config) { c.Now = clk.Now; c.Threshold = 0.5 })
	ctx := ctxTimeout(t, 10*time.Second)
	first, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Before the threshold: cached, no request.
	clk.Advance(9 * time.Second)
	if tok, _ := drv.Token(ctx); !bytes.Equal(tok, first) || d.token.Load() != 1 {
		t.Fatalf("renewed before the threshold (%d requests)", d.token.Load())
	}

	// Past the threshold (10 s) with the DAPS hanging.
	d.setMode(modeSlow)
	clk.Advance(3 * time.Second)
	got := make(chan []byte, 1)
	go func() {
		tok, err := drv.Token(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	select {
	case <-d.entered: // the background renewal reached the DAPS and hangs there
	case <-ctx.Done():
		t.Fatal("no renewal request reached the DAPS")
	}
	select {
	case tok := <-got:
		if !bytes.Equal(tok, first) {
			t.Fatal("Token did not return the cached token during the renewal")
		}
	case <-ctx.Done():
		t.Fatal("Token blocked on the renewal although the cached token is valid")
	}
	// More callers while the renewal hangs: all served from the cache, no
	// second renewal.
	for range 20 {
		tok, err := drv.Token(ctx)
		if err != nil || !bytes.Equal(tok, first) {
			t.Fatalf("Token during the renewal: %v", err)
		}
	}
	if n := d.token.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2 (one renewal in flight)", n)
	}
	d.setMode(modeOK) // the hanging request completes
	waitIdle(t, drv.token)
	renewed, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(renewed, first) {
		t.Fatal("the renewed token is not served")
	}
	if n := d.token.Load(); n != 2 {
		t.Errorf("%d token requests after the renewal, want 2", n)
	}
}

// TestCachedTokenDuringOutage: while the DAPS fails, the cached token is
// served until shortly before its exp, renewals back off, and Token
// recovers by itself when the DAPS is back.
func TestCachedTokenDuringOutage(t *testing.T) {
	clk := newClock()
	d := startDAPS(t, dapsOpts{lifetime: 20 * time.Second, now: clk.Now})
	var mu sync.Mutex
	var outcomes []string
	drv := d.driverFor(t, pki.Client, func(c *Config) {
		c.Now = clk.Now
		c.Threshold = 0.5
		c.RetryBackoff = time.Millisecond
		c.OnTokenFetch = func(o string) { mu.Lock(); outcomes = append(outcomes, o); mu.Unlock() }
	})
	ctx := ctxTimeout(t, 10*time.Second)
	first, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.setMode(mode500)
	clk.Advance(11 * time.Second) // renewal due
	for range 5 {
		tok, err := drv.Token(ctx)
		if err != nil || !bytes.Equal(tok, first) {
			t.Fatalf("cached token not served during the outage: %v", err)
		}
		waitIdle(t, drv.token)
	}
	// One failed renewal (4 attempts); the others were held back by the
	// failure backoff (the clock did not move).
	if n := d.token.Load(); n != 1+4 {
		t.Errorf("%d token requests, want 5 (1 + one renewal with 3 retries)", n)
	}
	// Still within the validity (exp − 2 s): served.
	clk.Advance(6 * time.Second)
	if tok, err := drv.Token(ctx); err != nil || !bytes.Equal(tok, first) {
		t.Fatalf("cached token at +17 s: %v", err)
	}
	waitIdle(t, drv.token)
	// Past exp − margin: nothing to serve; Token fails within its deadline.
	clk.Advance(2500 * time.Millisecond)
	short, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := drv.Token(short); err == nil {
		t.Fatal("Token served a token at its exp")
	} else if !strings.Contains(err.Error(), "500") {
		t.Errorf("error %q does not name the DAPS failure", err)
	}
	// The DAPS is back: the next call succeeds by itself.
	d.setMode(modeOK)
	tok, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(tok, first) {
		t.Fatal("stale token after recovery")
	}
	mu.Lock()
	defer mu.Unlock()
	if outcomes[0] != FetchOK || outcomes[len(outcomes)-1] != FetchOK || !contains(outcomes, FetchHTTP) {
		t.Errorf("outcomes %v", outcomes)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// TestDAPSUnreachable: nothing listens; Token fails within its deadline
// with the connection error, and succeeds once the DAPS is up.
func TestDAPSUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	drv, err := New(Config{URL: "http://" + addr, Certificate: pki.Client.Cert, Key: pki.Client.Key, Logger: quiet(),
		RetryBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = drv.Token(ctx)
	if err == nil {
		t.Fatal("Token without a DAPS succeeded")
	}
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Errorf("Token took %v with a 2 s deadline", el)
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q does not say the connection was refused", err)
	}
	t.Logf("unreachable: %v", err)
	// Verify fails as unavailable, not as a bad token.
	_, verr := drv.Verify(ctx, []byte("a.b.c"), pki.Server.Cert)
	if r := dat.ReasonOf(verr); r != dat.ReasonUnavailable && r != dat.ReasonMalformed {
		t.Errorf("Verify reason %q", r)
	}

	// The DAPS comes up on that address.
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	d := startDAPS(t, dapsOpts{listener: l2})
	if d.url != "http://"+addr {
		t.Fatal(d.url)
	}
	waitIdle(t, drv.token)
	waitIdle(t, drv.meta)
	tok, err := drv.Token(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("after the DAPS came up: %v", err)
	}
	if _, err := drv.Verify(ctxTimeout(t, 10*time.Second), tok, pki.Client.Cert); err != nil {
		t.Fatal(err)
	}
}

// TestDAPSSlow: a DAPS that never answers makes Token fail at the caller's
// deadline naming the per-request timeout; it recovers by itself.
func TestDAPSSlow(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	d.setMode(modeSlow)
	drv := d.driverFor(t, pki.Client, func(c *Config) {
		c.RequestTimeout = 100 * time.Millisecond
		c.RetryBackoff = 10 * time.Millisecond
	})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, err := drv.Token(ctx)
	if err == nil {
		t.Fatal("Token succeeded against a hanging DAPS")
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("Token took %v with a 700 ms deadline", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "no answer within") {
		t.Errorf("error %q", err)
	}
	t.Logf("slow: %v", err)

	// With the default 1.5 s per request, a caller with a shorter deadline
	// gives up first; the shared fetch goes on.
	patient := d.driverFor(t, pki.Client, nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = patient.Token(ctx2)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the caller's deadline", err)
	}
	t.Logf("slow, caller deadline first: %v", err)
	d.setMode(modeOK)
	if _, err := patient.Token(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("after the DAPS recovered: %v", err)
	}
	if _, err := drv.Token(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("after the DAPS recovered: %v", err)
	}
}

// TestDAPSErrors: 500s are retried (3 times) and reported; OAuth errors are
// not retried and are reported with their code.
func TestDAPSErrors(t *testing.T) {
	d := startDAPS(t, dapsOpts{})
	d.setMode(mode500)
	drv := d.driverFor(t, pki.Client, func(c *Config) { c.RetryBackoff = time.Millisecond })
	ctx := ctxTimeout(t, 10*time.Second)
	_, err := drv.Token(ctx)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusInternalServerError {
		t.Fatalf("error %v, want a StatusError 500", err)
	}
	if n := d.meta.Load(); n != 4 {
		t.Errorf("%d metadata attempts, want 4 (1 + 3 retries)", n)
	}
	d.setMode(modeOK)
	if _, err := drv.Token(ctx); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	// An unregistered connector gets invalid_client, without retries.
	before := d.token.Load()
	stranger := d.driverFor(t, pki.WrongSAN, nil)
	_, err = stranger.Token(ctx)
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || oe.Status != http.StatusBadRequest {
		t.Fatalf("error %v, want OAuthError invalid_client", err)
	}
	if n := d.token.Load() - before; n != 1 {
		t.Errorf("%d token requests for a refused client, want 1", n)
	}
	t.Logf("refused: %v", err)
}

// TestMetadataCaching: metadata and JWKS are fetched once and refetched
// after their Cache-Control max-age; the 404 fallback works.
func TestMetadataCaching(t *testing.T) {
	clk := newClock()
	d := startDAPS(t, dapsOpts{now: clk.Now, path: "/auth", modify: func(c *dapsserver.Config) { c.CacheMaxAge = time.Minute }})
	drv := d.driverFor(t, pki.Server, func(c *Config) { c.Now = clk.Now })
	ctx := ctxTimeout(t, 10*time.Second)
	tok, err := d.srv.Issue(dat.ConnectorID(pki.Client.Cert), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := drv.Verify(ctx, tok, pki.Client.Cert); err != nil {
			t.Fatal(err)
		}
	}
	if m, j := d.meta.Load(), d.jwks.Load(); m != 1 || j != 1 {
		t.Fatalf("%d metadata and %d JWKS requests, want 1 each", m, j)
	}
	clk.Advance(61 * time.Second) // past max-age: refreshed in the background
	if _, err := drv.Verify(ctx, tok, pki.Client.Cert); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, drv.meta)
	waitIdle(t, drv.jwks)
	if m, j := d.meta.Load(), d.jwks.Load(); m != 2 || j != 2 {
		t.Fatalf("%d metadata and %d JWKS requests after max-age, want 2 each", m, j)
	}
	m, err := drv.Metadata(ctx)
	if err != nil || m.Issuer != d.url || m.TokenEndpoint != d.url+"/token" || m.JWKSURI != d.url+"/jwks.json" || m.Fallback {
		t.Fatalf("metadata %+v, %v", m, err)
	}
}

// TestMetadataFallback: a DAPS without metadata (404) is used through the
// reference's fallback endpoints.
func TestMetadataFallback(t *testing.T) {
	fb := startDAPS(t, dapsOpts{noMetadata: true})
	drv := fb.driverFor(t, pki.Client, nil)
	ver := fb.driverFor(t, pki.Server, nil)
	ctx := ctxTimeout(t, 10*time.Second)
	m, err := drv.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Fallback || m.Issuer != fb.url || m.TokenEndpoint != fb.url+"/token" || m.JWKSURI != fb.url+"/.well-known/jwks.json" {
		t.Fatalf("fallback metadata %+v", m)
	}
	tok, err := drv.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ver.Verify(ctx, tok, pki.Client.Cert); err != nil {
		t.Fatal(err)
	}
}

func TestMetadataURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://daps.aisec.fraunhofer.de/v3":    "https://daps.aisec.fraunhofer.de/.well-known/oauth-authorization-server/v3",
		"https://daps.example.org/auth/":         "https://daps.example.org/.well-known/oauth-authorization-server/auth",
		"https://daps.example.org":               "https://daps.example.org/.well-known/oauth-authorization-server",
		"http://127.0.0.1:4567/a/b":              "http://127.0.0.1:4567/.well-known/oauth-authorization-server/a/b",
		"https://daps.example.org:8443/auth%20x": "https://daps.example.org:8443/.well-known/oauth-authorization-server/auth%20x",
	} {
		got, err := MetadataURL(in)
		if err != nil || got != want {
			t.Errorf("MetadataURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	h := func(v ...string) http.Header { return http.Header{"Cache-Control": v} }
	for _, c := range []struct {
		h    http.Header
		want time.Duration
	}{
		{h(), time.Hour},
		{h("public, max-age=86400, must-revalidate"), 24 * time.Hour},
		{h("max-age=600"), 10 * time.Minute},
		{h("max-age=1"), MinCacheTTL},
		{h("no-store"), MinCacheTTL},
		{h("max-age=999999999"), MaxCacheTTL},
		{h("max-age=abc"), time.Hour},
		{h(`max-age="120"`), 2 * time.Minute},
		{h("private", "max-age=300"), 5 * time.Minute},
	} {
		if got := cacheTTL(c.h, time.Hour); got != c.want {
			t.Errorf("cacheTTL(%v) = %v, want %v", c.h, got, c.want)
		}
	}
}
