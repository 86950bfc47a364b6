package sidecar_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// TestE2EErrors: every failure is mapped to an HTTP status with a body
// naming the cause, never swallowed.
//
// The provider has one route per failure (path prefixes; no catch-all, so
// other paths have no route); the consumer has egress listeners in each
// mode and to peers that are down or refuse it.
func TestE2EErrors(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	closed := e2eFreePort(t)

	provider := env.launch(t, "provider-errors", env.identityYAML("server")+fmt.Sprintf(`ingress:
  listen: 127.0.0.1:0
  routes:
    - name: down
      backend: http://%[2]s
      match: {pathPrefix: /down}
    - name: slow
      backend: %[1]s
      timeout: 300ms
      match: {pathPrefix: /slow}
    - name: slow-long
      backend: %[1]s
      timeout: 30s
      match: {pathPrefix: /patient}
    - name: trusted
      backend: %[1]s
      match: {pathPrefix: /trusted}
      allow: {minSecurityProfile: idsc:TRUST_SECURITY_PROFILE}
    - name: trusted-ids
      backend: %[1]s/ids
      mode: multipart
      match: {messageTypes: [ids:ArtifactRequestMessage]}
      allow: {minSecurityProfile: idsc:TRUST_SECURITY_PROFILE}
    - name: subject-only
      backend: %[1]s
      match: {pathPrefix: /only-someone-else}
      allow: {subjects: ["someone-else"]}
    - name: ids
      backend: %[1]s/ids
      mode: multipart
      match: {messageTypes: [ids:QueryMessage]}
    - name: small
      backend: %[1]s
      maxBodyBytes: 64KiB
      match: {pathPrefix: /small}
    - name: api
      backend: %[1]s
      match: {pathPrefix: /api}
`, env.BackendURL, closed))
	_, pport, _ := strings.Cut(provider.ingress, ":")

	// A provider that refuses the consumer's DAT (BASE < TRUST) in the
	// IDSCP2 handshake.
	strict := env.launch(t, "provider-strict", strings.Replace(env.identityYAML("server"), "  mode: daps\n",
		"  mode: daps\n  minSecurityProfile: idsc:TRUST_SECURITY_PROFILE\n", 1)+fmt.Sprintf(`ingress:
  listen: 127.0.0.1:0
  routes:
    - name: api
      backend: %s
`, env.BackendURL))
	_, sport, _ := strings.Cut(strict.ingress, ":")

	consumer := env.launch(t, "consumer-errors", env.identityYAML("client")+fmt.Sprintf(`peers:
  - name: provider
    address: localhost:%[1]s
  - name: down
    address: %[2]s
  - name: strict
    address: localhost:%[3]s
  - name: wrong-name
    address: 127.0.0.1:%[1]s
    serverName: wrong.example
egress:
  - listen: 127.0.0.1:0   # 0: auto
    peer: provider
  - listen: 127.0.0.1:0   # 1: multipart
    peer: provider
    mode: multipart
  - listen: 127.0.0.1:0   # 2: short egress timeout
    peer: provider
    timeout: 500ms
  - listen: 127.0.0.1:0   # 3: provider sidecar down
    peer: down
    timeout: 2s
  - listen: 127.0.0.1:0   # 4: provider refuses our DAT
    peer: strict
    timeout: 2s
  - listen: 127.0.0.1:0   # 5: certificate does not match the name
    peer: wrong-name
    timeout: 2s
limits:
  maxBodyBytes: 1MiB
`, pport, closed, sport))
	auto, mpart, short := consumer.egress[0], consumer.egress[1], consumer.egress[2]
	c := e2eClient(t, 30*time.Second)

	t.Run("BackendDown", func(t *testing.T) {
		for _, m := range []string{"GET", "POST"} {
			r := e2eMust(t, c, m, auto+"/down/x", []byte("x"))
			e2eExpect(t, m+" to a backend that is down", r, http.StatusBadGateway, "backend unavailable", "connection refused")
		}
	})
	t.Run("BackendSlowerThanRouteTimeout", func(t *testing.T) {
		start := time.Now()
		r := e2eMust(t, c, "GET", auto+"/slow?d=20s", nil)
		e2eExpect(t, "slow backend", r, http.StatusGatewayTimeout, "backend timed out")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the 504 took %v; the route timeout is 300ms", d)
		}
	})
	t.Run("PeerSlowerThanEgressTimeout", func(t *testing.T) {
		start := time.Now()
		r := e2eMust(t, c, "GET", short+"/patient/slow?d=2s", nil)
		e2eExpect(t, "egress timeout", r, http.StatusGatewayTimeout, "did not answer in time")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the 504 took %v; the egress timeout is 500ms", d)
		}
	})
	t.Run("BackendErrorsPassThrough", func(t *testing.T) {
		for _, code := range []int{500, 404, 503} {
			r := e2eMust(t, c, "GET", fmt.Sprintf("%s/api/status/%d", auto, code), nil)
			e2eExpect(t, fmt.Sprintf("backend %d", code), r, code, fmt.Sprintf("backend says %d", code))
		}
	})
	t.Run("NotAuthorized", func(t *testing.T) {
		r := e2eMust(t, c, "GET", auto+"/trusted/x", nil, "X-Request-Id: forbidden")
		e2eExpect(t, "route for TRUST peers", r, http.StatusForbidden, "security profile")
		r = e2eMust(t, c, "GET", auto+"/only-someone-else/x", nil, "X-Request-Id: forbidden")
		e2eExpect(t, "route for another subject", r, http.StatusForbidden, "subject")
		if env.be.get("forbidden") != nil {
			t.Errorf("the backend was called for a refused request")
		}
		// Through IDS multipart the refusal is visible as what it is.
		h := &idsmsg.Message{Type: "ids:ArtifactRequestMessage", ID: "https://w3id.org/idsa/autogen/artifactRequestMessage/e2e-403"}
		body, ct := e2eMultipart(t, h, nil, "")
		for _, u := range []string{auto, mpart} {
			r = e2eMust(t, c, "POST", u+"/", body, "Content-Type: "+ct)
			if r.Status != http.StatusForbidden {
				t.Errorf("multipart to a TRUST route: status %d, want 403; %q", r.Status, e2eClip(r.Body))
				continue
			}
			ans, _ := e2eAnswer(t, r)
			if ans.Type != "ids:RejectionMessage" || ans.RejectionReason != idsmsg.NotAuthorized || ans.CorrelationMessage != h.ID {
				t.Errorf("answer %s %s correlating %q, want ids:RejectionMessage idsc:NOT_AUTHORIZED for %q", ans.Type, ans.RejectionReason, ans.CorrelationMessage, h.ID)
			}
		}
		if env.be.getIDS(h.ID) != nil {
			t.Errorf("the backend was called for a refused IDS message")
		}
		text := e2eScrape(t, provider.metrics())
		if v, _ := e2eMetric(text, "idscp2_sidecar_rejections_total", "direction=ingress", "reason=idsc:NOT_AUTHORIZED"); v < 4 {
			t.Errorf("provider: rejections{reason=NOT_AUTHORIZED} = %v, want ≥ 4", v)
		}
	})
	t.Run("NoRoute", func(t *testing.T) {
		r := e2eMust(t, c, "GET", auto+"/nowhere", nil)
		e2eExpect(t, "no route", r, http.StatusNotFound, "no route")
		h := &idsmsg.Message{Type: "ids:ConnectorUpdateMessage", ID: "https://w3id.org/idsa/autogen/connectorUpdateMessage/e2e-404"}
		body, ct := e2eMultipart(t, h, nil, "")
		r = e2eMust(t, c, "POST", mpart+"/", body, "Content-Type: "+ct)
		if r.Status != http.StatusNotFound {
			t.Fatalf("multipart without a route: %d, want 404: %q", r.Status, e2eClip(r.Body))
		}
		if ans, _ := e2eAnswer(t, r); ans.Type != "ids:RejectionMessage" || ans.RejectionReason != idsmsg.NotFound {
			t.Errorf("answer %s %s, want ids:RejectionMessage idsc:NOT_FOUND", ans.Type, ans.RejectionReason)
		}
	})
	t.Run("BodyOverEgressLimit", func(t *testing.T) {
		over := bytes.Repeat([]byte("x"), 1<<20+1)
		r := e2eMust(t, c, "POST", auto+"/api/echo", over, "X-Request-Id: too-large")
		e2eExpect(t, "1 MiB + 1 with Content-Length", r, http.StatusRequestEntityTooLarge, "exceeds")
		// Without Content-Length (chunked), the limit holds while reading.
		r2, err := e2eDoChunked(c, auto+"/api/echo", over)
		if err != nil {
			t.Fatal(err)
		}
		e2eExpect(t, "1 MiB + 1 chunked", r2, http.StatusRequestEntityTooLarge, "exceeds")
		h := &idsmsg.Message{Type: "ids:QueryMessage", ID: "https://w3id.org/idsa/autogen/queryMessage/e2e-413"}
		body, ct := e2eMultipart(t, h, over, "text/plain")
		r = e2eMust(t, c, "POST", mpart+"/", body, "Content-Type: "+ct)
		e2eExpect(t, "multipart over the limit", r, http.StatusRequestEntityTooLarge, "exceeds")
		if env.be.get("too-large") != nil || env.be.getIDS(h.ID) != nil {
			t.Errorf("the backend received a body over the limit")
		}
		// Exactly at the limit passes.
		r = e2eMust(t, c, "POST", auto+"/api/echo", over[:1<<20])
		e2eExpect(t, "exactly 1 MiB", r, http.StatusOK)
	})
	t.Run("BodyOverRouteLimit", func(t *testing.T) {
		// routes[].maxBodyBytes "caps request and response bodies"
		// (config.Route); the route's limit is 64 KiB.
		r := e2eMust(t, c, "GET", fmt.Sprintf("%s/small/blob/%d", auto, 100<<10), nil)
		e2eExpect(t, "backend answer over the route limit", r, http.StatusBadGateway, "exceeds")
		r = e2eMust(t, c, "POST", auto+"/small/status/201", bytes.Repeat([]byte("y"), 100<<10), "X-Request-Id: route-too-large")
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("request body of 100 KiB to a route with maxBodyBytes 64KiB: status %d, want 413 (backend executed it: %t)",
				r.Status, env.be.get("route-too-large") != nil)
		}
	})
	t.Run("MalformedMultipart", func(t *testing.T) {
		const b = "e2e-boundary"
		part := func(name, body string) string {
			return "--" + b + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + body + "\r\n"
		}
		mpCT := "multipart/form-data; boundary=" + b
		cases := []struct {
			name, contentType, body string
			want                    []string
		}{
			{"no header part", mpCT, part("payload", "data") + "--" + b + "--\r\n", []string{"header", "missing"}},
			{"header not JSON", mpCT, part("header", "{not json") + "--" + b + "--\r\n", []string{"header", "JSON"}},
			{"header without @type", mpCT, part("header", `{"@id":"https://example.org/m/1"}`) + "--" + b + "--\r\n", []string{"@type", "missing"}},
			{"bad issued", mpCT, part("header", `{"@type":"ids:QueryMessage","ids:issued":"yesterday"}`) + "--" + b + "--\r\n", []string{"issued"}},
			{"unknown part", mpCT, part("header", `{"@type":"ids:QueryMessage"}`) + part("attachment", "x") + "--" + b + "--\r\n", []string{"attachment"}},
			{"no boundary parameter", "multipart/form-data", part("header", `{"@type":"ids:QueryMessage"}`), []string{"boundary"}},
			{"no delimiter", mpCT, "just text", []string{"delimiter"}},
		}
		for _, tc := range cases {
			for _, u := range []string{auto, mpart} {
				r := e2eMust(t, c, "POST", u+"/", []byte(tc.body), "Content-Type: "+tc.contentType)
				e2eExpect(t, tc.name, r, http.StatusBadRequest, tc.want...)
			}
		}
		// Plain HTTP to the multipart-only egress.
		r := e2eMust(t, c, "POST", mpart+"/", []byte("hello"), "Content-Type: text/plain")
		e2eExpect(t, "text/plain to a multipart egress", r, http.StatusBadRequest, "Content-Type")
	})
	t.Run("ProviderSidecarDown", func(t *testing.T) {
		start := time.Now()
		r := e2eMust(t, c, "GET", consumer.egress[3]+"/api/x", nil)
		e2eExpect(t, "peer down", r, http.StatusBadGateway, "no connection to peer down", "connection refused")
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("the 502 took %v; the egress timeout is 2s", d)
		}
		// Once the peer is known to be down, the answer comes without waiting.
		r = e2eMust(t, c, "GET", consumer.egress[3]+"/api/x", nil)
		e2eExpect(t, "peer still down", r, http.StatusBadGateway, "connection refused")
	})
	t.Run("PeerRefusesOurDAT", func(t *testing.T) {
		r := e2eMust(t, c, "GET", consumer.egress[4]+"/x", nil)
		// With Dummy2 the consumer is ESTABLISHED as soon as it has verified
		// the provider, so the refusal may come as the close of a connection
		// that has just been used: either way the cause is named.
		e2eExpect(t, "DAT refused in the handshake", r, http.StatusBadGateway, "peer strict", "NO_VALID_DAT")
	})
	t.Run("PeerCertificateMismatch", func(t *testing.T) {
		r := e2eMust(t, c, "GET", consumer.egress[5]+"/api/x", nil)
		e2eExpect(t, "certificate for another name", r, http.StatusBadGateway, "no connection to peer wrong-name", "wrong.example")
	})
}

