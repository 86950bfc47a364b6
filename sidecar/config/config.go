// Package config reads, checks and documents the sidecar's YAML
// configuration file (docs/config.md describes every key).
//
// Load and Parse are strict: an unknown key is an error naming the key, its
// YAML path and its line; values are checked before anything starts, and
// every problem in the file is reported at once (errors.Join of *FieldError,
// each naming the YAML path, e.g. `egress[1].peer: "provider" is not a
// defined peer`). A Config returned without error has every default filled
// in and every relative file path resolved against the configuration file's
// directory, so the caller can use the values as they are.
//
// The package does no runtime wiring: it builds no idscp2.Config, DAT driver
// or listener. It does read the files the configuration names (certificates,
// keys, CA bundles, TPM files) to check that they exist and parse, so that a
// reload with a broken file is refused before anything is replaced.
package config

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
)

// Config is the whole configuration file.
type Config struct {
	Identity    Identity    `yaml:"identity"`
	DAPS        DAPS        `yaml:"daps"`
	Attestation Attestation `yaml:"attestation"`
	IDSCP2      IDSCP2      `yaml:"idscp2"`
	// Ingress is nil when the file has no ingress section (egress only).
	Ingress *Ingress `yaml:"ingress"`
	Peers   []Peer   `yaml:"peers"`
	Egress  []Egress `yaml:"egress"`
	Limits  Limits   `yaml:"limits"`
	// Admin.Listen is "" when the admin listener is disabled.
	Admin    Admin    `yaml:"admin"`
	Shutdown Shutdown `yaml:"shutdown"`
	Log      Log      `yaml:"log"`
}

// Identity is this sidecar's TLS identity and IDS connector identity.
type Identity struct {
	// Cert, Key and CA are PEM files: this side's certificate chain (leaf
	// first), its private key, and the CA certificates peers' certificates
	// must chain to. All three are required.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
	// ConnectorID is the URI sent as ids:issuerConnector. "" means the
	// caller derives it: DefaultConnectorIDPrefix + dat.ConnectorID(leaf).
	ConnectorID string `yaml:"connectorId"`
	// SenderAgent is the URI sent as ids:senderAgent; "" means the
	// (derived) ConnectorID.
	SenderAgent string `yaml:"senderAgent"`
}

// DefaultConnectorIDPrefix is prepended to the certificate's connector id
// (dat.ConnectorID, "SKI:keyid:AKI") when identity.connectorId is empty.
const DefaultConnectorIDPrefix = "urn:idscp2-sidecar:"

// DAT driver modes (daps.mode).
const (
	DAPSModeNull  = "null"  // the reference's insecure NullDaps: no DAT is verified
	DAPSModeLocal = "local" // a local issuer key shared by a closed set-up (dat.NewLocal)
	DAPSModeDAPS  = "daps"  // a real DAPS (omejdn, the built-in DAPS): daps.New
)

// DAPS configures the DAT driver: how this side gets its DAT and how peers'
// DATs are verified.
type DAPS struct {
	// Mode is "null", "local" or "daps". Required: there is no default,
	// because "null" authenticates nobody.
	Mode string `yaml:"mode"`

	// Mode "daps": URL of the DAPS (metadata is discovered from it), CAFile
	// for its TLS certificate ("" = system roots), Audience of the client
	// assertion ("" = the token endpoint), Timeout of each HTTP request.
	URL      string   `yaml:"url"`
	CAFile   string   `yaml:"caFile"`
	Audience string   `yaml:"audience"`
	Timeout  Duration `yaml:"timeout"`

	// Mode "local": KeyFile is the PEM signing key shared by the closed
	// set-up; Lifetime of this side's tokens; SecurityProfile claimed in
	// them ("" = idsc:BASE_SECURITY_PROFILE).
	KeyFile         string   `yaml:"keyFile"`
	Lifetime        Duration `yaml:"lifetime"`
	SecurityProfile string   `yaml:"securityProfile"`

	// Issuer is the "iss" of DATs. Mode "local": required, the issuer name
	// of this side's tokens and the iss peers' tokens must carry. Mode
	// "daps": optional, overrides the issuer from the DAPS metadata.
	Issuer string `yaml:"issuer"`
	// RenewalThreshold is the fraction of a DAT's lifetime after which it
	// is renewed, in (0,1]; default 0.666. Modes "local" and "daps".
	RenewalThreshold float64 `yaml:"renewalThreshold"`
	// MinSecurityProfile is the lowest securityProfile accepted from any
	// peer (either naming generation). Modes "local" and "daps".
	MinSecurityProfile string `yaml:"minSecurityProfile"`
}

