package idsmsg

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestRequestMappingRoundTrip(t *testing.T) {
	cases := []struct {
		name, method, target string
		hdr                  http.Header
		wantPath, wantRaw    string
	}{
		{"GET with query", "GET", "/api/v1/items?id=7&q=a%20b", http.Header{"Accept": {"application/json"}}, "/api/v1/items", ""},
		{"POST binary", "POST", "/upload", http.Header{"Content-Type": {"application/octet-stream"}}, "/upload", ""},
		{"PUT encoded path", "PUT", "/files/a%20b/c%2Fd.txt", http.Header{"If-Match": {`"v1"`}}, "/files/a b/c/d.txt", "/files/a%20b/c%2Fd.txt"},
		{"DELETE root", "DELETE", "/", nil, "/", ""},
		{"PATCH trailing slash kept", "PATCH", "/dir/", nil, "/dir/", ""},
		{"custom method", "PROPFIND", "/dav", nil, "/dav", ""},
		{"non-ASCII path", "GET", "/caf%C3%A9", nil, "/café", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := httptest.NewRequest(c.method, "http://sidecar.local"+c.target, nil)
			for k, vs := range c.hdr {
				in.Header[k] = vs
			}
			in.Header.Set("User-Agent", "curl/8.5.0")
			in.Header.Add("Accept-Language", "de")
			in.Header.Add("Accept-Language", "en;q=0.5")
			in.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			extra := RequestHeaders(in)
			if extra[0] != (Header{HdrMethod, c.method}) || extra[1].Name != HdrPath {
				t.Fatalf("extra starts with %v", extra[:2])
			}
			app, err := EncodeApp(&AppMessage{IDS: true, Header: "{}", Extra: extra})
			if err != nil {
				t.Fatal(err)
			}
			dec, err := DecodeApp(app)
			if err != nil {
				t.Fatal(err)
			}

			out, _ := http.NewRequest("GET", "http://127.0.0.1:8080", nil)
			if err := ApplyRequestHeaders(dec.Extra, out); err != nil {
				t.Fatal(err)
			}
			if out.Method != c.method || out.URL.Path != c.wantPath || out.URL.RawQuery != in.URL.RawQuery {
				t.Errorf("got %s %q ? %q", out.Method, out.URL.Path, out.URL.RawQuery)
			}
			if out.URL.EscapedPath() != in.URL.EscapedPath() || out.URL.RequestURI() != in.URL.RequestURI() {
				t.Errorf("request URI %q, want %q", out.URL.RequestURI(), in.URL.RequestURI())
			}
			if c.wantRaw != "" && out.URL.RawPath != c.wantRaw {
				t.Errorf("RawPath = %q", out.URL.RawPath)
			}
			if out.URL.Host != "127.0.0.1:8080" {
				t.Errorf("host changed to %q", out.URL.Host)
			}
			for k, vs := range c.hdr {
				if !slices.Equal(out.Header[k], vs) {
					t.Errorf("%s = %q, want %q", k, out.Header[k], vs)
				}
			}
			if got := out.Header.Get("Accept-Language"); got != "de, en;q=0.5" {
				t.Errorf("Accept-Language = %q (values are joined)", got)
			}
			if out.Header.Get("User-Agent") != "curl/8.5.0" || out.Header.Get("Traceparent") == "" {
				t.Errorf("headers %v", out.Header)
			}
		})
	}
}

