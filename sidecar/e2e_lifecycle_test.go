package sidecar_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
)

// providerYAML is a provider configuration with the given ingress listen
// address and routes (YAML list items indented by four spaces).
func (e *e2eEnv) providerYAML(listen, routes string) string {
	return e.identityYAML("server") + "ingress:\n  listen: " + listen + "\n  routes:\n" + routes
}

// consumerYAML is a consumer with one egress listener to the peer at addr;
// egressExtra is added to the egress entry (six-space indent), extra at the
// top level.
func (e *e2eEnv) consumerYAML(addr, egressExtra, extra string) string {
	return e.identityYAML("client") + fmt.Sprintf(`peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
%s`, addr, egressExtra) + extra
}

// e2eLoad sends requests from workers until stop; every request has a
// unique id and a bounded client timeout, so none can hang unnoticed.
type e2eLoad struct {
	mu      sync.Mutex
	results map[string]e2eOutcome
	ok      atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

type e2eOutcome struct {
	method, path string
	status       int
	body, sent   []byte
	err          error
}

func e2eStartLoad(t *testing.T, url string, workers int, next func(worker, i int) (method, path string, body []byte)) *e2eLoad {
	l := &e2eLoad{results: map[string]e2eOutcome{}, stop: make(chan struct{})}
	c := e2eClient(t, 20*time.Second)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				method, path, body := next(w, i)
				id := fmt.Sprintf("%s-w%d-%d", strings.ReplaceAll(t.Name(), "/", "-"), w, i)
				r, err := e2eDo(c, method, url+path, body, "X-Request-Id: "+id, "Content-Type: application/octet-stream")
				o := e2eOutcome{method: method, path: path, sent: body, err: err}
				if err == nil {
					o.status, o.body = r.Status, r.Body
					if r.Status == http.StatusOK {
						l.ok.Add(1)
					}
				}
				l.mu.Lock()
				l.results[id] = o
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *e2eLoad) finish() map[string]e2eOutcome {
	close(l.stop)
	l.wg.Wait()
	return l.results
}

// waitOK waits until n more requests than now have succeeded.
func (l *e2eLoad) waitOK(t *testing.T, n int64, what string) {
	t.Helper()
	target := l.ok.Load() + n
	e2eEventually(t, 15*time.Second, what, func() bool { return l.ok.Load() >= target })
}

// TestE2EPeerRestart: the provider sidecar restarts twice under load, once
// draining and once abruptly. Every request fails cleanly (502/503/504 with
// a cause) or succeeds, and a POST is executed at most once — exactly once
// if it succeeded. None hangs.
func TestE2EPeerRestart(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	routes := fmt.Sprintf("    - name: api\n      backend: %s\n      timeout: 5s\n", env.BackendURL)
	p1 := env.launch(t, "provider-1", env.providerYAML("127.0.0.1:0", routes))
	fixed := p1.ingress
	_, port, _ := net.SplitHostPort(fixed)
	cons := env.launch(t, "consumer", env.consumerYAML("localhost:"+port, "    timeout: 5s\n", ""))

	load := e2eStartLoad(t, cons.egress[0], 8, func(w, i int) (string, string, []byte) {
		return "POST", "/echo?delay=5ms", []byte(fmt.Sprintf("w%d-%d-%x", w, i, e2eRandom(uint64(w<<20|i), 64)))
	})
	load.waitOK(t, 50, "traffic before the first restart")

	// Restart 1: drain, then a new provider on the same address.
	if err := p1.shutdown(10 * time.Second); err != nil {
		t.Errorf("provider-1 Shutdown: %v", err)
	}
	p2 := env.launch(t, "provider-2", env.providerYAML(fixed, routes))
	load.waitOK(t, 50, "traffic after the first restart")

	// Restart 2: abrupt, no time to drain.
	p2.stopNow()
	env.launch(t, "provider-3", env.providerYAML(fixed, routes))
	load.waitOK(t, 50, "traffic after the second restart")

	results := load.finish()
	failed := 0
	for id, o := range results {
		execs := env.be.count(id)
		switch {
		case o.err != nil:
			t.Errorf("%s: no answer: %v", id, o.err)
		case o.status == http.StatusOK:
			if execs != 1 {
				t.Errorf("%s: succeeded but the backend executed the POST %d times", id, execs)
			}
			if !bytes.Equal(o.body, o.sent) {
				t.Errorf("%s: answer %q is not the echo of its request %q", id, e2eClip(o.body), o.sent)
			}
		case o.status == http.StatusBadGateway || o.status == http.StatusServiceUnavailable || o.status == http.StatusGatewayTimeout:
			failed++
			if execs > 1 {
				t.Errorf("%s: failed with %d, and the backend executed the POST %d times", id, o.status, execs)
			}
			if len(bytes.TrimSpace(o.body)) == 0 {
				t.Errorf("%s: %d without a cause", id, o.status)
			}
		default:
			t.Errorf("%s: status %d: %q", id, o.status, e2eClip(o.body))
		}
	}
	t.Logf("%d requests, %d succeeded, %d failed cleanly during the restarts", len(results), load.ok.Load(), failed)
}

// stopNow shuts the sidecar down with no time to drain.
func (s *e2eSidecar) stopNow() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.Shutdown(ctx)
}