// e2eDoChunked POSTs body without a Content-Length.
func e2eDoChunked(c *http.Client, url string, body []byte) (*e2eResult, error) {
	req, err := http.NewRequest("POST", url, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		return nil, err
	}
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	return &e2eResult{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}, nil
}

// TestE2EQueueFull: with one request in flight and one queued per peer, the
// next ones are answered 503 with Retry-After at once.
func TestE2EQueueFull(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	consumer := env.launch(t, "consumer-queue", env.identityYAML("client")+fmt.Sprintf(`peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
limits:
  maxConcurrentPerPeer: 1
  maxQueuePerPeer: 1
  retryAfter: 2s
`, env.ProviderAddr))
	u := consumer.egress[0]
	c := e2eClient(t, 30*time.Second)

	var wg sync.WaitGroup
	held := make([]*e2eResult, 2)
	heldErr := make([]error, 2)
	send := func(i int) {
		defer wg.Done()
		held[i], heldErr[i] = e2eDo(c, "POST", u+"/gate", []byte(fmt.Sprint("held-", i)), fmt.Sprintf("X-Request-Id: held-%d", i))
	}
	wg.Add(1)
	go send(0)
	e2eWaitArrivals(t, env.be, 1, 10*time.Second)
	wg.Add(1)
	go send(1)
	e2eEventually(t, 10*time.Second, "a queued request", func() bool {
		v, _ := e2eMetric(e2eScrape(t, consumer.metrics()), "idscp2_sidecar_queue_depth", "peer=provider")
		return v == 1
	})

	var over sync.WaitGroup
	results := make([]*e2eResult, 5)
	errs := make([]error, 5)
	for i := range results {
		over.Add(1)
		go func() {
			defer over.Done()
			results[i], errs[i] = e2eDo(c, "POST", u+"/gate", []byte("over"), fmt.Sprintf("X-Request-Id: over-%d", i))
		}()
	}
	over.Wait() // they must not wait for the held ones
	for i, r := range results {
		if errs[i] != nil {
			t.Errorf("request %d over the limits: %v", i, errs[i])
			continue
		}
		e2eExpect(t, "request over the limits", r, http.StatusServiceUnavailable, "too many requests")
		if got := r.Header.Get("Retry-After"); got != "2" {
			t.Errorf("503 with Retry-After %q, want \"2\"", got)
		}
	}
	env.be.release()
	wg.Wait()
	for i, r := range held {
		if heldErr[i] != nil {
			t.Errorf("held request %d: %v", i, heldErr[i])
			continue
		}
		e2eExpect(t, "held request", r, http.StatusOK, fmt.Sprint("held-", i))
	}
	for i := range results {
		if env.be.count(fmt.Sprintf("over-%d", i)) != 0 {
			t.Errorf("a request answered 503 reached the backend")
		}
	}
}
