// Package demo assembles the embedded default on loopback: a throw-away
// PKI, the built-in DAPS, a sample provider service, and two sidecars
// peered over IDSCP2 — the consumer's egress in front of the provider's
// ingress. `idscp2-sidecar demo` runs it; the end-to-end tests use it too.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// Options tune the environment (tests override them).
type Options struct {
	Dir    string       // working directory for PKI, DAPS state and configs; required
	Logger *slog.Logger // nil: discard
	// ProviderExtra and ConsumerExtra are appended to the generated YAML
	// configurations (e.g. limits for a test).
	ProviderExtra, ConsumerExtra string
	// Backend replaces the sample provider service.
	Backend http.Handler
	// DATLifetime of the DAPS's tokens (default 1 h).
	DATLifetime time.Duration
}

// Env is a running demo environment.
type Env struct {
	Dir                              string
	DAPSURL                          string
	BackendURL                       string
	ProviderAddr                     string // IDSCP2 ingress
	ConsumerURL                      string // egress: point plain HTTP or IDS multipart clients here
	ProviderMetrics, ConsumerMetrics string

	Consumer, Provider *sidecar.Sidecar
	ConsumerConfig     string // paths of the generated configuration files
	ProviderConfig     string

	servers []*http.Server
}

// Start builds and starts everything.
func Start(ctx context.Context, o Options) (*Env, error) {
	if o.Dir == "" {
		return nil, errors.New("demo: Options.Dir is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	env := &Env{Dir: o.Dir}
	ok := false
	defer func() {
		if !ok {
			env.Close()
		}
	}()

	b, err := testpki.NewBundle()
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(o.Dir, "pki")
	if err := b.WriteFiles(pki); err != nil {
		return nil, err
	}

	// The built-in DAPS knows both connectors by their certificates.
	dapsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	env.DAPSURL = "http://" + dapsLn.Addr().String()
	lifetime := o.DATLifetime
	if lifetime == 0 {
		lifetime = time.Hour
	}
	daps, err := dapsserver.New(dapsserver.Config{
		Issuer:        env.DAPSURL,
		Logger:        o.Logger.With("component", "daps"),
		StateDir:      filepath.Join(o.Dir, "daps"),
		TokenLifetime: lifetime,
		Clients: []dapsserver.Client{
			{Certificate: b.Client.Cert, SecurityProfile: "idsc:BASE_SECURITY_PROFILE", ReferringConnector: "https://consumer.demo.local/"},
			{Certificate: b.Server.Cert, SecurityProfile: "idsc:TRUST_SECURITY_PROFILE", ReferringConnector: "https://provider.demo.local/"},
		},
	})
	if err != nil {
		dapsLn.Close()
		return nil, err
	}
	env.serve(dapsLn, daps)

	backend := o.Backend
	if backend == nil {
		backend = SampleBackend()
	}
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	env.BackendURL = "http://" + beLn.Addr().String()
	env.serve(beLn, backend)

	common := func(cert, key string) string {
		return fmt.Sprintf(`identity:
  cert: %s
  key: %s
  ca: %s
daps:
  mode: daps
  url: %s
attestation:
  supportedSuites: [Dummy2, Dummy]
  expectedSuites: [Dummy2, Dummy]
log:
  level: info
`, filepath.Join(pki, cert), filepath.Join(pki, key), filepath.Join(pki, "ca.pem"), env.DAPSURL)
	}
	provider := common("server.pem", "server-key.pem") + fmt.Sprintf(`ingress:
  listen: 127.0.0.1:0
  routes:
    - name: ids-components
      backend: %[1]s/ids
      mode: multipart
      match:
        messageTypes: [ids:DescriptionRequestMessage, ids:ConnectorUpdateMessage, ids:QueryMessage, ids:LogMessage]
    - name: api
      backend: %[1]s
      mode: http
      allow:
        minSecurityProfile: idsc:BASE_SECURITY_PROFILE
admin:
  listen: 127.0.0.1:0
`, env.BackendURL) + o.ProviderExtra
	env.ProviderConfig = filepath.Join(o.Dir, "provider.yaml")
	if err := os.WriteFile(env.ProviderConfig, []byte(provider), 0o600); err != nil {
		return nil, err
	}
	pcfg, err := config.Load(env.ProviderConfig)
	if err != nil {
		return nil, fmt.Errorf("provider configuration: %w", err)
	}
	if env.Provider, err = sidecar.New(pcfg, sidecar.Options{Logger: o.Logger.With("sidecar", "provider")}); err != nil {
		return nil, err
	}
	if err := env.Provider.Start(ctx); err != nil {
		return nil, err
	}
	ing, _, padmin := env.Provider.Addrs()
	_, port, _ := net.SplitHostPort(ing)
	env.ProviderAddr = net.JoinHostPort("localhost", port)
	env.ProviderMetrics = "http://" + padmin + "/metrics"

	consumer := common("client.pem", "client-key.pem") + fmt.Sprintf(`peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
admin:
  listen: 127.0.0.1:0
`, env.ProviderAddr) + o.ConsumerExtra
	env.ConsumerConfig = filepath.Join(o.Dir, "consumer.yaml")
	if err := os.WriteFile(env.ConsumerConfig, []byte(consumer), 0o600); err != nil {
		return nil, err
	}
	ccfg, err := config.Load(env.ConsumerConfig)
	if err != nil {
		return nil, fmt.Errorf("consumer configuration: %w", err)
	}
	if env.Consumer, err = sidecar.New(ccfg, sidecar.Options{Logger: o.Logger.With("sidecar", "consumer")}); err != nil {
		return nil, err
	}
	if err := env.Consumer.Start(ctx); err != nil {
		return nil, err
	}
	_, eg, cadmin := env.Consumer.Addrs()
	env.ConsumerURL = "http://" + eg[0]
	env.ConsumerMetrics = "http://" + cadmin + "/metrics"
	ok = true
	return env, nil
}

func (e *Env) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	e.servers = append(e.servers, srv)
	go srv.Serve(ln)
}

// Close drains both sidecars and stops the servers.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.Consumer != nil {
		e.Consumer.Shutdown(ctx)
	}
	if e.Provider != nil {
		e.Provider.Shutdown(ctx)
	}
	for _, s := range e.servers {
		s.Close()
	}
}

