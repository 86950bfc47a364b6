package sidecar_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
)

// TestE2EIngressConcurrencyLimit: ingress.maxConcurrentRequests is
// documented (config.Ingress, example.yaml) as "across all peers; more are
// answered TEMPORARILY_NOT_AVAILABLE": a request over the limit must be
// refused at once (503), not left waiting for a slot.
func TestE2EIngressConcurrencyLimit(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	prov := env.launch(t, "provider", env.identityYAML("server")+fmt.Sprintf(`ingress:
  listen: 127.0.0.1:0
  maxConcurrentRequests: 1
  routes:
    - name: api
      backend: %s
`, env.BackendURL))
	cons := env.launch(t, "consumer", env.consumerYAML(prov.ingress, "    timeout: 5s\n", ""))
	c := e2eClient(t, 30*time.Second)
	e2eExpect(t, "warm-up", e2eMust(t, c, "GET", cons.egress[0]+"/echo", nil), http.StatusOK)

	held := make(chan *e2eResult, 1)
	go func() {
		r, err := e2eDo(c, "POST", cons.egress[0]+"/gate", []byte("held"))
		if err != nil {
			r = &e2eResult{Body: []byte(err.Error())}
		}
		held <- r
	}()
	e2eWaitArrivals(t, env.be, 1, 10*time.Second)
	r := e2eMust(t, c, "GET", cons.egress[0]+"/echo", nil)
	env.be.release()
	h := <-held
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("a request over ingress.maxConcurrentRequests: %d %q, want 503 (TEMPORARILY_NOT_AVAILABLE) at once", r.Status, e2eClip(r.Body))
	}
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("503 from the peer's full ingress without Retry-After: %v", r.Header)
	}
	e2eExpect(t, "held request", h, http.StatusOK, "held")
}

// TestE2EStartContextEnds: Sidecar.Start "serves until Shutdown". When the
// context given to Start ends, the sidecar must either keep serving or be
// visibly down (peers refused, /readyz not ready) — not accept and
// handshake IDSCP2 connections whose requests are never read.
func TestE2EStartContextEnds(t *testing.T) {
	t.Parallel()
	env := e2eStart(t, demo.Options{})
	path := env.Dir + "/provider-ctx.yaml"
	e2eWrite(t, path, env.providerYAML("127.0.0.1:0", fmt.Sprintf("    - name: api\n      backend: %s\n", env.BackendURL)))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := sidecar.New(cfg, sidecar.Options{Logger: e2eLogger("provider-ctx")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := prov.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		prov.Shutdown(sctx)
	})
	ing, _, admin := prov.Addrs()
	cancel() // e.g. a caller's start-up deadline

	cons := env.launch(t, "consumer", env.consumerYAML(ing, "    timeout: 3s\n", ""))
	c := e2eClient(t, 30*time.Second)
	r := e2eMust(t, c, "GET", cons.egress[0]+"/echo", []byte("ping"))
	ready, _ := e2eDo(c, "GET", "http://"+admin+"/readyz", nil)
	switch {
	case r.Status == http.StatusOK:
	case r.Status == http.StatusBadGateway && (ready == nil || ready.Status != http.StatusOK):
	default:
		readyz := "unreachable"
		if ready != nil {
			readyz = fmt.Sprint(ready.Status)
		}
		t.Errorf("after Start's context ended: request %d %q with the provider's /readyz %s; want 200, or 502 with /readyz not ready",
			r.Status, e2eClip(r.Body), readyz)
	}
}
