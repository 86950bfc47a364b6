package sidecar_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
)

// TestE2E drives one demo environment (consumer client → consumer sidecar
// egress → IDSCP2 → provider sidecar ingress → backend and back) through
// the happy paths. The subtests share the environment and run in order;
// the metrics subtest runs last and checks what the others counted.
func TestE2E(t *testing.T) {
	env := e2eStart(t, demo.Options{})
	c := e2eClient(t, 30*time.Second)

	t.Run("Methods", func(t *testing.T) { e2eMethods(t, env, c) })
	t.Run("Headers", func(t *testing.T) { e2eHeaders(t, env, c) })
	t.Run("QueryAndPath", func(t *testing.T) { e2eQueryAndPath(t, env, c) })
	t.Run("BackendStatusPassThrough", func(t *testing.T) { e2eStatusPassThrough(t, env, c) })
	t.Run("BinaryBodies", func(t *testing.T) { e2eBinary(t, env, c) })
	t.Run("LargeBodies", func(t *testing.T) { e2eLarge(t, env, c) })
	t.Run("SeedMultipart", func(t *testing.T) { e2eSeedMultipart(t, env, c, env.ConsumerURL) })
	t.Run("SeedMultipartStrictEgress", func(t *testing.T) {
		// A consumer whose egress is in multipart mode (the demo's is auto).
		cons := env.launch(t, "consumer-multipart", env.identityYAML("client")+fmt.Sprintf(`peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
    mode: multipart
`, env.ProviderAddr))
		e2eSeedMultipart(t, env, c, cons.egress[0])
		// In multipart mode a plain request is malformed.
		r := e2eMust(t, c, "POST", cons.egress[0]+"/echo", []byte("plain"), "Content-Type: text/plain")
		e2eExpect(t, "plain body to a multipart egress", r, http.StatusBadRequest, "multipart", "Content-Type")
	})
	t.Run("MultipartBinaryPayload", func(t *testing.T) { e2eMultipartBinary(t, env, c) })
	t.Run("Concurrency", func(t *testing.T) { e2eConcurrency(t, env) })
	t.Run("Curl", func(t *testing.T) { e2eCurl(t, env) })
	t.Run("AdminAndMetrics", func(t *testing.T) { e2eAdmin(t, env, c) })
}

