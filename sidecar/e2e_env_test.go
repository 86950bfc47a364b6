package sidecar_test

// Shared machinery of the end-to-end tests (e2e_*_test.go): a recording
// backend, environments built with demo.Start, extra sidecars built from
// generated YAML against the same PKI and DAPS, HTTP and metrics helpers.
//
// Everything runs for real on 127.0.0.1: TLS, the built-in DAPS, IDSCP2,
// HTTP servers and clients. Set E2E_LOG=1 to see the sidecars' logs.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/daps"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// ---- logging ----

func e2eLogger(name string) *slog.Logger {
	if os.Getenv("E2E_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("e2e", name)
}

// ---- the recording backend ----

// e2eSeen is what the backend saw of one request, keyed by X-Request-Id.
type e2eSeen struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte // the first 64 KiB
	Len                    int
	Sum                    [32]byte
	Count                  int // executions under this id
}

// e2eIDSSeen is what the backend's IDS multipart endpoint saw, keyed by @id.
type e2eIDSSeen struct {
	Header      *idsmsg.Message
	RawHeader   []byte
	Payload     []byte
	PayloadType string
	HTTPHeader  http.Header
	Count       int
}

// e2eBackend is the provider's local service. It knows nothing about IDS
// except on /ids (an IDS-aware multipart endpoint, as a Broker or Clearing
// House would have). Paths (any prefix, so that routes may keep theirs):
//
//	/ids            IDS multipart: answers with correlationMessage set (except
//	                for LogMessage, where the sidecar must fill it in) and a
//	                bogus securityToken the provider sidecar must replace
//	…/status/{code} answers code with ETag, Location, Set-Cookie and an internal header
//	…/etag          conditional GET: 304 for If-None-Match "v1"
//	…/bytes256      the 256 byte values
//	…/blob/{n}      n deterministic pseudo-random bytes
//	…/whoami        the identity headers as text
//	…/slow?d=       sleeps d (default 1 h) or until the request is cancelled
//	…/gate          waits until release() (announces itself on arrived)
//	anything else   echo: body, Content-Type and X-Request-Id back; DELETE → 204
type e2eBackend struct {
	mu   sync.Mutex
	seen map[string]*e2eSeen
	ids  map[string]*e2eIDSSeen

	arrived     chan string
	gate        chan struct{}
	releaseOnce sync.Once
}

func newE2EBackend() *e2eBackend {
	return &e2eBackend{
		seen:    map[string]*e2eSeen{},
		ids:     map[string]*e2eIDSSeen{},
		arrived: make(chan string, 4096),
		gate:    make(chan struct{}),
	}
}

// release opens /gate for every request, waiting or to come.
func (b *e2eBackend) release() { b.releaseOnce.Do(func() { close(b.gate) }) }

func (b *e2eBackend) record(r *http.Request, body []byte) *e2eSeen {
	id := r.Header.Get("X-Request-Id")
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.seen[id]
	if s == nil {
		s = &e2eSeen{}
		b.seen[id] = s
	}
	s.Method, s.Path, s.RawQuery = r.Method, r.URL.EscapedPath(), r.URL.RawQuery
	s.Header = r.Header.Clone()
	s.Len, s.Sum = len(body), sha256.Sum256(body)
	s.Body = bytes.Clone(body[:min(len(body), 64<<10)])
	s.Count++
	cp := *s
	return &cp
}

// get returns a copy of what the backend saw under id, or nil.
func (b *e2eBackend) get(id string) *e2eSeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.seen[id]
	if s == nil {
		return nil
	}
	cp := *s
	return &cp
}

// count returns how many times a request with this id was executed.
func (b *e2eBackend) count(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.seen[id]; s != nil {
		return s.Count
	}
	return 0
}

func (b *e2eBackend) getIDS(id string) *e2eIDSSeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.ids[id]
	if s == nil {
		return nil
	}
	cp := *s
	return &cp
}