// Credentials, hop-by-hop headers, forwarding and identity headers never
// travel, in either direction.
func TestNeverForwarded(t *testing.T) {
	never := http.Header{
		"Authorization":        {"Bearer secret"},
		"Proxy-Authorization":  {"Basic c2VjcmV0"},
		"Cookie":               {"session=secret"},
		"Connection":           {"keep-alive, X-Request-Id"},
		"Keep-Alive":           {"timeout=5"},
		"Proxy-Connection":     {"keep-alive"},
		"Te":                   {"trailers"},
		"Trailer":              {"X-Checksum"},
		"Transfer-Encoding":    {"chunked"},
		"Upgrade":              {"websocket"},
		"Host":                 {"internal.example"},
		"Content-Length":       {"5"},
		"Accept-Encoding":      {"gzip"},
		"X-Forwarded-For":      {"10.0.0.1"},
		"Forwarded":            {"for=10.0.0.1"},
		"X-Request-Id":         {"listed in Connection, so hop-by-hop"},
		"X-Ids-Peer-Subject":   {"spoofed"},
		"X-Ids-Peer-Connector": {"spoofed"},
		"Set-Cookie":           {"a=b"},
		"Www-Authenticate":     {"Basic"},
	}
	r := httptest.NewRequest("GET", "/x", nil)
	for k, vs := range never {
		r.Header[k] = vs
	}
	r.Header.Set("Accept", "text/plain")
	extra := RequestHeaders(r)
	want := []Header{{HdrMethod, "GET"}, {HdrPath, "/x"}, {"Accept", "text/plain"}}
	if !slices.Equal(extra, want) {
		t.Errorf("RequestHeaders = %v, want %v", extra, want)
	}

	resp := &http.Response{StatusCode: 201, Header: never.Clone()}
	resp.Header.Set("Etag", `"x"`)
	if got := ResponseHeaders(resp); !slices.Equal(got, []Header{{HdrStatus, "201"}, {"Etag", `"x"`}}) {
		t.Errorf("ResponseHeaders = %v", got)
	}

	// A peer sending them: ignored on apply.
	var peer []Header
	for k, vs := range never {
		if k != "X-Request-Id" { // allowed end to end; only the local Connection header made it hop-by-hop
			peer = append(peer, Header{k, vs[0]})
		}
	}
	peer = append(peer, Header{HdrMethod, "GET"}, Header{HdrPath, "/"}, Header{"X-IDS-Peer-Security-Profile", "idsc:TRUST_SECURITY_PROFILE"}, Header{"x-ids-peer-suite", "TPM2d"})
	out, _ := http.NewRequest("GET", "http://backend/", nil)
	if err := ApplyRequestHeaders(peer, out); err != nil {
		t.Fatal(err)
	}
	if len(out.Header) != 0 {
		t.Errorf("ApplyRequestHeaders set %v", out.Header)
	}
	h := http.Header{}
	if _, err := ApplyResponseHeaders(peer, h); err != nil || len(h) != 0 {
		t.Errorf("ApplyResponseHeaders set %v (%v)", h, err)
	}
}

func TestApplyRequestHeadersRefuses(t *testing.T) {
	base := func(method, path string) []Header {
		return []Header{{HdrMethod, method}, {HdrPath, path}}
	}
	cases := []struct {
		name  string
		extra []Header
		field string
	}{
		{"no method", []Header{{HdrPath, "/"}}, HdrMethod},
		{"empty method", base("", "/"), HdrMethod},
		{"method with space", base("GET /x", "/"), HdrMethod},
		{"method with CRLF", base("GET\r\n", "/"), HdrMethod},
		{"CONNECT", base("CONNECT", "/"), HdrMethod},
		{"method twice", append(base("GET", "/"), Header{"camelhttpmethod", "DELETE"}), HdrMethod},
		{"no path", []Header{{HdrMethod, "GET"}}, HdrPath},
		{"relative path", base("GET", "etc/passwd"), HdrPath},
		{"empty path", base("GET", ""), HdrPath},
		{"dot-dot", base("GET", "/static/../../etc/passwd"), HdrPath},
		{"dot-dot at the end", base("GET", "/a/.."), HdrPath},
		{"encoded dot-dot", base("GET", "/static/%2e%2e/secret"), HdrPath},
		{"encoded slash dot-dot", base("GET", "/static%2F..%2Fsecret"), HdrPath},
		{"backslash dot-dot", base("GET", "/static/..\\secret"), HdrPath},
		{"encoded backslash dot-dot", base("GET", "/static/%5c..%5csecret"), HdrPath},
		{"scheme-relative", base("GET", "//evil.example/x"), HdrPath},
		{"absolute URL", base("GET", "http://evil.example/x"), HdrPath},
		{"encoded CRLF", base("GET", "/a%0d%0aX-Evil:%201"), HdrPath},
		{"encoded NUL", base("GET", "/a%00b"), HdrPath},
		{"query in path", base("GET", "/a?b=c"), HdrPath},
		{"bad escape", base("GET", "/a%zz"), HdrPath},
		{"path twice", append(base("GET", "/"), Header{HdrPath, "/admin"}), HdrPath},
		{"query with fragment", append(base("GET", "/"), Header{HdrQuery, "a=b#c"}), HdrQuery},
		{"query with CRLF", append(base("GET", "/"), Header{HdrQuery, "a\r\nb"}), HdrQuery},
		{"header value with CRLF", append(base("GET", "/"), Header{"Accept", "a\r\nX-Evil: 1"}), "Accept"},
		{"header value with NUL", append(base("GET", "/"), Header{"content-type", "a\x00"}), "Content-Type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://backend/", nil)
			err := ApplyRequestHeaders(c.extra, r)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != c.field {
				t.Fatalf("err = %v, want a *ParseError on %s", err, c.field)
			}
			if r.Method != "GET" || r.URL.Path != "/" || len(r.Header) != 0 {
				t.Errorf("request modified despite the error: %s %s %v", r.Method, r.URL, r.Header)
			}
		})
	}
	// Dots that are not a ".." segment are fine.
	r, _ := http.NewRequest("GET", "http://backend/", nil)
	if err := ApplyRequestHeaders(base("GET", "/a/..b/c../.well-known/x..y"), r); err != nil {
		t.Errorf("harmless dots refused: %v", err)
	}
	// A decoded path or query as a Camel route may produce it: the
	// characters a URI cannot hold are encoded, as Camel's producer does.
	r, _ = http.NewRequest("GET", "http://backend/", nil)
	if err := ApplyRequestHeaders(append(base("GET", "/a b/café"), Header{HdrQuery, "q=x y|z&n=1"}), r); err != nil {
		t.Fatal(err)
	}
	if r.URL.Path != "/a b/café" || r.URL.RequestURI() != "/a%20b/caf%C3%A9?q=x%20y%7Cz&n=1" {
		t.Errorf("got Path %q, request URI %q", r.URL.Path, r.URL.RequestURI())
	}
}