func e2eMethods(t *testing.T, env *e2eEnv, c *http.Client) {
	u := env.ConsumerURL

	r := e2eMust(t, c, "GET", u+"/items/1", nil, "X-Request-Id: m-get")
	e2eExpect(t, "GET", r, http.StatusOK)
	if s := env.be.get("m-get"); s == nil || s.Method != "GET" || s.Path != "/items/1" || s.Len != 0 {
		t.Errorf("GET: backend saw %+v", s)
	}

	body := []byte(`{"name":"widget"}`)
	r = e2eMust(t, c, "POST", u+"/items?created=1", body, "X-Request-Id: m-post", "Content-Type: application/json")
	e2eExpect(t, "POST", r, http.StatusCreated)
	if got := r.Header.Get("Location"); got != "/created/m-post" {
		t.Errorf("POST: Location %q, want /created/m-post", got)
	}
	if !bytes.Equal(r.Body, body) || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("POST: answer %q (%s), want the echo of %q", r.Body, r.Header.Get("Content-Type"), body)
	}
	if s := env.be.get("m-post"); s == nil || s.Method != "POST" || !bytes.Equal(s.Body, body) || s.Header.Get("Content-Type") != "application/json" {
		t.Errorf("POST: backend saw %+v", s)
	}

	body = []byte("replacement")
	r = e2eMust(t, c, "PUT", u+"/items/1", body, "X-Request-Id: m-put", "Content-Type: text/plain; charset=utf-8")
	e2eExpect(t, "PUT", r, http.StatusOK, "replacement")
	sum := sha256.Sum256(body)
	if want := fmt.Sprintf(`"%x"`, sum[:8]); r.Header.Get("ETag") != want {
		t.Errorf("PUT: ETag %q, want %q", r.Header.Get("ETag"), want)
	}
	if s := env.be.get("m-put"); s == nil || s.Method != "PUT" || string(s.Body) != "replacement" {
		t.Errorf("PUT: backend saw %+v", s)
	}

	r = e2eMust(t, c, "DELETE", u+"/items/1", nil, "X-Request-Id: m-delete")
	e2eExpect(t, "DELETE", r, http.StatusNoContent)
	if len(r.Body) != 0 {
		t.Errorf("DELETE: body %q, want none", r.Body)
	}
	if s := env.be.get("m-delete"); s == nil || s.Method != "DELETE" {
		t.Errorf("DELETE: backend saw %+v", s)
	}

	// Conditional request: If-None-Match travels, 304 and ETag come back.
	r = e2eMust(t, c, "GET", u+"/etag", nil, "X-Request-Id: m-etag1")
	e2eExpect(t, "GET /etag", r, http.StatusOK, "version 1")
	etag := r.Header.Get("ETag")
	if etag != `"v1"` {
		t.Errorf("GET /etag: ETag %q, want \"v1\"", etag)
	}
	r = e2eMust(t, c, "GET", u+"/etag", nil, "X-Request-Id: m-etag2", "If-None-Match: "+etag)
	e2eExpect(t, "conditional GET", r, http.StatusNotModified)
	if r.Header.Get("ETag") != `"v1"` {
		t.Errorf("304: ETag %q, want \"v1\"", r.Header.Get("ETag"))
	}
}

func e2eHeaders(t *testing.T, env *e2eEnv, c *http.Client) {
	r := e2eMust(t, c, "POST", env.ConsumerURL+"/echo", []byte("h"),
		"X-Request-Id: hdr-1",
		"Content-Type: text/plain",
		"Accept: text/plain",
		"Accept-Language: de",
		"User-Agent: e2e-client/1.0",
		"Authorization: Bearer client-secret",
		"Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
		"Cookie: session=client-secret",
		"Keep-Alive: timeout=5",
		"Connection: keep-alive, Cache-Control",
		"Cache-Control: no-cache", // nominated hop-by-hop by Connection
		"Forwarded: for=192.0.2.1",
		"X-Forwarded-For: 192.0.2.1",
		"X-Custom-Header: not on the allow-list",
		// Spoofed identity headers: the provider sidecar sets its own.
		"X-IDS-Peer-Subject: spoofed-subject",
		"X-IDS-Peer-Connector: https://evil.example/",
		"X-IDS-Peer-Security-Profile: idsc:TRUST_PLUS_SECURITY_PROFILE",
		"X-IDS-Peer-Suite: TPM",
		"X-IDS-Message-Type: ids:LogMessage",
	)
	e2eExpect(t, "POST with headers", r, http.StatusOK)
	if r.Header.Get("X-Request-Id") != "hdr-1" {
		t.Errorf("X-Request-Id came back as %q", r.Header.Get("X-Request-Id"))
	}
	s := env.be.get("hdr-1")
	if s == nil {
		t.Fatal("the backend saw no request")
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Keep-Alive", "Cache-Control",
		"Forwarded", "X-Forwarded-For", "X-Custom-Header"} {
		if v := s.Header.Values(k); len(v) > 0 {
			t.Errorf("the backend received %s: %q; it must not be forwarded", k, v)
		}
	}
	for k, want := range map[string]string{
		"Content-Type": "text/plain", "Accept": "text/plain", "Accept-Language": "de",
		"User-Agent": "e2e-client/1.0", "X-Request-Id": "hdr-1",
	} {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("backend header %s = %q, want [%q]", k, got, want)
		}
	}
	for k, want := range map[string]string{
		"X-IDS-Peer-Subject":          env.subject(t, "client"),
		"X-IDS-Peer-Connector":        "https://consumer.demo.local/",
		"X-IDS-Peer-Security-Profile": "idsc:BASE_SECURITY_PROFILE",
		"X-IDS-Peer-Suite":            "Dummy2",
		"X-IDS-Message-Type":          "ids:RequestMessage",
	} {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("identity header %s = %q, want exactly [%q] (set by the provider sidecar, the client's stripped)", k, got, want)
		}
	}

	// Response headers: allow-listed ones come back, credentials and
	// internal ones do not.
	r = e2eMust(t, c, "GET", env.ConsumerURL+"/status/200", nil, "X-Request-Id: hdr-2")
	e2eExpect(t, "GET /status/200", r, http.StatusOK, "backend says 200")
	for k, want := range map[string]string{
		"Etag": `"v-200"`, "Location": "/things/42?ref=e2e", "Cache-Control": "no-store",
		"Content-Type": "text/plain; charset=utf-8", "X-Request-Id": "hdr-2",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("response header %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"Set-Cookie", "X-Backend-Internal"} {
		if v := r.Header.Values(k); len(v) > 0 {
			t.Errorf("response carries %s: %q; it must not be forwarded", k, v)
		}
	}

	// The sample identity endpoint, as the demo shows it.
	r = e2eMust(t, c, "GET", env.ConsumerURL+"/whoami", nil, "X-IDS-Peer-Subject: me")
	e2eExpect(t, "GET /whoami", r, http.StatusOK, "X-IDS-Peer-Subject: "+env.subject(t, "client")+"\n")
}