// Attestation suite names, as on the wire.
const (
	SuiteDummy2 = attestation.Dummy2
	SuiteDummy  = attestation.Dummy
	SuiteNullRa = attestation.NullRa
	SuiteTPM    = "TPM"
)

// KnownSuites are the attestation suite names the configuration accepts.
// The sidecar may append suites it registers before loading a file.
var KnownSuites = []string{SuiteDummy2, SuiteDummy, SuiteNullRa, SuiteTPM}

// Attestation configures remote attestation.
type Attestation struct {
	// SupportedSuites (as prover) and ExpectedSuites (as verifier), in
	// priority order; each defaults to [Dummy2].
	SupportedSuites []string `yaml:"supportedSuites"`
	ExpectedSuites  []string `yaml:"expectedSuites"`
	// Interval is the periodic re-attestation of peers (default 1h).
	Interval Duration `yaml:"interval"`
	// TPM configures suite "TPM"; required when TPM is supported or expected.
	TPM *TPM `yaml:"tpm"`
}

// TPM attestation types (attestation.tpm.attestationType).
const (
	TPMBasic    = "BASIC"
	TPMAll      = "ALL"
	TPMAdvanced = "ADVANCED"
)

// Defaults of the TPM section.
const (
	DefaultTPMDevice        = "/dev/tpmrm0"
	DefaultAKHandle  uint32 = 0x81010002 // = tpm.DefaultAKHandle
)

// TPM configures the "TPM" suite: the prover side (Device or Address,
// AKHandle, AKCert) when TPM is in supportedSuites, the verifier side (Roots
// or PinnedKeys, GoldenValues or GoldenValuesFromDAT, AttestationType,
// PCRMask) when it is in expectedSuites.
type TPM struct {
	// Device is the TPM character device; Address a TPM simulator's (swtpm)
	// command port host:port. At most one; default Device /dev/tpmrm0.
	Device  string `yaml:"device"`
	Address string `yaml:"address"`
	// AKHandle is the persistent handle of the attestation key (created by
	// `idscp2-sidecar tpm`); default 0x81010002.
	AKHandle uint32 `yaml:"akHandle"`
	// AKCert is the AK certificate (PEM) sent to verifiers; "" sends the
	// bare public key, which only verifiers pinning it accept.
	AKCert string `yaml:"akCert"`
	// Roots is a PEM file of CAs that peers' AK certificates must chain to;
	// PinnedKeys are PEM public keys of peers' AKs accepted without a
	// certificate. At least one is required to verify.
	Roots      string   `yaml:"roots"`
	PinnedKeys []string `yaml:"pinnedKeys"`
	// GoldenValues is a golden-values file (`idscp2-sidecar tpm golden`);
	// GoldenValuesFromDAT takes them from the peer DAT's pcrGoldenValues
	// claim. At least one is required to verify; with both, both must match.
	GoldenValues        string `yaml:"goldenValues"`
	GoldenValuesFromDAT bool   `yaml:"goldenValuesFromDat"`
	// AttestationType is BASIC (PCR 0-11, default), ALL (0-23) or ADVANCED
	// (the PCRs in PCRMask, e.g. "0-7,10", required for ADVANCED only).
	AttestationType string `yaml:"attestationType"`
	PCRMask         string `yaml:"pcrMask"`
}

// IDSCP2 holds the protocol timeouts and limits (idscp2.Config).
type IDSCP2 struct {
	HandshakeTimeout Duration `yaml:"handshakeTimeout"` // 20s
	AckTimeout       Duration `yaml:"ackTimeout"`       // 200ms
	MaxFrameSize     ByteSize `yaml:"maxFrameSize"`     // 16MiB
	// CertExpiryWindow refuses peer certificates expiring sooner than this
	// (24h); a negative value disables the check.
	CertExpiryWindow Duration `yaml:"certExpiryWindow"`
	FrameTimeout     Duration `yaml:"frameTimeout"` // 30s
	WriteTimeout     Duration `yaml:"writeTimeout"` // 30s
}