func TestResponseMapping(t *testing.T) {
	// A real backend answer, through ResponseHeaders, the app layer and back.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/csv")
		w.Header().Set("ETag", `W/"42"`)
		w.Header().Set("Location", "/items/42")
		w.Header().Add("Vary", "Accept")
		w.Header().Add("Vary", "Accept-Language")
		w.Header().Set("Set-Cookie", "session=secret")
		w.Header().Set("X-Powered-By", "legacy")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "a,b\n")
	}))
	defer backend.Close()
	resp, err := http.Get(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	extra := ResponseHeaders(resp)
	app, _ := EncodeApp(&AppMessage{IDS: true, Header: "{}", Payload: body, Extra: extra})
	dec, err := DecodeApp(app)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	status, err := ApplyResponseHeaders(dec.Extra, rec.Header())
	if err != nil {
		t.Fatal(err)
	}
	rec.WriteHeader(status)
	rec.Write(dec.Payload)

	if rec.Code != 201 || rec.Body.String() != "a,b\n" {
		t.Errorf("status %d body %q", rec.Code, rec.Body)
	}
	want := http.Header{
		"Content-Type": {"text/csv"},
		"Etag":         {`W/"42"`},
		"Location":     {"/items/42"},
		"Vary":         {"Accept, Accept-Language"},
	}
	for k, vs := range want {
		if !slices.Equal(rec.Header()[k], vs) {
			t.Errorf("%s = %q, want %q", k, rec.Header()[k], vs)
		}
	}
	for _, k := range []string{"Set-Cookie", "X-Powered-By", "Date", "Content-Length"} {
		if rec.Header().Get(k) != "" {
			t.Errorf("%s forwarded", k)
		}
	}
}

