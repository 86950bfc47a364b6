// Package sidecar runs the IDSCP2 sidecar: ingress (peers → local
// backends), egress (local clients → peers), the admin endpoint, reloads
// and graceful drain, all from one config.Config.
package sidecar

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/daps"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/metrics"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/peering"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/pipeline"
)

// Options are what the configuration file does not hold.
type Options struct {
	Logger *slog.Logger
	// Middlewares wrap the ingress chain, outermost first (a contract gate,
	// Clearing House logging): they see each request, with the peer's
	// verified identity, before the router does.
	Middlewares []pipeline.Middleware
	// DAT overrides the driver built from the configuration (tests, demo).
	DAT dat.Driver
	// Attestation overrides the default suite registry.
	Attestation *attestation.Registry
}

// Sidecar is one running sidecar.
type Sidecar struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	opts    Options

	cfg   atomic.Pointer[config.Config]
	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
	chain atomic.Pointer[pipeline.Handler]
	self  atomic.Pointer[idsmsg.Self]

	dat      *swappableDAT
	closeTPM func() error
	idscp2   *idscp2.Config // shared by every connection; certificates and roots are read per handshake
	ingress  *ingress
	pools    map[string]*peering.Pool
	egress   []*http.Server
	// egressHandlers parallel egress, for reloads.
	egressHandlers []*egress
	admin          *http.Server
	backends       *http.Client

	mu        sync.Mutex
	listeners []net.Listener // egress and admin, bound by Start
	serveWG   sync.WaitGroup
	cancel    context.CancelFunc
}

// New builds a sidecar from a validated configuration. Nothing listens
// until Start.
func New(cfg *config.Config, opts Options) (*Sidecar, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := refuseQUIC(cfg); err != nil {
		return nil, err
	}
	s := &Sidecar{log: opts.Logger, opts: opts, metrics: metrics.New(metrics.Version()), pools: map[string]*peering.Pool{}}
	if err := s.loadIdentity(cfg); err != nil {
		return nil, err
	}
	s.cfg.Store(cfg)

	d, err := s.datDriver(cfg)
	if err != nil {
		return nil, err
	}
	s.dat = &swappableDAT{}
	s.dat.current.Store(&d)
	registry := opts.Attestation
	if registry == nil {
		registry = attestation.Default()
	}
	if s.closeTPM, err = s.registerTPM(cfg, registry); err != nil {
		return nil, err
	}
	s.idscp2 = &idscp2.Config{
		GetCertificate:   func() (*tls.Certificate, error) { return s.cert.Load(), nil },
		GetRoots:         func() *x509.CertPool { return s.roots.Load() },
		DAT:              s.dat,
		Attestation:      registry,
		SupportedSuites:  cfg.Attestation.SupportedSuites,
		ExpectedSuites:   cfg.Attestation.ExpectedSuites,
		HandshakeTimeout: cfg.IDSCP2.HandshakeTimeout.D(),
		AckTimeout:       cfg.IDSCP2.AckTimeout.D(),
		RaInterval:       cfg.Attestation.Interval.D(),
		MaxFrameSize:     int(cfg.IDSCP2.MaxFrameSize),
		FrameTimeout:     cfg.IDSCP2.FrameTimeout.D(),
		WriteTimeout:     cfg.IDSCP2.WriteTimeout.D(),
		CertExpiryWindow: cfg.IDSCP2.CertExpiryWindow.D(),
		Logger:           s.log.With("component", "idscp2"),
		Observer:         s.metrics.IDSCP2(),
	}
	if cfg.IDSCP2.CertExpiryWindow == 0 {
		s.idscp2.CertExpiryWindow = -1 // configured 0: no window
	}
	s.backends = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // backends are local: never through an environment proxy
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
	if err := s.buildChain(cfg); err != nil {
		return nil, err
	}
	for _, p := range cfg.Peers {
		if err := s.addPool(cfg, p); err != nil {
			return nil, err
		}
	}
	s.metrics.ReloadOK.Set(1)
	s.metrics.ReloadTime.SetToCurrentTime()
	return s, nil
}