// Transports (ingress.transports, peers[].transport).
const (
	TransportTCP  = "tcp"
	TransportQUIC = "quic"
)

// KnownTransports are the transport names the configuration accepts.
var KnownTransports = []string{TransportTCP, TransportQUIC}

// Request modes (egress[].mode, ingress.routes[].mode).
const (
	ModeHTTP      = "http"
	ModeMultipart = "multipart"
	ModeAuto      = "auto" // egress only
)

// Ingress is the IDSCP2 listener and its routes to local backends.
type Ingress struct {
	Listen     string   `yaml:"listen"`     // 0.0.0.0:29292
	Transports []string `yaml:"transports"` // [tcp]
	// VerifyClientAddress requires a peer's certificate to carry its
	// source IP as an IP SAN (the reference server's default; off here).
	VerifyClientAddress   bool    `yaml:"verifyClientAddress"`
	MaxConcurrentRequests int     `yaml:"maxConcurrentRequests"` // 256
	Routes                []Route `yaml:"routes"`
}

// Route sends matching incoming IDS messages to a backend. Routes are tried
// in file order; the first whose Match holds is taken, then its Allow
// decides whether the peer may call it.
type Route struct {
	Name    string     `yaml:"name"`
	Backend string     `yaml:"backend"` // http:// or https:// URL
	Mode    string     `yaml:"mode"`    // http (default) | multipart
	Timeout Duration   `yaml:"timeout"` // 30s
	Match   RouteMatch `yaml:"match"`
	Allow   AccessRule `yaml:"allow"`
	// BackendCA is a PEM CA file for an https backend ("" = system roots).
	BackendCA string `yaml:"backendCA"`
	// MaxBodyBytes caps request and response bodies; default limits.maxBodyBytes.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes"`
}

// RouteMatch selects the messages a route takes; every set condition must
// hold, and an empty RouteMatch matches everything.
type RouteMatch struct {
	MessageTypes []string `yaml:"messageTypes"` // compact, e.g. "ids:QueryMessage"
	PathPrefix   string   `yaml:"pathPrefix"`   // of the HTTP path carried in the message
	Peers        []string `yaml:"peers"`        // DAT subjects
}

// AccessRule says who may call a route; every set condition must hold. An
// empty AccessRule admits any peer that completed the IDSCP2 handshake
// (verified DAT and attestation with an expected suite).
type AccessRule struct {
	Subjects []string `yaml:"subjects"` // DAT "sub"
	// Connectors are connector URIs; the peer DAT's referringConnector
	// must be one of them. (A message's issuerConnector is the peer's own
	// claim, attested by nobody, so it is not used.)
	Connectors         []string `yaml:"connectors"`
	MinSecurityProfile string   `yaml:"minSecurityProfile"` // either naming generation
	Suites             []string `yaml:"suites"`             // verifier suite the peer was attested with
}

// IsEmpty reports whether the rule sets no condition.
func (a AccessRule) IsEmpty() bool {
	return len(a.Subjects) == 0 && len(a.Connectors) == 0 && a.MinSecurityProfile == "" && len(a.Suites) == 0
}

// Peer is a remote IDSCP2 endpoint that egress listeners send to.
type Peer struct {
	Name                     string   `yaml:"name"`        // unique, [a-z0-9-]+
	Address                  string   `yaml:"address"`     // host:port
	ServerName               string   `yaml:"serverName"`  // "" = host of Address
	Transport                string   `yaml:"transport"`   // tcp (default) | quic
	PoolSize                 int      `yaml:"poolSize"`    // 2
	DialTimeout              Duration `yaml:"dialTimeout"` // 10s
	SkipHostnameVerification bool     `yaml:"skipHostnameVerification"`
}