// SampleBackend is the demo's provider service: an ordinary HTTP API that
// knows nothing about IDS (/hello, /echo) and an IDS-aware multipart
// endpoint (/ids) answering description requests as a connector would.
func SampleBackend() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"greeting":        "hello from the provider's backend",
			"peerSubject":     r.Header.Get("X-IDS-Peer-Subject"),
			"peerConnector":   r.Header.Get("X-IDS-Peer-Connector"),
			"securityProfile": r.Header.Get("X-IDS-Peer-Security-Profile"),
			"attestedWith":    r.Header.Get("X-IDS-Peer-Suite"),
		})
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("X-Echo-Method", r.Method)
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("POST /ids", func(w http.ResponseWriter, r *http.Request) {
		mp, err := idsmsg.ReadMultipart(r.Header.Get("Content-Type"), r.Body, 16<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := idsmsg.Parse(mp.Header)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		typ, payload := "ids:MessageProcessedNotificationMessage", []byte(nil)
		if req.Type == "ids:DescriptionRequestMessage" {
			typ = "ids:DescriptionResponseMessage"
			payload = []byte(`{"@context":"https://w3id.org/idsa/contexts/context.jsonld","@type":"ids:BaseConnector","@id":"https://provider.demo.local/","ids:title":[{"@value":"Demo provider"}]}`)
		}
		resp := idsmsg.NewResponse(typ, req, idsmsg.Self{ConnectorID: "https://provider.demo.local/"})
		header, err := resp.Marshal()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var body strings.Builder
		ct, err := idsmsg.WriteMultipart(&body, &idsmsg.Multipart{Header: header, Payload: payload, PayloadType: "application/ld+json"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ct)
		io.WriteString(w, body.String())
	})
	return mux
}
