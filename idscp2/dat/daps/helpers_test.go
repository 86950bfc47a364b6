package daps

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// pki is generated once per test binary.
var pki = func() *testpki.Bundle {
	b, err := testpki.NewBundle()
	if err != nil {
		panic(err)
	}
	return b
}()

func quiet() *slog.Logger {
	if os.Getenv("IDSCP2_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// clock is a settable clock for drivers and servers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Gate modes of a testDAPS.
const (
	modeOK   = iota
	mode500  // every request answers 500
	modeSlow // every request blocks until release is closed or the client gives up
)

// testDAPS is a built-in DAPS on a real 127.0.0.1 listener, with request
// counters and a gate that makes it fail or hang.
type testDAPS struct {
	t    testing.TB
	srv  *dapsserver.Server
	ts   *httptest.Server
	url  string
	key  crypto.Signer // the DAPS signing key, to forge tokens with it
	addr string

	meta, jwks, token, other atomic.Int64

	mode    atomic.Int32
	mu      sync.Mutex
	release chan struct{}
	entered chan struct{} // one value per request that reached the slow gate

	noMetadata bool

	// onToken, if set, sees every token request's form (after parsing).
	onToken func(r *http.Request)
}

type dapsOpts struct {
	lifetime time.Duration
	path     string // issuer path, e.g. "/auth"
	now      func() time.Time
	clients  []dapsserver.Client
	key      crypto.Signer
	tls      bool
	modify   func(*dapsserver.Config)
	listener net.Listener
	// noMetadata makes the DAPS answer metadata requests with 404.
	noMetadata bool
}

var sharedDAPSKey = func() crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// startDAPS runs a DAPS with the bundle's Client and Server registered.
func startDAPS(t testing.TB, o dapsOpts) *testDAPS {
	t.Helper()
	l := o.listener
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	scheme := "http"
	if o.tls {
		scheme = "https"
	}
	d := &testDAPS{t: t, noMetadata: o.noMetadata, addr: l.Addr().String(), release: make(chan struct{}), entered: make(chan struct{}, 1024)}
	d.url = scheme + "://" + d.addr + o.path
	d.key = o.key
	if d.key == nil {
		d.key = sharedDAPSKey
	}
	clients := o.clients
	if clients == nil {
		clients = []dapsserver.Client{
			{Certificate: pki.Client.Cert, ReferringConnector: "https://client.example/"},
			{Certificate: pki.Server.Cert, ReferringConnector: "https://server.example/"},
		}
	}
	cfg := dapsserver.Config{
		Issuer:        d.url,
		SigningKey:    d.key,
		TokenLifetime: o.lifetime,
		Clients:       clients,
		Logger:        quiet(),
		Now:           o.now,
	}
	if o.modify != nil {
		o.modify(&cfg)
	}
	srv, err := dapsserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = srv
	d.ts = httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	d.ts.Listener.Close()
	d.ts.Listener = l
	if o.tls {
		d.ts.StartTLS()
	} else {
		d.ts.Start()
	}
	t.Cleanup(d.stop)
	return d
}

func (d *testDAPS) stop() {
	d.setMode(modeOK) // releases hung requests
	d.ts.Close()
}

func (d *testDAPS) setMode(m int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode.Load() == modeSlow && m != modeSlow {
		close(d.release)
		d.release = make(chan struct{})
	}
	d.mode.Store(m)
}

func (d *testDAPS) serve(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/token"):
		d.token.Add(1)
	case strings.HasSuffix(p, "jwks.json"):
		d.jwks.Add(1)
	case strings.Contains(p, "/.well-known/"):
		d.meta.Add(1)
	default:
		d.other.Add(1)
	}
	switch d.mode.Load() {
	case mode500:
		http.Error(w, "DAPS is having a bad day", http.StatusInternalServerError)
		return
	case modeSlow:
		d.mu.Lock()
		rel := d.release
		d.mu.Unlock()
		select {
		case d.entered <- struct{}{}:
		default:
		}
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
	}
	if d.noMetadata && strings.Contains(r.URL.Path, "/.well-known/o") {
		http.NotFound(w, r)
		return
	}
	if d.onToken != nil && strings.HasSuffix(r.URL.Path, "/token") {
		d.onToken(r)
	}
	d.srv.ServeHTTP(w, r)
}

// driverFor returns a driver authenticating as leaf against d.
func (d *testDAPS) driverFor(t testing.TB, leaf *testpki.Leaf, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{
		URL:         d.url,
		Certificate: leaf.Cert,
		Key:         leaf.Key,
		Logger:      quiet(),
	}
	if d.ts.TLS != nil {
		cfg.RootCAs = poolOf(d.ts)
	}
	if mod != nil {
		mod(&cfg)
	}
	drv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	return drv
}

func poolOf(ts *httptest.Server) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ts.Certificate())
	return p
}

// reasons counts the reasons reported to OnRefusal.
type reasons struct {
	mu sync.Mutex
	m  map[dat.Reason]int
}

func (r *reasons) hook(reason dat.Reason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[dat.Reason]int{}
	}
	r.m[reason]++
}

func (r *reasons) get(reason dat.Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[reason]
}

// waitIdle waits until the cell has no fetch in flight.
func waitIdle[T any](t testing.TB, c *cell[T]) {
	t.Helper()
	c.mu.Lock()
	f := c.flight
	c.mu.Unlock()
	if f == nil {
		return
	}
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s fetch did not finish", c.name)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func wantReason(t *testing.T, id *dat.Identity, err error, want dat.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted (identity %+v), want refusal %q", id, want)
	}
	if id != nil {
		t.Errorf("identity returned with error")
	}
	if got := dat.ReasonOf(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}