// refuseQUIC fails configurations that ask for the QUIC binding, which the
// configuration format already knows (docs/quic.md) but this build does not
// implement: dialling TCP instead would hide the mistake.
func refuseQUIC(cfg *config.Config) error {
	for _, p := range cfg.Peers {
		if p.Transport == config.TransportQUIC {
			return fmt.Errorf("peers %s: transport quic is not implemented yet (see docs/quic.md); use tcp", p.Name)
		}
	}
	if cfg.Ingress != nil && slices.Contains(cfg.Ingress.Transports, config.TransportQUIC) {
		return errors.New("ingress.transports: quic is not implemented yet (see docs/quic.md); use [tcp]")
	}
	return nil
}

// Metrics returns the sidecar's metrics (for tests and embedding).
func (s *Sidecar) Metrics() *metrics.Metrics { return s.metrics }

func (s *Sidecar) loadIdentity(cfg *config.Config) error {
	cert, err := tls.LoadX509KeyPair(cfg.Identity.Cert, cfg.Identity.Key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	pool, err := loadPool(cfg.Identity.CA)
	if err != nil {
		return fmt.Errorf("identity.ca: %w", err)
	}
	s.cert.Store(&cert)
	s.roots.Store(pool)
	s.metrics.CertExpiry.WithLabelValues("identity").Set(float64(cert.Leaf.NotAfter.Unix()))
	connector := cfg.Identity.ConnectorID
	if connector == "" {
		connector = config.DefaultConnectorIDPrefix + dat.ConnectorID(cert.Leaf)
	}
	agent := cfg.Identity.SenderAgent
	if agent == "" {
		agent = connector
	}
	s.self.Store(&idsmsg.Self{ConnectorID: connector, SenderAgent: agent, Token: s.currentToken})
	return nil
}

// currentToken is the DAT stamped into outgoing IDS headers: the same one
// the IDSCP2 handshake presents, as camel-idscp2 does.
func (s *Sidecar) currentToken() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tok, err := s.dat.Token(ctx)
	if err != nil {
		return ""
	}
	return string(tok)
}

func (s *Sidecar) datDriver(cfg *config.Config) (dat.Driver, error) {
	if s.opts.DAT != nil {
		return s.opts.DAT, nil
	}
	leaf := s.cert.Load().Leaf
	d := cfg.DAPS
	switch d.Mode {
	case config.DAPSModeNull:
		return dat.NewNull(s.log), nil
	case config.DAPSModeLocal:
		key, err := config.LoadPrivateKey(d.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("daps.keyFile: %w", err)
		}
		iss, err := dat.NewLocalIssuer(d.Issuer, key, "")
		if err != nil {
			return nil, fmt.Errorf("daps: %w", err)
		}
		claims := map[string]any{}
		if d.SecurityProfile != "" {
			claims["securityProfile"] = d.SecurityProfile
		}
		return dat.NewLocal(dat.LocalConfig{Issuer: iss, Cert: leaf, Lifetime: d.Lifetime.D(),
			Threshold: d.RenewalThreshold, Claims: claims,
			Verify: dat.VerifierConfig{Issuer: iss.Issuer(), Keys: iss.Keys(), MinSecurityProfile: d.MinSecurityProfile}})
	case config.DAPSModeDAPS:
		var roots *x509.CertPool
		if d.CAFile != "" {
			var err error
			if roots, err = loadPool(d.CAFile); err != nil {
				return nil, fmt.Errorf("daps.caFile: %w", err)
			}
		}
		signer, ok := s.cert.Load().PrivateKey.(crypto.Signer)
		if !ok {
			return nil, errors.New("daps: the identity key cannot sign client assertions")
		}
		return daps.New(daps.Config{URL: d.URL, Issuer: d.Issuer, Certificate: leaf, Key: signer, RootCAs: roots,
			Audience: d.Audience, RequestTimeout: d.Timeout.D(), Threshold: d.RenewalThreshold,
			MinSecurityProfile: d.MinSecurityProfile, Logger: s.log.With("component", "daps"),
			OnTokenFetch: func(outcome string) { s.metrics.DatFetches.WithLabelValues(outcome).Inc() }})
	}
	return nil, fmt.Errorf("daps.mode %q is not supported", d.Mode)
}