func e2eQueryAndPath(t *testing.T, env *e2eEnv, c *http.Client) {
	cases := []struct{ path, query string }{
		{"/search", "q=hello+world&lang=de&empty=&flag"},
		{"/search", "q=%C3%A4%20%2F%26&x=1&x=2"},
		{"/a%20b/c%2Fd/%C3%A4", "sort=-date"},
		{"/", ""},
		{"/trailing/", "a=b"},
	}
	for i, tc := range cases {
		id := fmt.Sprintf("q-%d", i)
		u := env.ConsumerURL + tc.path
		if tc.query != "" {
			u += "?" + tc.query
		}
		r := e2eMust(t, c, "GET", u, nil, "X-Request-Id: "+id)
		e2eExpect(t, u, r, http.StatusOK)
		s := env.be.get(id)
		if s == nil {
			t.Errorf("%s: the backend saw nothing", u)
			continue
		}
		if s.Path != tc.path || s.RawQuery != tc.query {
			t.Errorf("%s: backend saw path %q query %q, want %q %q", u, s.Path, s.RawQuery, tc.path, tc.query)
		}
	}
}

func e2eStatusPassThrough(t *testing.T, env *e2eEnv, c *http.Client) {
	for _, code := range []int{200, 201, 202, 204, 400, 401, 404, 409, 418, 500, 502, 503} {
		r := e2eMust(t, c, "GET", fmt.Sprintf("%s/status/%d", env.ConsumerURL, code), nil)
		want := []string{fmt.Sprintf("backend says %d", code)}
		if code == 204 {
			want = nil
		}
		e2eExpect(t, fmt.Sprintf("backend %d", code), r, code, want...)
		if r.Header.Get("Content-Type") != "text/plain; charset=utf-8" || r.Header.Get("Etag") != fmt.Sprintf(`"v-%d"`, code) {
			t.Errorf("backend %d: headers %v not passed through", code, r.Header)
		}
	}
}