// Egress is a local listener whose requests go to one peer.
type Egress struct {
	// Listen is host:port, a bare port meaning 127.0.0.1:port. A
	// non-loopback address needs AllowNonLoopback.
	Listen           string   `yaml:"listen"`
	AllowNonLoopback bool     `yaml:"allowNonLoopback"`
	Peer             string   `yaml:"peer"`         // a peers[].name
	Mode             string   `yaml:"mode"`         // auto (default) | http | multipart
	MessageType      string   `yaml:"messageType"`  // ids:RequestMessage
	Timeout          Duration `yaml:"timeout"`      // 30s
	MaxBodyBytes     ByteSize `yaml:"maxBodyBytes"` // default limits.maxBodyBytes
}

// Limits bound resource use.
type Limits struct {
	// MaxBodyBytes caps HTTP bodies; default idscp2.maxFrameSize minus
	// FrameHeadroom, and it must not exceed that.
	MaxBodyBytes         ByteSize `yaml:"maxBodyBytes"`
	MaxConcurrentPerPeer int      `yaml:"maxConcurrentPerPeer"` // 64
	MaxQueuePerPeer      int      `yaml:"maxQueuePerPeer"`      // 256
	RetryAfter           Duration `yaml:"retryAfter"`           // 1s, sent with 503
}

// FrameHeadroom is what a body leaves of idscp2.maxFrameSize for the IDS
// header, extraHeaders and framing: a body may be at most maxFrameSize −
// FrameHeadroom bytes.
const FrameHeadroom = 64 << 10

// Admin is the metrics and health listener.
type Admin struct {
	Listen string `yaml:"listen"` // 127.0.0.1:9090; "" disables
	Pprof  bool   `yaml:"pprof"`  // serve /debug/pprof/
}

// Shutdown configures SIGTERM handling.
type Shutdown struct {
	DrainTimeout Duration `yaml:"drainTimeout"` // 30s
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
}

// Peer returns the peer called name, or nil.
func (c *Config) Peer(name string) *Peer {
	for i := range c.Peers {
		if c.Peers[i].Name == name {
			return &c.Peers[i]
		}
	}
	return nil
}

// Defaults.
const (
	DefaultIngressListen                  = "0.0.0.0:29292"
	DefaultAdminListen                    = "127.0.0.1:9090"
	DefaultMessageType                    = "ids:RequestMessage"
	DefaultRenewalThreshold               = 0.666
	DefaultPoolSize                       = 2
	DefaultMaxConcurrentRequests          = 256
	DefaultMaxConcurrentPerPeer           = 64
	DefaultMaxQueuePerPeer                = 256
	DefaultLogLevel                       = "info"
	DefaultLogFormat                      = "text"
	DefaultMaxFrameSize          ByteSize = 16 << 20
)

