package idscp2

// Integration tests of the TLS layer and the reference's peer checks
// (spec §1.2, §1.3): every refusal is a Dial or handshake error, and the
// listener goes on serving the next good client.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// wantPeerCertError checks that err carries a *PeerCertError whose reason
// contains substr.
func wantPeerCertError(t testing.TB, who string, err error, substr string) {
	t.Helper()
	var pce *PeerCertError
	if !errors.As(err, &pce) {
		t.Errorf("%s: %v (%T) has no *PeerCertError in its chain", who, err, err)
		return
	}
	if !strings.Contains(pce.Reason, substr) {
		t.Errorf("%s: refusal reason %q does not mention %q", who, pce.Reason, substr)
	}
}

// serveNext checks that ln still completes a handshake with a good client
// and carries data.
func serveNext(t testing.TB, ln *Listener, clientCfg *Config) {
	t.Helper()
	client, server := dialAccept(t, ln, clientCfg)
	checkEcho(t, client, server, "next client")
	client.Close()
	server.Close()
}

// TestIntegrationTLSRefusedClients: clients the listener must refuse.
func TestIntegrationTLSRefusedClients(t *testing.T) {
	checkNoLeak(t)
	scfg := itConfig(testPKI.Server)
	hs := hsErrors(scfg)
	ln := listen(t, scfg)

	t.Run("TLS 1.2 only", func(t *testing.T) {
		cfg := rawClientTLS(testPKI.Client)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		tc, err := rawDial(t, ln, cfg)
		if err == nil {
			tc.SetDeadline(time.Now().Add(itWait))
			_, err = tc.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatal("a TLS 1.2 client got through")
		}
		herr := nextHSErr(t, hs)
		if !strings.Contains(herr.Error(), "version") {
			t.Errorf("listener error %q does not mention the protocol version", herr)
		}
		serveNext(t, ln, itConfig(testPKI.Client))
	})

	t.Run("no certificate", func(t *testing.T) {
		tc, err := rawDial(t, ln, rawClientTLS(nil))
		if err == nil {
			// TLS 1.3: the client finishes first; the refusal arrives as
			// an alert on the first read, instead of the listener's Hello.
			tc.SetDeadline(time.Now().Add(itWait))
			var b []byte
			b, err = io.ReadAll(tc)
			if len(b) > 0 {
				t.Errorf("the listener sent %x to a client without a certificate", b)
			}
			if err == nil {
				err = errors.New("clean EOF")
			}
		}
		t.Logf("client: %v", err)
		herr := nextHSErr(t, hs)
		if !strings.Contains(herr.Error(), "certificate") {
			t.Errorf("listener error %q does not mention the certificate", herr)
		}
		serveNext(t, ln, itConfig(testPKI.Client))
	})

	for _, tc := range []struct {
		name  string
		leaf  *testpki.Leaf
		check func(t *testing.T, herr error)
	}{
		{"foreign CA", testPKI.Foreign, func(t *testing.T, herr error) {
			var uae x509.UnknownAuthorityError
			if !errors.As(herr, &uae) {
				t.Errorf("listener error %v: want x509.UnknownAuthorityError", herr)
			}
		}},
		{"expired", testPKI.Expired, func(t *testing.T, herr error) {
			var cie x509.CertificateInvalidError
			if !errors.As(herr, &cie) || cie.Reason != x509.Expired {
				t.Errorf("listener error %v: want x509.CertificateInvalidError Expired", herr)
			}
		}},
		{"almost expired", testPKI.AlmostExpired, func(t *testing.T, herr error) {
			wantPeerCertError(t, "listener", herr, "validity window")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(itCtx(t), "tcp", dialAddr(ln), itConfig(tc.leaf))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			t.Logf("client: %v", err)
			tc.check(t, nextHSErr(t, hs))
			serveNext(t, ln, itConfig(testPKI.Client))
		})
	}
	noHSErr(t, hs)
}

// TestIntegrationTLSRefusedServers: servers the client must refuse when it
// dials "localhost".
func TestIntegrationTLSRefusedServers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leaf   *testpki.Leaf
		reason string
	}{
		{"wrong SAN", testPKI.WrongSAN, "does not belong to peer host localhost"},
		{"no SAN", testPKI.NoSAN, "no subjectAltName"},
		{"almost expired", testPKI.AlmostExpired, "validity window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			scfg := itConfig(tc.leaf)
			hs := hsErrors(scfg)
			ln := listen(t, scfg)
			c, err := Dial(itCtx(t), "tcp", dialAddr(ln), itConfig(testPKI.Client))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			wantPeerCertError(t, "client", err, tc.reason)
			nextHSErr(t, hs) // the client's alert aborts the listener's handshake

			// The listener still serves a client that waives the failed check.
			next := itConfig(testPKI.Client)
			if tc.leaf == testPKI.AlmostExpired {
				next.CertExpiryWindow = -1
			} else {
				next.SkipHostnameVerification = true
			}
			serveNext(t, ln, next)
			noHSErr(t, hs)
		})
	}

	// SkipHostnameVerification still verifies the chain.
	t.Run("foreign CA with SkipHostnameVerification", func(t *testing.T) {
		checkNoLeak(t)
		ln := listen(t, itConfig(testPKI.Foreign))
		cfg := itConfig(testPKI.Client)
		cfg.SkipHostnameVerification = true
		c, err := Dial(itCtx(t), "tcp", dialAddr(ln), cfg)
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded against an untrusted server")
		}
		var uae x509.UnknownAuthorityError
		if !errors.As(err, &uae) {
			t.Errorf("client: %v, want x509.UnknownAuthorityError", err)
		}
	})
}

// TestIntegrationVerifyClientAddress: with VerifyClientAddress the client
// certificate must carry the client's source IP (127.0.0.1) as an IP SAN.
func TestIntegrationVerifyClientAddress(t *testing.T) {
	checkNoLeak(t)
	dnsOnly, err := testPKI.CA.Issue(testpki.LeafOptions{CommonName: "dns-only", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	otherIP, err := testPKI.CA.Issue(testpki.LeafOptions{CommonName: "other-ip", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(192, 0, 2, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	scfg := itConfig(testPKI.Server)
	scfg.VerifyClientAddress = true
	hs := hsErrors(scfg)
	ln := listen(t, scfg)

	for name, leaf := range map[string]*testpki.Leaf{"DNS SAN only": dnsOnly, "other IP SAN": otherIP} {
		c, err := Dial(itCtx(t), "tcp", dialAddr(ln), itConfig(leaf))
		if err == nil {
			c.Close()
			t.Fatalf("%s: Dial succeeded", name)
		}
		wantPeerCertError(t, name+": listener", nextHSErr(t, hs), "127.0.0.1")
	}
	serveNext(t, ln, itConfig(testPKI.Client))
	noHSErr(t, hs)

	// Without the option the same certificate is accepted.
	ln2 := listen(t, itConfig(testPKI.Server))
	serveNext(t, ln2, itConfig(dnsOnly))
}