func e2eBinary(t *testing.T, env *e2eEnv, c *http.Client) {
	all := e2eAllBytes(4)
	for _, m := range []string{"POST", "PUT"} {
		id := "bin-" + m
		r := e2eMust(t, c, m, env.ConsumerURL+"/echo/binary", all, "X-Request-Id: "+id, "Content-Type: application/octet-stream")
		e2eExpect(t, m+" binary", r, http.StatusOK)
		if !bytes.Equal(r.Body, all) {
			t.Errorf("%s: the echo of the 256 byte values came back as %d different bytes", m, len(r.Body))
		}
		if s := env.be.get(id); s == nil || s.Sum != sha256.Sum256(all) {
			t.Errorf("%s: the backend did not receive the 256 byte values intact", m)
		}
	}
	r := e2eMust(t, c, "GET", env.ConsumerURL+"/bytes256", nil)
	e2eExpect(t, "GET /bytes256", r, http.StatusOK)
	if !bytes.Equal(r.Body, e2eAllBytes(1)) || r.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET /bytes256: %d bytes (%s), want the 256 byte values", len(r.Body), r.Header.Get("Content-Type"))
	}
}

func e2eLarge(t *testing.T, env *e2eEnv, c *http.Client) {
	const n = 5 << 20
	big := e2eRandom(42, n)
	r := e2eMust(t, c, "POST", env.ConsumerURL+"/echo/large", big, "X-Request-Id: large-up", "Content-Type: application/octet-stream")
	e2eExpect(t, "POST 5 MiB", r, http.StatusOK)
	if len(r.Body) != n || sha256.Sum256(r.Body) != sha256.Sum256(big) {
		t.Errorf("POST 5 MiB: echo of %d bytes differs", len(r.Body))
	}
	if s := env.be.get("large-up"); s == nil || s.Len != n || s.Sum != sha256.Sum256(big) {
		t.Errorf("POST 5 MiB: the backend did not receive the body intact")
	}
	r = e2eMust(t, c, "GET", fmt.Sprintf("%s/blob/%d", env.ConsumerURL, n), nil)
	e2eExpect(t, "GET 5 MiB", r, http.StatusOK)
	if !bytes.Equal(r.Body, e2eRandom(n, n)) {
		t.Errorf("GET 5 MiB: %d bytes, not the backend's", len(r.Body))
	}
}

