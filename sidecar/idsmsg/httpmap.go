package idsmsg

import (
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Extra-header names for the HTTP request line and status: the names of
// Apache Camel's HTTP components (Exchange.HTTP_METHOD etc.), so that a
// Trusted Connector route using camel-idscp2 with copyHeadersRegex can
// consume and produce them.
const (
	HdrMethod = "CamelHttpMethod"       // request method, "GET"
	HdrPath   = "CamelHttpPath"         // request path, percent-encoded as on the request line, "/a/b%20c"
	HdrQuery  = "CamelHttpQuery"        // raw query without "?", "x=1&y=2"; left out when empty
	HdrStatus = "CamelHttpResponseCode" // response status, "200"
)

// PlainRequestType and PlainResponseType are the IDS message types the
// sidecar uses for plain (non-IDS) HTTP requests and their answers.
const (
	PlainRequestType  = "ids:RequestMessage"
	PlainResponseType = "ids:ResponseMessage"
	RejectionType     = "ids:RejectionMessage"
)

// The end-to-end headers that travel in extraHeaders, in this order.
// Everything else is dropped: credentials (Authorization, Cookie,
// Set-Cookie, Proxy-Authorization), hop-by-hop headers, Host,
// Content-Length and Accept-Encoding (framing and compression are each
// hop's own business), forwarding headers, and the identity headers the
// ingress sets itself.
var (
	requestAllow = []string{
		"Content-Type", "Content-Language", "Accept", "Accept-Language",
		"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
		"Range", "Cache-Control", "User-Agent", "X-Request-Id", "Traceparent", "Tracestate",
	}
	responseAllow = []string{
		"Content-Type", "Content-Language", "Cache-Control", "Etag", "Last-Modified",
		"Location", "Content-Range", "Accept-Ranges", "Vary", "Retry-After", "X-Request-Id",
	}
)

// AllowedRequestHeaders returns the request headers RequestHeaders and
// ApplyRequestHeaders carry (canonical names).
func AllowedRequestHeaders() []string { return slices.Clone(requestAllow) }

// AllowedResponseHeaders returns the response headers ResponseHeaders and
// ApplyResponseHeaders carry (canonical names).
func AllowedResponseHeaders() []string { return slices.Clone(responseAllow) }

// RequestHeaders returns the extraHeaders for an HTTP request: method,
// path and query (HdrMethod, HdrPath, HdrQuery) and the allow-listed
// end-to-end headers, one entry per header with several values joined by
// ", " (Camel keeps one value per header name). Headers named in the
// request's Connection header are hop-by-hop and left out even when
// allow-listed.
func RequestHeaders(r *http.Request) []Header {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	out := []Header{{HdrMethod, method}, {HdrPath, requestPath(r.URL)}}
	if r.URL != nil && r.URL.RawQuery != "" {
		out = append(out, Header{HdrQuery, r.URL.RawQuery})
	}
	return appendAllowed(out, r.Header, requestAllow)
}

func requestPath(u *url.URL) string {
	if u == nil {
		return "/"
	}
	if u.Opaque != "" {
		return u.Opaque
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return p
}

// ResponseHeaders returns the extraHeaders for an HTTP response: the
// status (HdrStatus) and the allow-listed response headers.
func ResponseHeaders(resp *http.Response) []Header {
	out := []Header{{HdrStatus, strconv.Itoa(resp.StatusCode)}}
	return appendAllowed(out, resp.Header, responseAllow)
}

func appendAllowed(out []Header, h http.Header, allow []string) []Header {
	hop := connectionTokens(h)
	for _, name := range allow {
		vs := h.Values(name)
		if len(vs) == 0 || hop[name] {
			continue
		}
		out = append(out, Header{name, strings.Join(vs, ", ")})
	}
	return out
}

// connectionTokens returns the header names listed in Connection.
func connectionTokens(h http.Header) map[string]bool {
	var m map[string]bool
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				if m == nil {
					m = map[string]bool{}
				}
				m[textproto.CanonicalMIMEHeaderKey(f)] = true
			}
		}
	}
	return m
}