// buildChain makes the ingress chain for cfg and publishes it.
func (s *Sidecar) buildChain(cfg *config.Config) error {
	router := &pipeline.Router{}
	if cfg.Ingress != nil {
		for _, r := range cfg.Ingress.Routes {
			u, err := url.Parse(r.Backend)
			if err != nil {
				return fmt.Errorf("route %s: %w", r.Name, err)
			}
			client := s.backends
			if r.BackendCA != "" {
				if client, err = clientWithCA(r.BackendCA); err != nil {
					return fmt.Errorf("route %s: %w", r.Name, err)
				}
			}
			maxBody := int64(r.MaxBodyBytes)
			if maxBody == 0 {
				maxBody = int64(cfg.Limits.MaxBodyBytes)
			}
			var backend pipeline.Handler = &pipeline.HTTPBackend{URL: u, Client: client, MaxBodyBytes: maxBody}
			if r.Mode == config.ModeMultipart {
				backend = &pipeline.MultipartBackend{URL: u, Client: client, MaxBodyBytes: maxBody}
			}
			router.Routes = append(router.Routes, &pipeline.Route{
				Name:         r.Name,
				Match:        pipeline.Match{MessageTypes: r.Match.MessageTypes, PathPrefix: r.Match.PathPrefix, Subjects: r.Match.Peers},
				Allow:        pipeline.AccessRule(r.Allow),
				Backend:      backend,
				Timeout:      r.Timeout.D(),
				MaxBodyBytes: maxBody,
			})
		}
	}
	h := pipeline.Chain(router, s.opts.Middlewares...)
	s.chain.Store(&h)
	return nil
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func clientWithCA(path string) (*http.Client, error) {
	pool, err := loadPool(path)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func (s *Sidecar) addPool(cfg *config.Config, p config.Peer) error {
	peerCfg := *s.idscp2
	peerCfg.SkipHostnameVerification = p.SkipHostnameVerification
	serverName := p.ServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(p.Address)
	}
	address, dialTimeout := p.Address, p.DialTimeout.D()
	dialer := func(ctx context.Context) (*idscp2.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		return idscp2.DialServerName(ctx, "tcp", address, serverName, &peerCfg)
	}
	pool, err := peering.New(peering.Options{
		Name:        p.Name,
		Dial:        dialer,
		Decode:      decodeAnswer,
		Size:        p.PoolSize,
		MaxInFlight: cfg.Limits.MaxConcurrentPerPeer,
		MaxQueue:    cfg.Limits.MaxQueuePerPeer,
		Logger:      s.log.With("peer", p.Name),
		Observer:    poolObserver{s.metrics},
	})
	if err != nil {
		return fmt.Errorf("peer %s: %w", p.Name, err)
	}
	s.pools[p.Name] = pool
	return nil
}

// answer is a peer's response as the pool's reader decoded it, once.
type answer struct {
	app    *idsmsg.AppMessage
	header *idsmsg.Message
}

// decodeAnswer parses a peer's answer and returns its correlationMessage.
func decodeAnswer(payload []byte) (string, any, error) {
	app, err := idsmsg.DecodeApp(payload)
	if err != nil {
		return "", nil, err
	}
	h, err := idsmsg.Parse([]byte(app.Header))
	if err != nil {
		return "", nil, err
	}
	return h.CorrelationMessage, &answer{app: app, header: h}, nil
}

type poolObserver struct{ m *metrics.Metrics }

func (o poolObserver) PoolSize(peer string, n int) {
	o.m.PoolConnections.WithLabelValues(peer).Set(float64(n))
}
func (o poolObserver) Queue(peer string, n int) { o.m.QueueDepth.WithLabelValues(peer).Set(float64(n)) }
func (o poolObserver) Unmatched(peer string)    { o.m.Unmatched.WithLabelValues(peer).Inc() }
func (o poolObserver) Dial(peer string, err error) {
	o.m.PeerDials.WithLabelValues(peer, idscp2.ClassifyHandshake(err)).Inc()
}

// swappableDAT lets a reload replace the DAT driver under live
// connections: each handshake and renewal asks the current one.
type swappableDAT struct {
	current atomic.Pointer[dat.Driver]
}

func (d *swappableDAT) Token(ctx context.Context) ([]byte, error) {
	return (*d.current.Load()).Token(ctx)
}
func (d *swappableDAT) RenewalThreshold() float64 { return (*d.current.Load()).RenewalThreshold() }
func (d *swappableDAT) Verify(ctx context.Context, token []byte, peer *x509.Certificate) (*dat.Identity, error) {
	return (*d.current.Load()).Verify(ctx, token, peer)
}

// Start binds every listener and serves until Shutdown. Binding errors
// are returned before anything is served.
func (s *Sidecar) Start(ctx context.Context) error {
	cfg := s.cfg.Load()
	// Serving lasts until Shutdown, whatever becomes of the caller's ctx:
	// a half-stopped sidecar that still completes handshakes would only
	// make peers time out.
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	var bound []net.Listener
	fail := func(err error) error {
		for _, l := range bound {
			l.Close()
		}
		if s.ingress != nil {
			s.ingress.ln.Close()
		}
		return err
	}
	if cfg.Ingress != nil {
		ingCfg := *s.idscp2
		ingCfg.VerifyClientAddress = cfg.Ingress.VerifyClientAddress
		ln, err := idscp2.Listen("tcp", cfg.Ingress.Listen, &ingCfg)
		if err != nil {
			return fail(fmt.Errorf("ingress: %w", err))
		}
		s.ingress = &ingress{
			ln:      ln,
			handler: func() pipeline.Handler { return *s.chain.Load() },
			self:    func() idsmsg.Self { return *s.self.Load() },
			sem:     make(chan struct{}, cfg.Ingress.MaxConcurrentRequests),
			log:     s.log.With("component", "ingress"),
			m:       s.metrics,
			conns:   map[*idscp2.Conn]struct{}{},
		}
		s.log.Info("ingress listening", "addr", ln.Addr().String())
	}
	for _, e := range cfg.Egress {
		l, err := net.Listen("tcp", e.Listen)
		if err != nil {
			return fail(fmt.Errorf("egress %s: %w", e.Listen, err))
		}
		bound = append(bound, l)
		h := &egress{self: func() idsmsg.Self { return *s.self.Load() }, log: s.log.With("component", "egress"), m: s.metrics}
		h.settings.Store(s.egressSettings(cfg, e))
		s.egressHandlers = append(s.egressHandlers, h)
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
		s.egress = append(s.egress, srv)
		s.log.Info("egress listening", "addr", l.Addr().String(), "peer", e.Peer)
	}
	if cfg.Admin.Listen != "" {
		l, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return fail(fmt.Errorf("admin: %w", err))
		}
		bound = append(bound, l)
		s.admin = &http.Server{Handler: s.adminHandler(cfg.Admin.Pprof), ReadHeaderTimeout: 10 * time.Second}
		s.log.Info("admin listening", "addr", l.Addr().String())
	}
	s.mu.Lock()
	s.listeners = bound
	s.mu.Unlock()
	if s.ingress != nil {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); s.ingress.serve(ctx) }()
	}
	for i, srv := range s.egress {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); srv.Serve(bound[i]) }()
	}
	if s.admin != nil {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); s.admin.Serve(bound[len(bound)-1]) }()
	}
	return nil
}