// Default durations.
const (
	DefaultDAPSTimeout      = Duration(1500 * time.Millisecond)
	DefaultLocalLifetime    = Duration(time.Hour)
	DefaultRaInterval       = Duration(time.Hour)
	DefaultHandshakeTimeout = Duration(20 * time.Second)
	DefaultAckTimeout       = Duration(200 * time.Millisecond)
	DefaultCertExpiryWindow = Duration(24 * time.Hour)
	DefaultFrameTimeout     = Duration(30 * time.Second)
	DefaultWriteTimeout     = Duration(30 * time.Second)
	DefaultDialTimeout      = Duration(10 * time.Second)
	DefaultRequestTimeout   = Duration(30 * time.Second) // egress[].timeout, ingress.routes[].timeout
	DefaultRetryAfter       = Duration(time.Second)
	DefaultDrainTimeout     = Duration(30 * time.Second)
)

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// applyDefaults fills in every default. It runs after decoding and before
// validation; values that are invalid are left for validation to report.
func (c *Config) applyDefaults() {
	d := &c.DAPS
	switch d.Mode {
	case DAPSModeDAPS:
		setDefault(&d.Timeout, DefaultDAPSTimeout)
		setDefault(&d.RenewalThreshold, DefaultRenewalThreshold)
	case DAPSModeLocal:
		setDefault(&d.Lifetime, DefaultLocalLifetime)
		setDefault(&d.RenewalThreshold, DefaultRenewalThreshold)
		setDefault(&d.SecurityProfile, "idsc:BASE_SECURITY_PROFILE")
	}

	a := &c.Attestation
	if len(a.SupportedSuites) == 0 {
		a.SupportedSuites = []string{SuiteDummy2}
	}
	if len(a.ExpectedSuites) == 0 {
		a.ExpectedSuites = []string{SuiteDummy2}
	}
	setDefault(&a.Interval, DefaultRaInterval)
	if t := a.TPM; t != nil {
		if slices.Contains(a.SupportedSuites, SuiteTPM) {
			if t.Device == "" && t.Address == "" {
				t.Device = DefaultTPMDevice
			}
			setDefault(&t.AKHandle, DefaultAKHandle)
		}
		if slices.Contains(a.ExpectedSuites, SuiteTPM) {
			setDefault(&t.AttestationType, TPMBasic)
		}
	}

	p := &c.IDSCP2
	setDefault(&p.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&p.AckTimeout, DefaultAckTimeout)
	setDefault(&p.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&p.CertExpiryWindow, DefaultCertExpiryWindow)
	setDefault(&p.FrameTimeout, DefaultFrameTimeout)
	setDefault(&p.WriteTimeout, DefaultWriteTimeout)

	l := &c.Limits
	if l.MaxBodyBytes == 0 && p.MaxFrameSize > FrameHeadroom {
		l.MaxBodyBytes = p.MaxFrameSize - FrameHeadroom
	}
	setDefault(&l.MaxConcurrentPerPeer, DefaultMaxConcurrentPerPeer)
	setDefault(&l.MaxQueuePerPeer, DefaultMaxQueuePerPeer)
	setDefault(&l.RetryAfter, DefaultRetryAfter)

	if in := c.Ingress; in != nil {
		setDefault(&in.Listen, DefaultIngressListen)
		in.Listen = barePort(in.Listen, "0.0.0.0")
		if len(in.Transports) == 0 {
			in.Transports = []string{TransportTCP}
		}
		setDefault(&in.MaxConcurrentRequests, DefaultMaxConcurrentRequests)
		for i := range in.Routes {
			r := &in.Routes[i]
			setDefault(&r.Mode, ModeHTTP)
			setDefault(&r.Timeout, DefaultRequestTimeout)
			setDefault(&r.MaxBodyBytes, l.MaxBodyBytes)
		}
	}
	for i := range c.Peers {
		pe := &c.Peers[i]
		setDefault(&pe.Transport, TransportTCP)
		setDefault(&pe.PoolSize, DefaultPoolSize)
		setDefault(&pe.DialTimeout, DefaultDialTimeout)
		if pe.ServerName == "" {
			if host, _, err := net.SplitHostPort(pe.Address); err == nil {
				pe.ServerName = host
			}
		}
	}
	for i := range c.Egress {
		e := &c.Egress[i]
		e.Listen = barePort(e.Listen, "127.0.0.1")
		setDefault(&e.Mode, ModeAuto)
		setDefault(&e.MessageType, DefaultMessageType)
		setDefault(&e.Timeout, DefaultRequestTimeout)
		setDefault(&e.MaxBodyBytes, l.MaxBodyBytes)
	}
	// Admin.Listen is pre-set before decoding: an explicit "" disables it.
	c.Admin.Listen = barePort(c.Admin.Listen, "127.0.0.1")
	setDefault(&c.Shutdown.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
}

// barePort turns "8081" into host:8081; anything else is returned as is.
func barePort(s, host string) string {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		return net.JoinHostPort(host, s)
	}
	return s
}

// resolvePaths makes every relative file path absolute against dir.
func (c *Config) resolvePaths(dir string) {
	if dir == "" {
		return
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Identity.Cert)
	abs(&c.Identity.Key)
	abs(&c.Identity.CA)
	abs(&c.DAPS.CAFile)
	abs(&c.DAPS.KeyFile)
	if t := c.Attestation.TPM; t != nil {
		abs(&t.AKCert)
		abs(&t.Roots)
		abs(&t.GoldenValues)
		for i := range t.PinnedKeys {
			abs(&t.PinnedKeys[i])
		}
	}
	if c.Ingress != nil {
		for i := range c.Ingress.Routes {
			abs(&c.Ingress.Routes[i].BackendCA)
		}
	}
}
