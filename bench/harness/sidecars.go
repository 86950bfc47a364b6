package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// issuerName is the iss of every DAT in the closed bench data space
// (daps.mode local: all sidecars share one signing key, so no DAPS process
// takes part in the measurement).
const issuerName = "idscp2-bench"

// buildSidecar builds ./cmd/idscp2-sidecar of the module at root into dir.
func buildSidecar(root, dir string) (string, error) {
	bin := filepath.Join(dir, "idscp2-sidecar")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/idscp2-sidecar")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/idscp2-sidecar: %v\n%s", err, out)
	}
	return bin, nil
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory; run from the repository")
		}
		dir = parent
	}
}

// writeIssuerKey writes the shared DAT signing key (PKCS#8 PEM).
func writeIssuerKey(path string) (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return key, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

type sidecarPair struct {
	consumer, provider *proc
	url                string // the consumer's egress
	consumerAdmin      string // http://host:port
	providerAdmin      string
	ingress            string // the provider's IDSCP2 listener
}

func commonConfig(dir, cert, key string) string {
	pki := filepath.Join(dir, "pki")
	return fmt.Sprintf(`identity:
  cert: %s
  key: %s
  ca: %s
daps:
  mode: local
  issuer: %s
  keyFile: %s
attestation:
  supportedSuites: [Dummy2]
  expectedSuites: [Dummy2]
log:
  level: warn
`, filepath.Join(pki, cert), filepath.Join(pki, key), filepath.Join(pki, "ca.pem"), issuerName, filepath.Join(dir, "issuer-key.pem"))
}

// providerConfig is an ingress-only sidecar in front of backendAddr.
func providerConfig(dir, ingress, admin, backendAddr string) string {
	return commonConfig(dir, "server.pem", "server-key.pem") + fmt.Sprintf(`ingress:
  listen: %s
  routes:
    - name: api
      backend: http://%s
      mode: http
admin:
  listen: %s
  pprof: true
`, ingress, backendAddr, admin)
}

// startProvider starts one provider sidecar process named name.
func startProvider(ctx context.Context, bin, dir, name, backendAddr string) (p *proc, ingress, admin string, err error) {
	if ingress, err = freePort(); err != nil {
		return
	}
	if admin, err = freePort(); err != nil {
		return
	}
	path := filepath.Join(dir, name+".yaml")
	if err = os.WriteFile(path, []byte(providerConfig(dir, ingress, admin, backendAddr)), 0o600); err != nil {
		return
	}
	if p, err = startProc(dir, name, bin, "run", "--config", path); err != nil {
		return
	}
	for _, a := range []string{ingress, admin} {
		if err = waitTCP(ctx, p, a, 15*time.Second); err != nil {
			p.stop()
			return nil, "", "", err
		}
	}
	return p, ingress, "http://" + admin, nil
}

// startSidecars starts (c): consumer egress → IDSCP2/TCP → provider ingress
// → backend, both as processes of the built binary.
func startSidecars(ctx context.Context, bin, dir, backendAddr string, poolSize int) (*sidecarPair, error) {
	sp := &sidecarPair{}
	var err error
	if sp.provider, sp.ingress, sp.providerAdmin, err = startProvider(ctx, bin, dir, "sidecar-provider", backendAddr); err != nil {
		return nil, err
	}
	egress, err := freePort()
	if err != nil {
		sp.close()
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		sp.close()
		return nil, err
	}
	consumer := commonConfig(dir, "client.pem", "client-key.pem") + fmt.Sprintf(`peers:
  - name: provider
    address: %s
%segress:
  - listen: %s
    peer: provider
admin:
  listen: %s
  pprof: true
`, sp.ingress, poolLine(poolSize), egress, admin)
	path := filepath.Join(dir, "sidecar-consumer.yaml")
	if err := os.WriteFile(path, []byte(consumer), 0o600); err != nil {
		sp.close()
		return nil, err
	}
	if sp.consumer, err = startProc(dir, "sidecar-consumer", bin, "run", "--config", path); err != nil {
		sp.close()
		return nil, err
	}
	for _, a := range []string{egress, admin} {
		if err := waitTCP(ctx, sp.consumer, a, 15*time.Second); err != nil {
			sp.close()
			return nil, err
		}
	}
	sp.url, sp.consumerAdmin = "http://"+egress, "http://"+admin
	return sp, nil
}

// poolLine sets peers[].poolSize unless 0 (the default, 2, applies).
func poolLine(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf("    poolSize: %d\n", n)
}

func (s *sidecarPair) procs() procSet { return procSet{s.consumer, s.provider} }

func (s *sidecarPair) close() {
	if s == nil {
		return
	}
	s.consumer.stop()
	s.provider.stop()
}

// waitOK retries GET url until it answers 200 (the first request through a
// proxy pair may wait for its connections to be established).
func waitOK(ctx context.Context, url string, timeout time.Duration) error {
	c := newClient(1)
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("GET %s: no 200 within %v (last: %s)", url, timeout, last)
}

// promValue reads one unlabelled sample from a Prometheus text endpoint.
func promValue(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("%s: no metric %s", url, name)
}

// fetchProfile saves a CPU profile of secs seconds from a sidecar's admin
// pprof endpoint to path.
func fetchProfile(admin string, secs int, path string) error {
	c := &http.Client{Timeout: time.Duration(secs+30) * time.Second}
	resp, err := c.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