func (b *e2eBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ids" {
		b.serveIDS(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.record(r, body)
	if id := r.Header.Get("X-Request-Id"); id != "" {
		w.Header().Set("X-Request-Id", id)
	}
	// Routes may keep a path prefix (/api/status/500): match on the last
	// segments.
	p := r.URL.Path
	after := func(marker string) (string, bool) {
		if i := strings.LastIndex(p, marker); i >= 0 {
			return p[i+len(marker):], true
		}
		return "", false
	}
	status, isStatus := after("/status/")
	blob, isBlob := after("/blob/")
	switch {
	case isStatus:
		code, err := strconv.Atoi(status)
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "bad status", http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("ETag", fmt.Sprintf(`"v-%d"`, code))
		h.Set("Location", "/things/42?ref=e2e")
		h.Set("Cache-Control", "no-store")
		h.Set("Set-Cookie", "session=backend-secret; HttpOnly")
		h.Set("X-Backend-Internal", "secret")
		h.Set("WWW-Authenticate", `Basic realm="backend"`)
		w.WriteHeader(code)
		if code != http.StatusNoContent && code != http.StatusNotModified {
			fmt.Fprintf(w, "backend says %d\n", code)
		}
	case strings.HasSuffix(p, "/etag"):
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "version 1\n")
	case strings.HasSuffix(p, "/bytes256"):
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(e2eAllBytes(1))
	case isBlob:
		n, err := strconv.Atoi(blob)
		if err != nil || n < 0 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(e2eRandom(uint64(n), n))
	case strings.HasSuffix(p, "/whoami"):
		w.Header().Set("Content-Type", "text/plain")
		for _, k := range []string{"X-IDS-Peer-Subject", "X-IDS-Peer-Connector", "X-IDS-Peer-Security-Profile", "X-IDS-Peer-Suite", "X-IDS-Message-Type"} {
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header.Values(k), " | "))
		}
	case strings.HasSuffix(p, "/slow"):
		d := time.Hour
		if s := r.URL.Query().Get("d"); s != "" {
			d, _ = time.ParseDuration(s)
		}
		select {
		case <-time.After(d):
			io.WriteString(w, "slow done\n")
		case <-r.Context().Done():
		}
	case strings.HasSuffix(p, "/gate"):
		select {
		case b.arrived <- r.Header.Get("X-Request-Id"):
		default:
		}
		select {
		case <-b.gate:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(body)
		case <-r.Context().Done():
		}
	default: // echo
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		sum := sha256.Sum256(body)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
		if r.Method == http.MethodPost && r.URL.Query().Get("created") != "" {
			w.Header().Set("Location", "/created/"+r.Header.Get("X-Request-Id"))
			w.WriteHeader(http.StatusCreated)
		}
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
			time.Sleep(d)
		}
		w.Write(body)
	}
}

// e2eSelfDescription is what /ids answers to a DescriptionRequestMessage.
const e2eSelfDescription = `{"@context":"https://w3id.org/idsa/contexts/context.jsonld","@type":"ids:BaseConnector","@id":"https://provider.e2e.local/","ids:title":[{"@value":"e2e provider"}]}`

// e2eBogusToken is the securityToken the backend puts into its answers; the
// provider sidecar must replace it with its own DAT.
const e2eBogusToken = "not-the-providers-dat"

