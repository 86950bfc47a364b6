package idscp2

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// PeerCertError reports a peer certificate refused by the IDSCP2 peer checks
// that run after the TLS chain is verified.
type PeerCertError struct {
	Subject string
	Reason  string
}

func (e *PeerCertError) Error() string {
	return fmt.Sprintf("idscp2: peer certificate %q refused: %s", e.Subject, e.Reason)
}

// handshakeState collects what one TLS handshake learns about the local side,
// so attestation can bind to the exact certificate that was presented.
type handshakeState struct {
	localCert *x509.Certificate
}

func (c *Config) currentCertificate() (*tls.Certificate, error) {
	if c.GetCertificate != nil {
		return c.GetCertificate()
	}
	return c.Certificate, nil
}

// leafOf returns the parsed leaf of cert, parsing it if needed.
func leafOf(cert *tls.Certificate) (*x509.Certificate, error) {
	if cert.Leaf != nil {
		return cert.Leaf, nil
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("idscp2: local certificate is empty")
	}
	return x509.ParseCertificate(cert.Certificate[0])
}

// baseTLS holds what client and server configurations share: TLS 1.3 only
// (as the reference), no session tickets so every connection is fully
// authenticated, and verification done by verifyPeer rather than by
// crypto/tls, so that both roles apply the same checks with clear errors.
func (c *Config) baseTLS(hs *handshakeState) *tls.Config {
	pick := func() (*tls.Certificate, error) {
		cert, err := c.currentCertificate()
		if err != nil {
			return nil, err
		}
		if hs.localCert, err = leafOf(cert); err != nil {
			return nil, err
		}
		return cert, nil
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		CurvePreferences:       c.CurvePreferences,
		SessionTicketsDisabled: true,
		InsecureSkipVerify:     true, // verifyPeer does it; see VerifyConnection
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return pick()
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pick()
		},
	}
}

// clientTLS is the configuration for dialling host.
func (c *Config) clientTLS(host string, hs *handshakeState) *tls.Config {
	t := c.baseTLS(hs)
	t.ServerName = host
	if _, err := netip.ParseAddr(host); err == nil {
		t.ServerName = "" // no SNI for IP literals (RFC 6066)
	}
	verifyHost := host
	if c.SkipHostnameVerification {
		verifyHost = ""
	}
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		return c.verifyPeer(cs, x509.ExtKeyUsageServerAuth, verifyHost)
	}
	return t
}

// serverTLS is the configuration for one accepted connection from remote.
func (c *Config) serverTLS(remote net.Addr, hs *handshakeState) *tls.Config {
	t := c.baseTLS(hs)
	t.ClientAuth = tls.RequireAnyClientCert
	verifyHost := ""
	if c.VerifyClientAddress {
		if ta, ok := remote.(*net.TCPAddr); ok {
			verifyHost = ta.IP.String()
		}
	}
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		return c.verifyPeer(cs, x509.ExtKeyUsageClientAuth, verifyHost)
	}
	return t
}

// verifyPeer applies the reference's peer checks to a completed handshake:
// the chain to Roots, the SANs (only SANs: a CN is never used) against host
// when host is set, and a validity that lasts at least CertExpiryWindow.
func (c *Config) verifyPeer(cs tls.ConnectionState, usage x509.ExtKeyUsage, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("idscp2: peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	roots := c.Roots
	if c.GetRoots != nil {
		roots = c.GetRoots()
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("idscp2: peer certificate %q: %w", leaf.Subject, err)
	}
	if host != "" {
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			return &PeerCertError{Subject: leaf.Subject.String(), Reason: "it has no subjectAltName"}
		}
		if err := leaf.VerifyHostname(host); err != nil {
			return &PeerCertError{Subject: leaf.Subject.String(), Reason: fmt.Sprintf(
				"it does not belong to peer host %s (DNS SANs %q, IP SANs %v)", host, leaf.DNSNames, leaf.IPAddresses)}
		}
	}
	if c.CertExpiryWindow > 0 {
		if limit := time.Now().Add(c.CertExpiryWindow); leaf.NotAfter.Before(limit) {
			return &PeerCertError{Subject: leaf.Subject.String(), Reason: fmt.Sprintf(
				"it expires at %s, within the required validity window of %s", leaf.NotAfter.UTC().Format(time.RFC3339), c.CertExpiryWindow)}
		}
	}
	return nil
}
