package idscp2

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Defaults, as idscp2-jvm 0.19.x ships them unless noted.
const (
	DefaultHandshakeTimeout = 20 * time.Second
	DefaultAckTimeout       = 200 * time.Millisecond
	DefaultRaInterval       = time.Hour
	DefaultCertExpiryWindow = 24 * time.Hour
	DefaultFrameTimeout     = 30 * time.Second // ours: the reference loses the frame after 5 s
	DefaultWriteTimeout     = 30 * time.Second // ours: a peer that stops reading is cut off
	DefaultRecvQueue        = 64               // ours: delivered messages held before ACKs are withheld
	DefaultMaxHandshakes    = 1024             // ours: concurrent unfinished handshakes per listener
)

// Config configures connections in both roles. The zero value of every
// optional field means the default above. A Config must not be modified
// after it has been passed to Dial or Listen.
type Config struct {
	// Certificate is this side's TLS identity. GetCertificate, if set, is
	// asked on every handshake instead, so certificates can be reloaded.
	Certificate    *tls.Certificate
	GetCertificate func() (*tls.Certificate, error)
	// Roots are the CAs the peer's certificate must chain to. GetRoots, if
	// set, is asked on every handshake instead, so the CA bundle can be
	// reloaded.
	Roots    *x509.CertPool
	GetRoots func() *x509.CertPool

	// DAT issues this side's DAT and verifies the peer's.
	DAT dat.Driver
	// Attestation maps suite names to drivers; nil means attestation.Default().
	Attestation *attestation.Registry
	// SupportedSuites (as prover) and ExpectedSuites (as verifier), in
	// priority order. Both default to ["Dummy2"].
	SupportedSuites []string
	ExpectedSuites  []string

	HandshakeTimeout time.Duration // Hello, requested DAT and each driver run
	AckTimeout       time.Duration // retransmission of unacknowledged data
	RaInterval       time.Duration // periodic re-attestation of the peer

	// MaxFrameSize caps frames in both directions (DefaultMaxFrameSize).
	MaxFrameSize int
	// FrameTimeout bounds the wait for each chunk once a frame has started.
	FrameTimeout time.Duration
	// WriteTimeout bounds each write to the peer.
	WriteTimeout time.Duration
	// RecvQueue is how many delivered messages may wait for Recv with their
	// ACKs sent; the ACK of one more is withheld until Recv makes room,
	// which stops the peer from sending.
	RecvQueue int

	// CertExpiryWindow refuses peer certificates that expire sooner than
	// this (the reference: 24 h). Negative disables the check.
	CertExpiryWindow time.Duration
	// SkipHostnameVerification disables the client's check of the server
	// certificate's SANs against the dialled host (the reference's
	// unsafeDisableHostnameVerification). The chain is still verified.
	SkipHostnameVerification bool
	// VerifyClientAddress makes a server require the client certificate to
	// carry the client's source IP as an IP SAN, as the reference server
	// does by default. Off by default: NAT and proxies break it.
	VerifyClientAddress bool
	// CurvePreferences for the TLS key exchange. Default X25519, P-256: the
	// reference (Java 17) offers no hybrid post-quantum group, so sending
	// one only costs CPU. Set it to include tls.X25519MLKEM768 between Go peers.
	CurvePreferences []tls.CurveID

	// MaxHandshakes bounds a listener's concurrent unfinished handshakes.
	MaxHandshakes int

	// Logger receives connection logs; nil means slog.Default().
	Logger *slog.Logger
	// OnStateChange, if set, is called after every state change, outside the
	// connection's lock, in the order the changes happened. It must not block.
	OnStateChange func(c *Conn, from, to fsm.State)
	// OnHandshakeError, if set, is told about every handshake a Listener
	// failed, which Accept never returns.
	OnHandshakeError func(remote net.Addr, err error)
	// Observer receives counts for metrics; nil means none.
	Observer Observer
}

// resolved returns a copy with defaults filled in, or an error naming the
// first thing that is wrong.
func (c *Config) resolved() (*Config, error) {
	if c == nil {
		return nil, errors.New("idscp2: nil Config")
	}
	r := *c
	if r.Certificate == nil && r.GetCertificate == nil {
		return nil, errors.New("idscp2: Config needs Certificate or GetCertificate")
	}
	if r.Roots == nil && r.GetRoots == nil {
		return nil, errors.New("idscp2: Config needs Roots or GetRoots to verify peers")
	}
	if r.DAT == nil {
		return nil, errors.New("idscp2: Config needs a DAT driver (dat.NewNull for tests)")
	}
	if r.Attestation == nil {
		r.Attestation = attestation.Default()
	}
	if len(r.SupportedSuites) == 0 {
		r.SupportedSuites = []string{attestation.Dummy2}
	}
	if len(r.ExpectedSuites) == 0 {
		r.ExpectedSuites = []string{attestation.Dummy2}
	}
	if err := r.Attestation.Check(r.SupportedSuites, r.ExpectedSuites); err != nil {
		return nil, err
	}
	setDefault(&r.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&r.AckTimeout, DefaultAckTimeout)
	setDefault(&r.RaInterval, DefaultRaInterval)
	setDefault(&r.FrameTimeout, DefaultFrameTimeout)
	setDefault(&r.WriteTimeout, DefaultWriteTimeout)
	setDefault(&r.CertExpiryWindow, DefaultCertExpiryWindow)
	setDefault(&r.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&r.RecvQueue, DefaultRecvQueue)
	setDefault(&r.MaxHandshakes, DefaultMaxHandshakes)
	if r.MaxFrameSize < 64 {
		return nil, fmt.Errorf("idscp2: MaxFrameSize %d is too small", r.MaxFrameSize)
	}
	if len(r.CurvePreferences) == 0 {
		r.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.Observer == nil {
		r.Observer = nopObserver{}
	}
	return &r, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

func (c *Config) fsmConfig() fsm.Config {
	return fsm.Config{
		SupportedSuites:  c.SupportedSuites,
		ExpectedSuites:   c.ExpectedSuites,
		HandshakeTimeout: c.HandshakeTimeout,
		AckTimeout:       c.AckTimeout,
		RaInterval:       c.RaInterval,
	}
}