func (b *e2eBackend) serveIDS(w http.ResponseWriter, r *http.Request) {
	mp, err := idsmsg.ReadMultipart(r.Header.Get("Content-Type"), r.Body, 64<<20)
	if err != nil {
		http.Error(w, "backend: "+err.Error(), http.StatusBadRequest)
		return
	}
	h, err := idsmsg.Parse(mp.Header)
	if err != nil {
		http.Error(w, "backend: "+err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	rec := b.ids[h.ID]
	if rec == nil {
		rec = &e2eIDSSeen{}
		b.ids[h.ID] = rec
	}
	rec.Header, rec.RawHeader, rec.Payload, rec.PayloadType = h, bytes.Clone(mp.Header), bytes.Clone(mp.Payload), mp.PayloadType
	rec.HTTPHeader = r.Header.Clone()
	rec.Count++
	b.mu.Unlock()

	typ, payload, ptype := "ids:MessageProcessedNotificationMessage", mp.Payload, mp.PayloadType
	switch h.Type {
	case "ids:DescriptionRequestMessage":
		typ, payload, ptype = "ids:DescriptionResponseMessage", []byte(e2eSelfDescription), "application/ld+json"
	case "ids:QueryMessage":
		typ = "ids:ResultMessage"
	}
	resp := idsmsg.NewResponse(typ, h, idsmsg.Self{ConnectorID: "https://backend.e2e.local/", Token: func() string { return e2eBogusToken }})
	if h.Type == "ids:LogMessage" {
		resp.CorrelationMessage = "" // the provider sidecar fills it in
	}
	header, err := resp.Marshal()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	ct, err := idsmsg.WriteMultipart(&buf, &idsmsg.Multipart{Header: header, Payload: payload, PayloadType: ptype})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Write(buf.Bytes())
}

// ---- data ----

// e2eAllBytes returns the 256 byte values, n times.
func e2eAllBytes(n int) []byte {
	b := make([]byte, 0, 256*n)
	for range n {
		for i := range 256 {
			b = append(b, byte(i))
		}
	}
	return b
}

// e2eRandom returns n deterministic pseudo-random bytes for seed.
func e2eRandom(seed uint64, n int) []byte {
	var s [32]byte
	copy(s[:], strconv.FormatUint(seed, 10))
	r := rand.NewChaCha8(s)
	b := make([]byte, n)
	r.Read(b)
	return b
}

// ---- environments ----

// e2eEnv is a demo environment whose provider service is an e2eBackend.
type e2eEnv struct {
	*demo.Env
	be *e2eBackend

	verifierOnce sync.Once
	verifier     *daps.Driver
	verifierErr  error
}

// e2eStart starts demo.Start with an e2eBackend in t.TempDir(); it is
// closed when t ends.
func e2eStart(t *testing.T, o demo.Options) *e2eEnv {
	t.Helper()
	be := newE2EBackend()
	o.Dir = t.TempDir()
	o.Backend = be
	if o.Logger == nil {
		o.Logger = e2eLogger(t.Name())
	}
	// The context is the environment's lifetime, not a start-up deadline.
	env, err := demo.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("demo.Start: %v", err)
	}
	e := &e2eEnv{Env: env, be: be}
	t.Cleanup(func() {
		be.release()
		env.Close()
		if e.verifier != nil {
			e.verifier.Close()
		}
	})
	return e
}

func (e *e2eEnv) pki(name string) string { return filepath.Join(e.Dir, "pki", name) }

// leaf returns the certificate of "server" (provider) or "client" (consumer).
func (e *e2eEnv) leaf(t *testing.T, who string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(e.pki(who+".pem"), e.pki(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// subject is the DAT subject the DAPS gives "server" or "client".
func (e *e2eEnv) subject(t *testing.T, who string) string {
	return dat.ConnectorID(e.leaf(t, who))
}

// verifyDAT verifies token as a DAT of who ("server" or "client") with a
// DAPS client of its own (signature against the DAPS's keys, issuer,
// binding to who's certificate).
func (e *e2eEnv) verifyDAT(t *testing.T, token, who string) *dat.Identity {
	t.Helper()
	e.verifierOnce.Do(func() {
		pair, err := tls.LoadX509KeyPair(e.pki("client.pem"), e.pki("client-key.pem"))
		if err != nil {
			e.verifierErr = err
			return
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		e.verifier, e.verifierErr = daps.New(daps.Config{URL: e.DAPSURL, Certificate: leaf, Key: pair.PrivateKey.(crypto.Signer),
			Logger: e2eLogger("verifier")})
	})
	if e.verifierErr != nil {
		t.Fatalf("DAT verifier: %v", e.verifierErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := e.verifier.Verify(ctx, []byte(token), e.leaf(t, who))
	if err != nil {
		t.Fatalf("securityToken %.40q… is not a valid DAT of %s: %v", token, who, err)
	}
	return id
}

// identityYAML is the identity, DAPS and attestation part of a sidecar
// configuration: who is "server" (the provider's identity) or "client"
// (the consumer's).
func (e *e2eEnv) identityYAML(who string) string {
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
admin:
  listen: 127.0.0.1:0
`, e.pki(who+".pem"), e.pki(who+"-key.pem"), e.pki("ca.pem"), e.DAPSURL)
}

// e2eSidecar is a sidecar started from a configuration file.
type e2eSidecar struct {
	*sidecar.Sidecar
	path    string
	ingress string   // host:port ("" if none)
	egress  []string // http://host:port, in configuration order
	admin   string   // http://host:port

	mu      sync.Mutex
	stopped bool
}

// launch writes yaml to name.yaml in the environment's directory and
// starts a sidecar from it; it is shut down when t ends.
func (e *e2eEnv) launch(t *testing.T, name, yaml string) *e2eSidecar {
	t.Helper()
	path := filepath.Join(e.Dir, name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return e2eLaunchFile(t, name, path)
}

func e2eLaunchFile(t *testing.T, name, path string) *e2eSidecar {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%s: config.Load: %v", name, err)
	}
	s, err := sidecar.New(cfg, sidecar.Options{Logger: e2eLogger(name)})
	if err != nil {
		t.Fatalf("%s: sidecar.New: %v", name, err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("%s: Start: %v", name, err)
	}
	sc := &e2eSidecar{Sidecar: s, path: path}
	var eg []string
	var admin string
	sc.ingress, eg, admin = s.Addrs()
	for _, a := range eg {
		sc.egress = append(sc.egress, "http://"+a)
	}
	if admin != "" {
		sc.admin = "http://" + admin
	}
	t.Cleanup(func() { sc.shutdown(10 * time.Second) })
	return sc
}

// shutdown drains the sidecar once (later calls do nothing).
func (s *e2eSidecar) shutdown(timeout time.Duration) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.Shutdown(ctx)
}

func (s *e2eSidecar) metrics() string { return s.admin + "/metrics" }

// e2eFreePort returns a loopback address nothing listens on.
func e2eFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// ---- HTTP ----

// e2eClient returns an HTTP client that never follows redirects, never
// uses a proxy and gives up after timeout.
func e2eClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 128, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// e2eResult is a finished exchange.
type e2eResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// e2eDo sends one request; hdr is "Name: value" pairs.
func e2eDo(c *http.Client, method, url string, body []byte, hdr ...string) (*e2eResult, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	for _, h := range hdr {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("bad header %q", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return &e2eResult{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// e2eMust is e2eDo failing the test on a transport error.
func e2eMust(t *testing.T, c *http.Client, method, url string, body []byte, hdr ...string) *e2eResult {
	t.Helper()
	r, err := e2eDo(c, method, url, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// e2eExpect checks the status and that the body contains every want.
func e2eExpect(t *testing.T, what string, r *e2eResult, status int, want ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: status %d, want %d; body %q", what, r.Status, status, e2eClip(r.Body))
		return
	}
	for _, w := range want {
		if !bytes.Contains(r.Body, []byte(w)) {
			t.Errorf("%s: body %q does not contain %q", what, e2eClip(r.Body), w)
		}
	}
}

func e2eClip(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}

// ---- multipart ----

// e2eMultipart encodes an IDS multipart request.
func e2eMultipart(t *testing.T, h *idsmsg.Message, payload []byte, payloadType string) (body []byte, contentType string) {
	t.Helper()
	header, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	ct, err := idsmsg.WriteMultipart(&buf, &idsmsg.Multipart{Header: header, Payload: payload, PayloadType: payloadType})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ct
}

// e2eAnswer parses an IDS multipart answer.
func e2eAnswer(t *testing.T, r *e2eResult) (*idsmsg.Message, *idsmsg.Multipart) {
	t.Helper()
	mp, err := idsmsg.ReadMultipart(r.Header.Get("Content-Type"), bytes.NewReader(r.Body), 64<<20)
	if err != nil {
		t.Fatalf("answer (status %d, Content-Type %q) is not IDS multipart: %v; body %q", r.Status, r.Header.Get("Content-Type"), err, e2eClip(r.Body))
	}
	h, err := idsmsg.Parse(mp.Header)
	if err != nil {
		t.Fatalf("answer header: %v; header %s", err, mp.Header)
	}
	return h, mp
}

// ---- metrics ----

func e2eScrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// e2eMetric sums the samples of metric name whose labels include every
// "key=value" in labels; found reports whether any sample matched.
func e2eMetric(text, name string, labels ...string) (sum float64, found bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := cutLast(line, " ")
		if !ok {
			continue
		}
		n, set := series, map[string]string{}
		if i := strings.IndexByte(series, '{'); i >= 0 {
			n = series[:i]
			set = e2eLabels(strings.TrimSuffix(series[i+1:], "}"))
		}
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if got, ok := set[k]; !ok || got != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		sum += f
		found = true
	}
	return sum, found
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// e2eLabels parses `a="x",b="y\"z"`.
func e2eLabels(s string) map[string]string {
	m := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return m
		}
		key := strings.TrimSpace(s[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		m[key] = val.String()
		s = strings.TrimPrefix(s[min(i+1, len(s)):], ",")
	}
	return m
}

// e2eEventually polls cond until it holds or timeout passes.
func e2eEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eWaitArrivals waits until n requests have reached the backend's /gate.
func e2eWaitArrivals(t *testing.T, be *e2eBackend, n int, timeout time.Duration) []string {
	t.Helper()
	var ids []string
	deadline := time.After(timeout)
	for len(ids) < n {
		select {
		case id := <-be.arrived:
			ids = append(ids, id)
		case <-deadline:
			t.Fatalf("only %d of %d requests reached the backend within %v", len(ids), n, timeout)
		}
	}
	return ids
}

// e2eIsRefused reports whether err is a refused TCP connection.
func e2eIsRefused(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func e2eWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