// e2eConcurrency: 64 clients × 20 requests with distinct bodies; every
// answer must be the one to its own request, and the backend must have
// executed each exactly once.
func e2eConcurrency(t *testing.T, env *e2eEnv) {
	const clients, each = 64, 20
	c := e2eClient(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				id := fmt.Sprintf("conc-%d-%d", i, j)
				method, body := "POST", append([]byte(id+":"), e2eRandom(uint64(i*1000+j), (i*j*37)%4096)...)
				if j%5 == 4 {
					method, body = "GET", nil
				}
				r, err := e2eDo(c, method, fmt.Sprintf("%s/conc/%d?j=%d", env.ConsumerURL, i, j), body, "X-Request-Id: "+id, "Content-Type: application/x-e2e")
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %v", id, err)
				case r.Status != http.StatusOK:
					errs <- fmt.Errorf("%s: status %d: %s", id, r.Status, e2eClip(r.Body))
				case r.Header.Get("X-Request-Id") != id:
					errs <- fmt.Errorf("%s: answer carries X-Request-Id %q", id, r.Header.Get("X-Request-Id"))
				case !bytes.Equal(r.Body, body):
					errs <- fmt.Errorf("%s: answer body of %d bytes is not the echo of its own %d bytes (starts %q)", id, len(r.Body), len(body), e2eClip(r.Body[:min(len(r.Body), 24)]))
				default:
					if s := env.be.get(id); s == nil || s.Count != 1 || s.RawQuery != fmt.Sprintf("j=%d", j) || s.Path != fmt.Sprintf("/conc/%d", i) {
						errs <- fmt.Errorf("%s: backend record %+v, want one execution of /conc/%d?j=%d", id, s, i, j)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 20 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d requests failed", n, clients*each)
	}
}

func e2eAdmin(t *testing.T, env *e2eEnv, c *http.Client) {
	for _, side := range []struct {
		name, metrics string
		requests      []string // labels of idscp2_sidecar_requests_total that must have counted
		role          string
	}{
		{"consumer", env.ConsumerMetrics, []string{"direction=egress", "route=provider", "code=2xx"}, "client"},
		{"provider", env.ProviderMetrics, []string{"direction=ingress", "route=api", "code=2xx"}, "server"},
	} {
		base := strings.TrimSuffix(side.metrics, "/metrics")
		for _, p := range []string{"/healthz", "/readyz"} {
			r := e2eMust(t, c, "GET", base+p, nil)
			e2eExpect(t, side.name+p, r, http.StatusOK)
		}

		resp, err := http.Get(side.metrics)
		if err != nil {
			t.Fatal(err)
		}
		problems, err := promlint.New(resp.Body).Lint()
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: promlint: %v", side.name, err)
		}
		for _, p := range problems {
			t.Errorf("%s /metrics: promlint: %s: %s", side.name, p.Metric, p.Text)
		}

		text := e2eScrape(t, side.metrics)
		if v, _ := e2eMetric(text, "idscp2_sidecar_requests_total", side.requests...); v < 1000 {
			t.Errorf("%s: idscp2_sidecar_requests_total{%s} = %v after the traffic above, want ≥ 1000", side.name, strings.Join(side.requests, ","), v)
		}
		if v, _ := e2eMetric(text, "idscp2_handshakes_total", "role="+side.role, "result=ok"); v < 1 {
			t.Errorf("%s: idscp2_handshakes_total{role=%q,result=\"ok\"} = %v, want ≥ 1", side.name, side.role, v)
		}
		if v, _ := e2eMetric(text, "idscp2_sidecar_request_duration_seconds_count", side.requests[:2]...); v < 1000 {
			t.Errorf("%s: idscp2_sidecar_request_duration_seconds_count = %v, want ≥ 1000", side.name, v)
		}
		for _, name := range []string{"idscp2_connections_total", "idscp2_messages_total", "idscp2_frame_bytes_total",
			"idscp2_dat_verifications_total", "idscp2_build_info", "idscp2_config_last_reload_successful",
			"idscp2_tls_certificate_expiry_timestamp_seconds"} {
			if v, found := e2eMetric(text, name); !found || v <= 0 {
				t.Errorf("%s: %s = %v (found %t), want > 0", side.name, name, v, found)
			}
		}
	}
	text := e2eScrape(t, env.ConsumerMetrics)
	if v, _ := e2eMetric(text, "idscp2_sidecar_pool_connections", "peer=provider"); v < 1 {
		t.Errorf("consumer: idscp2_sidecar_pool_connections{peer=\"provider\"} = %v, want ≥ 1", v)
	}
	if v, _ := e2eMetric(text, "idscp2_dat_verifications_total", "result=ok"); v < 1 {
		t.Errorf("consumer: idscp2_dat_verifications_total{result=\"ok\"} = %v, want ≥ 1", v)
	}
	text = e2eScrape(t, env.ProviderMetrics)
	if v, _ := e2eMetric(text, "idscp2_sidecar_requests_total", "direction=ingress", "route=ids-components", "code=2xx"); v < 4 {
		t.Errorf("provider: multipart requests on route ids-components = %v, want ≥ 4", v)
	}

	// Ready means started: a sidecar that was shut down no longer serves.
	cons := env.launch(t, "consumer-admin", env.identityYAML("client")+fmt.Sprintf(`peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
`, env.ProviderAddr))
	r := e2eMust(t, c, "GET", cons.admin+"/readyz", nil)
	e2eExpect(t, "fresh consumer /readyz", r, http.StatusOK, "ready")
	if err := cons.shutdown(10 * time.Second); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := e2eDo(e2eClient(t, 5*time.Second), "GET", cons.admin+"/readyz", nil); err == nil {
		t.Errorf("/readyz still answers after Shutdown")
	}
}
