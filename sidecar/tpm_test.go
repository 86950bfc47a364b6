package sidecar_test

// The TPM suite through two sidecars: the consumer proves itself with an AK
// in swtpm, the provider expects TPM, checks the AK certificate against its
// AK CA and the PCRs against golden values (a file and the consumer DAT's
// pcrGoldenValues claim). Everything runs on 127.0.0.1: swtpm, the built-in
// DAPS, both sidecars, a backend. Set E2E_LOG=1 to see the sidecars' logs.

import (
	"context"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/swtpmtest"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
)

func TestTPMSidecarAttestation(t *testing.T) {
	swtpmAddr := tpmSCSwtpm(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	// Provision the consumer's TPM as `idscp2-sidecar tpm` does: a persisted
	// AK at the default handle, its certificate from the AK CA, and golden
	// values from the current PCRs.
	akCA, err := testpki.NewCA("IDSCP2 Test AK CA")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := tpm.OpenSwtpm(swtpmAddr)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.CreateAK(ctx, dev, tpm.AKOptions{Algorithm: tpm.RSA2048, Persist: true})
	if err != nil {
		t.Fatal(err)
	}
	akCert, err := tpm.IssueAKCertificate(akCA.Cert, akCA.Key, ak.Public(), pkix.Name{CommonName: "consumer AK"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := dev.ReadPCRs(ctx, tpm.MaskAll)
	if err != nil {
		t.Fatal(err)
	}
	ak.Close()
	dev.Close() // swtpm serves one client at a time: the consumer sidecar needs it
	claim, err := tpm.GoldenValuesClaim(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	akCertPath := filepath.Join(dir, "ak-cert.pem")
	akCAPath := filepath.Join(dir, "ak-ca.pem")
	goldenPath := filepath.Join(dir, "golden.json")
	tpmSCWrite(t, akCertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: akCert}))
	tpmSCWrite(t, akCAPath, akCA.CertPEM)
	if err := tpm.WriteGoldenValues(goldenPath, pcrs); err != nil {
		t.Fatal(err)
	}

	// TLS PKI and the built-in DAPS; the consumer's DAT carries its golden
	// values as the claim pcrGoldenValues.
	b, err := testpki.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(dir, "pki")
	if err := b.WriteFiles(pki); err != nil {
		t.Fatal(err)
	}
	dapsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dapsURL := "http://" + dapsLn.Addr().String()
	daps, err := dapsserver.New(dapsserver.Config{
		Issuer:        dapsURL,
		Logger:        tpmSCLogger("daps"),
		StateDir:      filepath.Join(dir, "daps"),
		TokenLifetime: time.Hour,
		Clients: []dapsserver.Client{
			{Certificate: b.Client.Cert, ReferringConnector: "https://consumer.tpm.test/",
				Claims: map[string]any{tpm.ClaimGoldenValues: claim}},
			{Certificate: b.Server.Cert, ReferringConnector: "https://provider.tpm.test/"},
		},
	})
	if err != nil {
		dapsLn.Close()
		t.Fatal(err)
	}
	dapsSrv := &http.Server{Handler: daps, ReadHeaderTimeout: 10 * time.Second}
	go dapsSrv.Serve(dapsLn)
	t.Cleanup(func() { dapsSrv.Close() })

	// The provider's backend records the suite the peer was attested with.
	var mu sync.Mutex
	var suites []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		suites = append(suites, r.Header.Get("X-IDS-Peer-Suite"))
		mu.Unlock()
		io.WriteString(w, "attested with "+r.Header.Get("X-IDS-Peer-Suite"))
	}))
	t.Cleanup(backend.Close)
	backendSeen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), suites...)
	}

	common := func(cert, key string) string {
		return fmt.Sprintf(`identity:
  cert: %s
  key: %s
  ca: %s
daps:
  mode: daps
  url: %s
admin:
  listen: ""
`, filepath.Join(pki, cert), filepath.Join(pki, key), filepath.Join(pki, "ca.pem"), dapsURL)
	}
	// The provider verifies: TPM expected, BASIC (PCRs 0-11), AK certificate
	// chaining to the AK CA, golden values from the file and from the DAT.
	provider := tpmSCStart(t, ctx, filepath.Join(dir, "provider.yaml"), common("server.pem", "server-key.pem")+fmt.Sprintf(`attestation:
  supportedSuites: [Dummy2]
  expectedSuites: [TPM]
  tpm:
    roots: %s
    goldenValues: %s
    goldenValuesFromDat: true
    attestationType: BASIC
ingress:
  listen: 127.0.0.1:0
  routes:
    - name: api
      backend: %s
      mode: http
      allow:
        suites: [TPM]
`, akCAPath, goldenPath, backend.URL))
	t.Cleanup(func() { tpmSCShutdown(provider) })
	ing, _, _ := provider.Addrs()
	_, port, _ := net.SplitHostPort(ing)

	// The consumer proves with the AK in swtpm.
	consumerPath := filepath.Join(dir, "consumer.yaml")
	consumerYAML := common("client.pem", "client-key.pem") + fmt.Sprintf(`attestation:
  supportedSuites: [TPM]
  expectedSuites: [Dummy2]
  tpm:
    address: %s
    akHandle: 0x81010002
    akCert: %s
peers:
  - name: provider
    address: localhost:%s
egress:
  - listen: 127.0.0.1:0
    peer: provider
    timeout: 3s
`, swtpmAddr, akCertPath, port)
	consumer := tpmSCStart(t, ctx, consumerPath, consumerYAML)
	t.Cleanup(func() {
		if consumer != nil {
			tpmSCShutdown(consumer)
		}
	})

	client := &http.Client{Timeout: 20 * time.Second}
	get := func(s *sidecar.Sidecar) (int, string) {
		t.Helper()
		_, eg, _ := s.Addrs()
		resp, err := client.Get("http://" + eg[0] + "/data")
		if err != nil {
			t.Fatalf("GET through the egress: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// 1. Healthy PCRs: the handshake attests the consumer with TPM.
	start := time.Now()
	status, body := get(consumer)
	if status != http.StatusOK {
		t.Fatalf("GET with a healthy TPM: %d %s", status, body)
	}
	t.Logf("attested request: %d %q in %s", status, body, time.Since(start).Round(time.Millisecond))
	if got := backendSeen(); len(got) != 1 || got[0] != tpm.Suite {
		t.Fatalf("the backend saw X-IDS-Peer-Suite %q, want [TPM]", got)
	}
	if n := tpmSCFailures(t, provider, "verifier", ""); n != 0 {
		t.Fatalf("the provider refused %v TPM attestations of a healthy consumer", n)
	}

	// 2. Something unexpected is measured into PCR 7 (secure-boot policy,
	// part of BASIC). The consumer must let go of swtpm for that; its
	// restart then makes a new connection, whose attestation must fail.
	err = tpmSCShutdown(consumer)
	consumer = nil
	if err != nil {
		t.Fatalf("consumer shutdown: %v", err)
	}
	dev, err = tpm.OpenSwtpm(swtpmAddr)
	if err != nil {
		t.Fatal(err)
	}
	measurement := sha256.Sum256([]byte("an unexpected boot component"))
	if err := dev.ExtendPCR(ctx, 7, measurement[:]); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	consumer = tpmSCStart(t, ctx, consumerPath, consumerYAML)

	start = time.Now()
	status, body = get(consumer)
	t.Logf("request after the PCR extension: %d %q in %s", status, body, time.Since(start).Round(time.Millisecond))
	if status != http.StatusBadGateway {
		t.Fatalf("GET with PCR 7 changed: %d %s; want 502", status, body)
	}
	if !strings.Contains(body, "RA_VERIFIER_FAILED") {
		t.Errorf("the 502 does not name the failed remote attestation (RA_VERIFIER_FAILED): %q", body)
	}
	if got := backendSeen(); len(got) != 1 {
		t.Errorf("the backend was reached by an unattested peer: %q", got)
	}
	if n := tpmSCFailures(t, provider, "verifier", string(tpm.ReasonPCRMismatch)); n < 1 {
		t.Errorf("the provider counted %v pcr_mismatch rejections, want at least 1", n)
	}
}

// ---- helpers (prefixed: the package's other tests have their own) ----

func tpmSCLogger(name string) *slog.Logger {
	if os.Getenv("E2E_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("sidecar", name)
}

func tpmSCWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tpmSCStart writes a configuration file, loads it and starts a sidecar.
func tpmSCStart(t *testing.T, ctx context.Context, path, yaml string) *sidecar.Sidecar {
	t.Helper()
	tpmSCWrite(t, path, []byte(yaml))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%s:\n%v\n%s", path, err, yaml)
	}
	s, err := sidecar.New(cfg, sidecar.Options{Logger: tpmSCLogger(strings.TrimSuffix(filepath.Base(path), ".yaml"))})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("%s: start: %v", path, err)
	}
	return s
}

func tpmSCShutdown(s *sidecar.Sidecar) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// tpmSCFailures sums the sidecar's TPM failure counter for a role and,
// if reason is not "", one reason.
func tpmSCFailures(t *testing.T, s *sidecar.Sidecar, role, reason string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { s.Metrics().TPMFailures.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["role"] == role && (reason == "" || labels["reason"] == reason) {
			sum += d.GetCounter().GetValue()
		}
	}
	return sum
}

// tpmSCSwtpm starts swtpm for the test and returns its data port's address.
func tpmSCSwtpm(t *testing.T) string {
	addr, _ := swtpmtest.Start(t)
	return addr
}