func (s *Sidecar) egressSettings(cfg *config.Config, e config.Egress) *egressSettings {
	maxBody := int64(e.MaxBodyBytes)
	if maxBody == 0 {
		maxBody = int64(cfg.Limits.MaxBodyBytes)
	}
	return &egressSettings{peer: e.Peer, pool: s.pools[e.Peer], mode: e.Mode, messageType: e.MessageType,
		timeout: e.Timeout.D(), maxBody: maxBody, retryAfter: cfg.Limits.RetryAfter.D()}
}

// Addrs returns the bound addresses: ingress ("" if none), egress in
// configuration order, admin ("" if none).
func (s *Sidecar) Addrs() (ingress string, egress []string, admin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ingress != nil {
		ingress = s.ingress.ln.Addr().String()
	}
	n := len(s.egress)
	for _, l := range s.listeners[:n] {
		egress = append(egress, l.Addr().String())
	}
	if s.admin != nil {
		admin = s.listeners[n].Addr().String()
	}
	return ingress, egress, admin
}

// ready reports whether the sidecar can serve: listeners bound and a DAT
// that can be presented.
func (s *Sidecar) ready(ctx context.Context) error {
	s.mu.Lock()
	started := s.cancel != nil
	s.mu.Unlock()
	if !started {
		return errors.New("listeners not started")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.dat.Token(ctx); err != nil {
		return fmt.Errorf("no DAT: %w", err)
	}
	return nil
}

// Reload applies a new configuration without dropping established
// connections: certificates, CA bundle, routes and access rules take effect
// for new handshakes and requests. Changes that need a restart are logged
// and otherwise ignored. On error the old configuration stays.
func (s *Sidecar) Reload(next *config.Config) error {
	old := s.cfg.Load()
	err := s.reload(old, next)
	if err != nil {
		s.metrics.ReloadOK.Set(0)
		return err // the caller reports it, with its own context
	}
	s.metrics.ReloadOK.Set(1)
	s.metrics.ReloadTime.SetToCurrentTime()
	s.log.Info("configuration reloaded") // after the metrics: watchers read them on this line
	return nil
}

func (s *Sidecar) reload(old, next *config.Config) error {
	for _, what := range config.RestartRequired(old, next) {
		s.log.Warn("configuration change needs a restart to take effect", "change", what)
	}
	prevCert, prevRoots, prevSelf := s.cert.Load(), s.roots.Load(), s.self.Load()
	restore := func() {
		s.cert.Store(prevCert)
		s.roots.Store(prevRoots)
		s.self.Store(prevSelf)
	}
	if err := s.loadIdentity(next); err != nil {
		restore()
		return err
	}
	// The DAT binds the certificate (transportCertsSha256): a new
	// certificate needs a driver that asks for a token bound to it.
	if !prevCert.Leaf.Equal(s.cert.Load().Leaf) && s.opts.DAT == nil {
		d, err := s.datDriver(next)
		if err != nil {
			restore()
			return err
		}
		s.dat.current.Store(&d)
	}
	if err := s.buildChain(next); err != nil {
		restore()
		return err
	}
	// Egress listeners keep their addresses; their settings follow the
	// entry with the same listen address (the set cannot change live).
	for i, h := range s.egressHandlers {
		for _, e := range next.Egress {
			if e.Listen == old.Egress[i].Listen && s.pools[e.Peer] != nil {
				h.settings.Store(s.egressSettings(next, e))
			}
		}
	}
	s.cfg.Store(next)
	return nil
}

// Shutdown drains: egress listeners stop accepting and finish in-flight
// requests, the ingress stops accepting and its in-flight requests finish,
// then every peer connection is closed with USER_SHUTDOWN. It returns when
// all is done or ctx ends (then the rest is closed at once).
func (s *Sidecar) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.egress {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("egress: %w", err))
			srv.Close()
		}
	}
	for name, p := range s.pools {
		if err := p.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", name, err))
		}
	}
	if s.ingress != nil {
		s.ingress.ln.Close()
		done := make(chan struct{})
		go func() { s.ingress.drain(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("ingress: %w", ctx.Err()))
		}
		s.ingress.closeConns()
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	s.serveWG.Wait()
	if s.ingress != nil {
		s.ingress.wg.Wait()
	}
	if err := s.closeTPM(); err != nil {
		errs = append(errs, fmt.Errorf("tpm: %w", err))
	}
	return errors.Join(errs...)
}