func TestApplyResponseHeadersStatus(t *testing.T) {
	cases := []struct {
		extra  []Header
		status int
		bad    bool
	}{
		{nil, 200, false},
		{[]Header{{HdrStatus, "404"}}, 404, false},
		{[]Header{{"camelhttpresponsecode", " 502 "}}, 502, false},
		{[]Header{{HdrStatus, "abc"}}, 0, true},
		{[]Header{{HdrStatus, "101"}}, 0, true},
		{[]Header{{HdrStatus, "600"}}, 0, true},
		{[]Header{{HdrStatus, ""}}, 0, true},
		{[]Header{{HdrStatus, "200"}, {HdrStatus, "500"}}, 0, true},
		{[]Header{{HdrStatus, "200"}, {"Location", "/\r\nSet-Cookie: x"}}, 0, true},
	}
	for _, c := range cases {
		status, err := ApplyResponseHeaders(c.extra, http.Header{})
		var pe *ParseError
		if c.bad != errors.As(err, &pe) || status != c.status {
			t.Errorf("%v: status %d, err %v", c.extra, status, err)
		}
	}
}

func TestAllowLists(t *testing.T) {
	req := AllowedRequestHeaders()
	for _, h := range []string{"Authorization", "Cookie", "Host", "Connection", "Transfer-Encoding", "Content-Length", "Accept-Encoding"} {
		if slices.Contains(req, h) || slices.Contains(AllowedResponseHeaders(), h) {
			t.Errorf("%s allowed", h)
		}
	}
	req[0] = "Authorization" // a copy
	if AllowedRequestHeaders()[0] == "Authorization" {
		t.Error("AllowedRequestHeaders returns the package's slice")
	}
	for _, h := range append(AllowedRequestHeaders(), AllowedResponseHeaders()...) {
		if http.CanonicalHeaderKey(h) != h {
			t.Errorf("%s is not canonical", h)
		}
	}
}

// The whole plain-HTTP path as the sidecar runs it: a client request at
// the egress becomes an ids:RequestMessage with extraHeaders, the ingress
// rebuilds it for the backend, and the answer travels back as an
// ids:ResponseMessage correlated with the request.
func TestPlainHTTPThroughIDS(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Ids-Peer-Subject") != "" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" ")
		w.Write(b)
	}))
	defer backend.Close()
	a := Self{ConnectorID: "https://a.example/", Token: func() string { return "dat-a" }}
	b := Self{ConnectorID: "https://b.example/", Token: func() string { return "dat-b" }}

	// Egress (sidecar A).
	client := httptest.NewRequest("POST", "http://127.0.0.1:9000/orders/1?dry=1", strings.NewReader("payload"))
	client.Header.Set("Content-Type", "text/plain")
	client.Header.Set("Authorization", "Bearer local-secret")
	reqMsg := &Message{Type: PlainRequestType}
	a.Stamp(reqMsg)
	hdr, _ := reqMsg.Marshal()
	payload, _ := io.ReadAll(client.Body)
	wire, _ := EncodeApp(&AppMessage{IDS: true, Header: string(hdr), Payload: payload, Extra: RequestHeaders(client)})

	// Ingress (sidecar B).
	in, err := DecodeApp(wire)
	if err != nil {
		t.Fatal(err)
	}
	peerMsg, err := Parse([]byte(in.Header))
	if err != nil || peerMsg.Validate() != nil || peerMsg.SecurityToken != "dat-a" {
		t.Fatalf("peer message %+v %v", peerMsg, err)
	}
	out, _ := http.NewRequest("GET", backend.URL, bytes.NewReader(in.Payload))
	if err := ApplyRequestHeaders(in.Extra, out); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	respMsg := NewResponse(PlainResponseType, peerMsg, b)
	rh, _ := respMsg.Marshal()
	wire, _ = EncodeApp(&AppMessage{IDS: true, Header: string(rh), Payload: body, Extra: ResponseHeaders(resp)})

	// Back at the egress.
	back, _ := DecodeApp(wire)
	backMsg, err := Parse([]byte(back.Header))
	if err != nil || backMsg.CorrelationMessage != reqMsg.ID || backMsg.Type != PlainResponseType {
		t.Fatalf("response header %+v %v", backMsg, err)
	}
	rec := httptest.NewRecorder()
	status, err := ApplyResponseHeaders(back.Extra, rec.Header())
	if err != nil {
		t.Fatal(err)
	}
	rec.WriteHeader(status)
	rec.Write(back.Payload)
	if rec.Code != http.StatusAccepted || rec.Body.String() != "POST /orders/1?dry=1 payload" || rec.Header().Get("Content-Type") != "text/plain" {
		t.Errorf("client got %d %q %v", rec.Code, rec.Body, rec.Header())
	}
}