// ApplyRequestHeaders sets r's method, URL path and raw query, and adds
// the allow-listed headers, from extraHeaders. Other entries are ignored,
// which is how credentials, hop-by-hop headers and identity headers a peer
// may send (X-IDS-Peer-*) are stripped; r's existing headers are left as
// they are. r.URL's scheme and host are not touched.
//
// Path and query are read as Camel's HTTP producer reads them: already
// percent-encoded, except that characters a URI cannot hold (space,
// non-ASCII, "<>\"{}|\\^`") are percent-encoded rather than refused, so a
// path copied from a decoded servlet path works.
//
// It fails with a *ParseError naming the entry when the method is missing
// or not a token (or is CONNECT), when the path is missing, not absolute,
// not validly percent-encoded, starts with "//", contains "?", "#" or
// control characters (also percent-encoded ones), or has a ".." segment
// (after percent-decoding, with "/" or "\" as separators), when the query
// contains control characters or "#", when a Camel entry is given twice,
// or when an allowed header has an invalid value. On error r is left
// unchanged.
func ApplyRequestHeaders(extra []Header, r *http.Request) error {
	var method, path, query string
	var haveMethod, havePath, haveQuery bool
	set := func(name string, dst *string, have *bool, v string) error {
		if *have {
			return perr(name, "given more than once")
		}
		*dst, *have = v, true
		return nil
	}
	var err error
	for _, h := range extra {
		switch {
		case equalFold(h.Name, HdrMethod):
			err = set(HdrMethod, &method, &haveMethod, h.Value)
		case equalFold(h.Name, HdrPath):
			err = set(HdrPath, &path, &havePath, h.Value)
		case equalFold(h.Name, HdrQuery):
			err = set(HdrQuery, &query, &haveQuery, h.Value)
		}
		if err != nil {
			return err
		}
	}
	if !haveMethod || method == "" {
		return perr(HdrMethod, "missing")
	}
	if !isToken([]byte(method)) || len(method) > 32 {
		return perr(HdrMethod, "%q is not a valid method", method)
	}
	if strings.EqualFold(method, http.MethodConnect) {
		return perr(HdrMethod, "CONNECT is not forwarded")
	}
	if !havePath {
		return perr(HdrPath, "missing")
	}
	path, ok := encodeUnsafe(path, "?#")
	if !ok {
		return perr(HdrPath, "%q contains characters not allowed in a path", path)
	}
	decoded, err := checkPath(path)
	if err != nil {
		return err
	}
	if query, ok = encodeUnsafe(query, "#"); !ok {
		return perr(HdrQuery, "%q contains characters not allowed in a query", query)
	}
	hdr, err := allowedHeaders(extra, requestAllow)
	if err != nil {
		return err
	}
	r.Method = method
	if r.URL == nil {
		r.URL = &url.URL{}
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = decoded, path, query
	if r.URL.EscapedPath() != path { // RawPath only when it is a valid encoding of Path
		r.URL.RawPath = ""
	}
	if r.Header == nil {
		r.Header = http.Header{}
	}
	for k, vs := range hdr {
		r.Header[k] = append(r.Header[k], vs...)
	}
	return nil
}

func checkPath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", perr(HdrPath, "%q is not an absolute path", p)
	}
	if strings.HasPrefix(p, "//") {
		return "", perr(HdrPath, "%q starts with \"//\"", p)
	}
	d, err := url.PathUnescape(p)
	if err != nil {
		return "", perr(HdrPath, "%q: %v", p, err)
	}
	for i := 0; i < len(d); i++ {
		if d[i] < ' ' || d[i] == 0x7f {
			return "", perr(HdrPath, "%q contains control characters", p)
		}
	}
	for _, seg := range strings.FieldsFunc(d, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return "", perr(HdrPath, "%q has a \"..\" segment", p)
		}
	}
	return d, nil
}

// encodeUnsafe percent-encodes the characters a URI cannot hold (space,
// non-ASCII and "<>\"{}|\\^`"), as Camel's UnsafeUriCharactersEncoder does,
// leaving existing escapes alone. It reports false for control characters
// and for any byte in refuse.
func encodeUnsafe(s, refuse string) (string, bool) {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	encoded := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < ' ' || c == 0x7f || strings.IndexByte(refuse, c) >= 0:
			return s, false
		case c == ' ' || c >= 0x80 || strings.IndexByte("<>\"{}|\\^`", c) >= 0:
			if !encoded {
				encoded = true
				b.Grow(len(s) + 8)
				b.WriteString(s[:i])
			}
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		case encoded:
			b.WriteByte(c)
		}
	}
	if !encoded {
		return s, true
	}
	return b.String(), true
}

// ApplyResponseHeaders adds the allow-listed response headers from
// extraHeaders to h and returns the status. A missing HdrStatus means 200
// (what a Camel route that sets no response code answers); a status that
// is not a number in 200..599 is a *ParseError, as is an allowed header
// with an invalid value.
func ApplyResponseHeaders(extra []Header, h http.Header) (status int, err error) {
	status = http.StatusOK
	seen := false
	for _, e := range extra {
		if !equalFold(e.Name, HdrStatus) {
			continue
		}
		if seen {
			return 0, perr(HdrStatus, "given more than once")
		}
		seen = true
		n, err := strconv.Atoi(strings.TrimSpace(e.Value))
		if err != nil || n < 200 || n > 599 {
			return 0, perr(HdrStatus, "%q is not a final HTTP status", e.Value)
		}
		status = n
	}
	hdr, err := allowedHeaders(extra, responseAllow)
	if err != nil {
		return 0, err
	}
	for k, vs := range hdr {
		h[k] = append(h[k], vs...)
	}
	return status, nil
}

func allowedHeaders(extra []Header, allow []string) (http.Header, error) {
	out := http.Header{}
	for _, e := range extra {
		name := textproto.CanonicalMIMEHeaderKey(e.Name)
		if !slices.Contains(allow, name) {
			continue
		}
		if !validHeaderValue(e.Value) {
			return nil, perr(name, "invalid header value")
		}
		out[name] = append(out[name], e.Value)
	}
	return out, nil
}

// validHeaderValue is RFC 9110 field-value: visible characters, obs-text,
// spaces and tabs; no CR, LF or NUL.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
