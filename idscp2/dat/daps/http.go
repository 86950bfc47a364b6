package daps

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// response is a DAPS HTTP response read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// StatusError is a non-200 answer from the DAPS that was not an OAuth error
// document.
type StatusError struct {
	URL    string
	Status int
	Body   string // the start of the body, for diagnostics
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("%s: HTTP %d", e.URL, e.Status)
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.URL, e.Status, e.Body)
}

// permanentError marks an error no retry can fix (e.g. the assertion could
// not be signed).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func newHTTPClient(cfg *Config) *http.Client {
	if cfg.HTTPClient != nil {
		return cfg.HTTPClient
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 4
	return &http.Client{Transport: tr}
}

// retryable says whether an HTTP status is worth another attempt: the
// reference retries on server errors; 429 asks for it explicitly.
func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests
}

// do runs the request built by newReq (called once per attempt, so that
// every attempt can carry a fresh client assertion) and reads the answer.
// I/O errors, timeouts, 429 and 5xx are retried up to cfg.Retries times
// with exponential backoff and jitter, within ctx. note is told about each
// failed attempt. The last response is returned whatever its status;
// an error means no usable response was obtained.
func (d *Driver) do(ctx context.Context, note func(error), newReq func(ctx context.Context) (*http.Request, error)) (*response, error) {
	var lastErr error
	var lastResp *response
	backoff := d.cfg.RetryBackoff
	for attempt := 0; attempt <= d.cfg.Retries; attempt++ {
		if attempt > 0 {
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff *= 2
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				if lastResp != nil {
					return lastResp, nil
				}
				return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), lastErr)
			case <-t.C:
			}
		}
		resp, err := d.once(ctx, newReq)
		switch {
		case err == nil && !retryable(resp.status):
			return resp, nil
		case err == nil:
			lastResp, lastErr = resp, fmt.Errorf("HTTP %d", resp.status)
		default:
			var pe permanentError
			if errors.As(err, &pe) {
				return nil, pe.err
			}
			lastResp, lastErr = nil, err
		}
		if note != nil {
			note(lastErr)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if lastResp != nil {
		return lastResp, nil
	}
	return nil, lastErr
}

// once makes one attempt bounded by RequestTimeout.
func (d *Driver) once(ctx context.Context, newReq func(ctx context.Context) (*http.Request, error)) (*response, error) {
	actx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	req, err := newReq(actx)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if actx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("%s %s: no answer within %v", req.Method, req.URL, d.cfg.RequestTimeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, DefaultMaxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the response: %w", req.Method, req.URL, err)
	}
	if len(body) > DefaultMaxResponseSize {
		return nil, permanentError{fmt.Errorf("%s %s: response larger than %d bytes", req.Method, req.URL, DefaultMaxResponseSize)}
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// cacheTTL derives a cache lifetime from Cache-Control: max-age, clamped to
// [MinCacheTTL, MaxCacheTTL]; no-store, no-cache and max-age=0 give
// MinCacheTTL (the driver cannot do without the document, and must not
// fetch it on every use). Without a max-age it is def.
func cacheTTL(h http.Header, def time.Duration) time.Duration {
	ttl, ok := maxAge(h.Values("Cache-Control"))
	if !ok {
		return def
	}
	return min(max(ttl, MinCacheTTL), MaxCacheTTL)
}

// maxAge parses the max-age (or no-store/no-cache, meaning 0) directive of
// Cache-Control header values.
func maxAge(values []string) (time.Duration, bool) {
	var ttl time.Duration
	found := false
	for _, v := range values {
		for _, dir := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(arg), `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				if n > int64(MaxCacheTTL/time.Second) {
					n = int64(MaxCacheTTL / time.Second)
				}
				ttl, found = time.Duration(n)*time.Second, true
			}
		}
	}
	return ttl, found
}

// snippet shortens a response body for an error message.
func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