// connectionsTotal sums idscp2_connections_total over roles.
func e2eConnections(t *testing.T, metricsURL string) float64 {
	v, _ := e2eMetric(e2eScrape(t, metricsURL), "idscp2_connections_total")
	return v
}

func e2eWaitPool(t *testing.T, metricsURL string, n float64) {
	t.Helper()
	e2eEventually(t, 10*time.Second, fmt.Sprintf("%v pooled connections", n), func() bool {
		v, _ := e2eMetric(e2eScrape(t, metricsURL), "idscp2_sidecar_pool_connections", "peer=provider")
		return v == n
	})
}

// TestE2EReloadUnderLoad: routes and access rules are replaced while
// requests flow; no request fails because of it, no connection is
// re-established, and the new rules apply afterwards.
func TestE2EReloadUnderLoad(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	v1 := fmt.Sprintf(`    - name: api
      backend: %[1]s
      match: {pathPrefix: /api}
    - name: gated
      backend: %[1]s
      match: {pathPrefix: /gated}
      allow: {minSecurityProfile: idsc:TRUST_SECURITY_PROFILE}
`, env.BackendURL)
	v2 := fmt.Sprintf(`    - name: api
      backend: %[1]s
      match: {pathPrefix: /api}
    - name: gated
      backend: %[1]s
      match: {pathPrefix: /gated}
      allow: {subjects: [%[2]q]}
    - name: added
      backend: %[1]s
      match: {pathPrefix: /added}
`, env.BackendURL, env.subject(t, "client"))
	prov := env.launch(t, "provider", env.providerYAML("127.0.0.1:0", v1))
	cons := env.launch(t, "consumer", env.consumerYAML(prov.ingress, "", ""))
	u := cons.egress[0]
	c := e2eClient(t, 20*time.Second)

	e2eExpect(t, "api before", e2eMust(t, c, "GET", u+"/api/x", nil), http.StatusOK)
	e2eExpect(t, "gated before", e2eMust(t, c, "GET", u+"/gated/x", nil), http.StatusForbidden)
	e2eExpect(t, "added before", e2eMust(t, c, "GET", u+"/added/x", nil), http.StatusNotFound)
	e2eWaitPool(t, cons.metrics(), 2)
	provConns, consConns := e2eConnections(t, prov.metrics()), e2eConnections(t, cons.metrics())

	load := e2eStartLoad(t, u, 8, func(w, i int) (string, string, []byte) {
		if w == 0 {
			return "GET", "/gated/x", nil // 403 or 200, depending on the rule at the time
		}
		return "POST", "/api/echo", []byte(fmt.Sprintf("w%d-%d", w, i))
	})
	load.waitOK(t, 50, "traffic before the reload")
	for i, routes := range []string{v2, v1, v2, v1, v2} {
		if err := os.WriteFile(prov.path, []byte(env.providerYAML("127.0.0.1:0", routes)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(prov.path)
		if err != nil {
			t.Fatalf("reload %d: config.Load: %v", i, err)
		}
		if err := prov.Reload(cfg); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		load.waitOK(t, 20, "traffic after a reload")
	}
	for id, o := range load.finish() {
		switch {
		case o.err != nil:
			t.Errorf("%s: %v", id, o.err)
		case o.path == "/gated/x" && (o.status == http.StatusOK || o.status == http.StatusForbidden):
		case o.status != http.StatusOK || !bytes.Equal(o.body, o.sent):
			t.Errorf("%s %s %s during the reloads: %d %q", id, o.method, o.path, o.status, e2eClip(o.body))
		}
	}

	r := e2eMust(t, c, "GET", u+"/gated/x", nil, "X-Request-Id: gated-after")
	e2eExpect(t, "gated after the reload", r, http.StatusOK)
	if env.be.get("gated-after") == nil {
		t.Errorf("the backend did not see the request the new rule admits")
	}
	e2eExpect(t, "added after the reload", e2eMust(t, c, "GET", u+"/added/x", nil), http.StatusOK)
	if got := e2eConnections(t, prov.metrics()); got != provConns {
		t.Errorf("provider: idscp2_connections_total went from %v to %v: reloading dropped connections", provConns, got)
	}
	if got := e2eConnections(t, cons.metrics()); got != consConns {
		t.Errorf("consumer: idscp2_connections_total went from %v to %v: reloading dropped connections", consConns, got)
	}
	if v, _ := e2eMetric(e2eScrape(t, prov.metrics()), "idscp2_config_last_reload_successful"); v != 1 {
		t.Errorf("idscp2_config_last_reload_successful = %v after good reloads, want 1", v)
	}
}

// TestE2EReloadRefused: a new configuration that is invalid is refused and
// the running one keeps working.
func TestE2EReloadRefused(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	v1 := fmt.Sprintf(`    - name: api
      backend: %[1]s
      match: {pathPrefix: /api}
    - name: gated
      backend: %[1]s
      match: {pathPrefix: /gated}
      allow: {minSecurityProfile: idsc:TRUST_SECURITY_PROFILE}
`, env.BackendURL)
	v2 := strings.Replace(v1, "idsc:TRUST_SECURITY_PROFILE", "idsc:BASE_SECURITY_PROFILE", 1)
	prov := env.launch(t, "provider", env.providerYAML("127.0.0.1:0", v1))
	cons := env.launch(t, "consumer", env.consumerYAML(prov.ingress, "", ""))
	u := cons.egress[0]
	c := e2eClient(t, 20*time.Second)
	check := func(when string) {
		t.Helper()
		e2eExpect(t, "api "+when, e2eMust(t, c, "POST", u+"/api/echo", []byte("still here")), http.StatusOK, "still here")
		e2eExpect(t, "gated "+when, e2eMust(t, c, "GET", u+"/gated/x", nil), http.StatusForbidden)
	}
	check("before")
	e2eWaitPool(t, cons.metrics(), 2)
	conns := e2eConnections(t, prov.metrics())

	// 1. A file that does not parse: Load names the key and its line.
	bad := env.providerYAML("127.0.0.1:0", strings.Replace(v2, "      backend:", "      backnd:", 1))
	if err := os.WriteFile(prov.path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(prov.path); err == nil || !strings.Contains(err.Error(), `"backnd"`) || !strings.Contains(err.Error(), "provider.yaml:") {
		t.Errorf("config.Load of a file with an unknown key: %v, want an error naming the key and its line", err)
	}
	check("after a configuration that does not parse")

	// 2. A configuration that loads, but whose certificate is replaced by
	// garbage before the reload reads it (a rotation caught half-way):
	// Reload refuses it and keeps everything as it was.
	dir := t.TempDir()
	for _, f := range []string{"server.pem", "server-key.pem"} {
		b, err := os.ReadFile(env.pki(f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := strings.Replace(env.providerYAML("127.0.0.1:0", v2), env.pki("server"), filepath.Join(dir, "server"), 2)
	if err := os.WriteFile(prov.path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(prov.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), []byte("-----BEGIN GARBAGE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prov.Reload(cfg); err == nil {
		t.Errorf("Reload with an unreadable certificate succeeded")
	}
	if v, _ := e2eMetric(e2eScrape(t, prov.metrics()), "idscp2_config_last_reload_successful"); v != 0 {
		t.Errorf("idscp2_config_last_reload_successful = %v after a refused reload, want 0", v)
	}
	check("after a refused reload")
	if got := e2eConnections(t, prov.metrics()); got != conns {
		t.Errorf("idscp2_connections_total went from %v to %v", conns, got)
	}

	// 3. The same configuration with its certificate back: accepted.
	b, _ := os.ReadFile(env.pki("server.pem"))
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prov.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if v, _ := e2eMetric(e2eScrape(t, prov.metrics()), "idscp2_config_last_reload_successful"); v != 1 {
		t.Errorf("idscp2_config_last_reload_successful = %v after a good reload, want 1", v)
	}
	e2eExpect(t, "gated after a good reload", e2eMust(t, c, "GET", u+"/gated/x", nil), http.StatusOK)
}

// TestE2EReloadAppliesEgressSettings: config.RestartRequired documents
// egress settings other than listen, and limits, as applied by a reload.
func TestE2EReloadAppliesEgressSettings(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	cons := env.launch(t, "consumer", env.consumerYAML(env.ProviderAddr, "", ""))
	c := e2eClient(t, 20*time.Second)
	body := bytes.Repeat([]byte("z"), 4<<10)
	e2eExpect(t, "4 KiB before", e2eMust(t, c, "POST", cons.egress[0]+"/echo", body), http.StatusOK)

	old, err := config.Load(cons.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cons.path, []byte(env.consumerYAML(env.ProviderAddr, "    maxBodyBytes: 1KiB\n", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	next, err := config.Load(cons.path)
	if err != nil {
		t.Fatal(err)
	}
	if r := config.RestartRequired(old, next); len(r) != 0 {
		t.Fatalf("RestartRequired = %q; egress[].maxBodyBytes is documented as live", r)
	}
	if err := cons.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	r := e2eMust(t, c, "POST", cons.egress[0]+"/echo", body)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("4 KiB after reloading egress[0].maxBodyBytes: 1KiB: status %d, want 413 (the reload was accepted without a restart warning, but not applied)", r.Status)
	}
}

// TestE2EConsumerDrain: Consumer.Shutdown with requests in flight lets them
// finish, refuses new ones, closes its peer connections with USER_SHUTDOWN
// and returns.
func TestE2EConsumerDrain(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	c := e2eClient(t, 30*time.Second)
	u := env.ConsumerURL
	e2eExpect(t, "warm-up", e2eMust(t, c, "GET", u+"/echo", nil), http.StatusOK)
	e2eWaitPool(t, env.ConsumerMetrics, 2)
	userShutdowns := func() float64 {
		v, _ := e2eMetric(e2eScrape(t, env.ProviderMetrics), "idscp2_closes_total", "cause=USER_SHUTDOWN", "by=peer")
		return v
	}
	before := userShutdowns()

	const n = 4
	results := make([]*e2eResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e2eDo(c, "POST", u+"/gate", []byte(fmt.Sprint("in-flight-", i)), fmt.Sprint("X-Request-Id: drain-", i))
		}()
	}
	e2eWaitArrivals(t, env.be, n, 10*time.Second)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- env.Consumer.Shutdown(ctx)
	}()
	addr := strings.TrimPrefix(u, "http://")
	e2eEventually(t, 10*time.Second, "the egress listener to close", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	if _, err := e2eDo(e2eClient(t, 5*time.Second), "GET", u+"/echo", nil); err == nil {
		t.Errorf("a new request was served during the drain")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while %d requests were in flight", err, n)
	default:
	}

	env.be.release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("in-flight request %d: %v", i, errs[i])
			continue
		}
		e2eExpect(t, "in-flight request", results[i], http.StatusOK, fmt.Sprint("in-flight-", i))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	e2eEventually(t, 10*time.Second, "the provider to see IdscpClose USER_SHUTDOWN from the consumer", func() bool {
		return userShutdowns() >= before+2
	})
}

// TestE2EProviderDrain: Provider.Shutdown with requests in flight lets them
// finish, refuses new connections and new requests, closes its peer
// connections with USER_SHUTDOWN and returns; the consumer then reports
// the peer as down.
func TestE2EProviderDrain(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	cons := env.launch(t, "consumer", env.consumerYAML(env.ProviderAddr, "    timeout: 3s\n", ""))
	c := e2eClient(t, 30*time.Second)
	u := cons.egress[0]
	e2eExpect(t, "warm-up", e2eMust(t, c, "GET", u+"/echo", nil), http.StatusOK)
	e2eWaitPool(t, cons.metrics(), 2)
	userShutdowns := func() float64 {
		v, _ := e2eMetric(e2eScrape(t, cons.metrics()), "idscp2_closes_total", "cause=USER_SHUTDOWN", "by=peer")
		return v
	}
	before := userShutdowns()

	const n = 4
	results := make([]*e2eResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e2eDo(c, "POST", u+"/gate", []byte(fmt.Sprint("in-flight-", i)), fmt.Sprint("X-Request-Id: pdrain-", i))
		}()
	}
	e2eWaitArrivals(t, env.be, n, 10*time.Second)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- env.Provider.Shutdown(ctx)
	}()
	e2eEventually(t, 10*time.Second, "the IDSCP2 listener to close", func() bool {
		conn, err := net.Dial("tcp", env.ProviderAddr)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	// Requests on the established connections are refused while draining.
	var refused *e2eResult
	e2eEventually(t, 10*time.Second, "a request to be refused during the drain", func() bool {
		r, err := e2eDo(c, "GET", u+"/echo", nil)
		if err != nil {
			t.Fatalf("request during the drain: %v", err)
		}
		if r.Status != http.StatusOK {
			refused = r
			return true
		}
		return false
	})
	e2eExpect(t, "request during the drain", refused, http.StatusServiceUnavailable, "shutting down")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while %d requests were in flight", err, n)
	default:
	}

	env.be.release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("in-flight request %d: %v", i, errs[i])
			continue
		}
		e2eExpect(t, "in-flight request", results[i], http.StatusOK, fmt.Sprint("in-flight-", i))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	e2eEventually(t, 10*time.Second, "the consumer to see IdscpClose USER_SHUTDOWN from the provider", func() bool {
		return userShutdowns() >= before+2
	})
	r := e2eMust(t, c, "GET", u+"/echo", nil)
	e2eExpect(t, "provider gone", r, http.StatusBadGateway, "peer provider", "connection refused")
}

// TestE2EProviderDrainTimeout: a drain that runs out of time still returns,
// and the request it gave up on fails cleanly at the consumer.
func TestE2EProviderDrainTimeout(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	c := e2eClient(t, 30*time.Second)
	e2eExpect(t, "warm-up", e2eMust(t, c, "GET", env.ConsumerURL+"/echo", nil), http.StatusOK)

	var res *e2eResult
	var resErr error
	fin := make(chan struct{})
	go func() {
		defer close(fin)
		res, resErr = e2eDo(c, "POST", env.ConsumerURL+"/gate", []byte("stuck"), "X-Request-Id: stuck")
	}()
	e2eWaitArrivals(t, env.be, 1, 10*time.Second)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := env.Provider.Shutdown(ctx)
	if err == nil {
		t.Errorf("Shutdown returned nil although a request was still running when its time ran out")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown with 500ms to drain took %v", d)
	}
	select {
	case <-fin:
	case <-time.After(20 * time.Second):
		t.Fatal("the abandoned request got no answer")
	}
	if resErr != nil {
		t.Fatalf("abandoned request: %v", resErr)
	}
	if res.Status != http.StatusBadGateway && res.Status != http.StatusServiceUnavailable {
		t.Errorf("abandoned request: %d %q, want 502 or 503", res.Status, e2eClip(res.Body))
	}
	if n := env.be.count("stuck"); n != 1 {
		t.Errorf("the backend executed the abandoned POST %d times, want once", n)
	}
}
