package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func newBundle(t *testing.T) *Bundle {
	t.Helper()
	b, err := NewBundle()
	if err != nil {
		t.Fatalf("NewBundle: %v", err)
	}
	return b
}

func verify(leaf *Leaf, roots *x509.CertPool, usage x509.ExtKeyUsage, at time.Time) error {
	_, err := leaf.Cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		KeyUsages:   []x509.ExtKeyUsage{usage},
		CurrentTime: at,
	})
	return err
}

func TestBundleVerifies(t *testing.T) {
	b := newBundle(t)
	pool := b.CA.Pool()
	now := time.Now()
	good := map[string]*Leaf{
		"server":         b.Server,
		"client":         b.Client,
		"almost-expired": b.AlmostExpired,
		"wrong-san":      b.WrongSAN,
		"no-san":         b.NoSAN,
	}
	for name, leaf := range good {
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if err := verify(leaf, pool, u, now); err != nil {
				t.Errorf("%s usage %v: %v", name, u, err)
			}
		}
	}

	// Foreign is valid under its own CA, but not under ours.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verify(b.Foreign, b.ForeignCA.Pool(), u, now); err != nil {
			t.Errorf("foreign under ForeignCA usage %v: %v", u, err)
		}
		var uae x509.UnknownAuthorityError
		if err := verify(b.Foreign, pool, u, now); !errors.As(err, &uae) {
			t.Errorf("foreign under CA usage %v: got %v, want UnknownAuthorityError", u, err)
		}
	}

	// Expired fails with an expiry error, and the whole window is past.
	var cie x509.CertificateInvalidError
	if err := verify(b.Expired, pool, x509.ExtKeyUsageServerAuth, now); !errors.As(err, &cie) || cie.Reason != x509.Expired {
		t.Errorf("expired: got %v, want CertificateInvalidError{Reason: Expired}", err)
	}
	if !b.Expired.Cert.NotAfter.Before(now) || !b.Expired.Cert.NotBefore.Before(b.Expired.Cert.NotAfter) {
		t.Errorf("expired window %v..%v not entirely in the past", b.Expired.Cert.NotBefore, b.Expired.Cert.NotAfter)
	}

	// AlmostExpired is valid now but would fail a 24 h validity-window check.
	if left := time.Until(b.AlmostExpired.Cert.NotAfter); left <= 0 || left > time.Hour+time.Minute {
		t.Errorf("almost-expired has %v left, want about 1h", left)
	}
	if err := verify(b.AlmostExpired, pool, x509.ExtKeyUsageServerAuth, now.Add(24*time.Hour)); !errors.As(err, &cie) || cie.Reason != x509.Expired {
		t.Errorf("almost-expired at now+24h: got %v, want expiry error", err)
	}
}

func TestBundleSANs(t *testing.T) {
	b := newBundle(t)
	for name, leaf := range map[string]*Leaf{
		"server": b.Server, "client": b.Client, "almost-expired": b.AlmostExpired,
		"foreign": b.Foreign, "expired": b.Expired,
	} {
		c := leaf.Cert
		if !reflect.DeepEqual(c.DNSNames, []string{"localhost"}) {
			t.Errorf("%s DNSNames = %v", name, c.DNSNames)
		}
		if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
			t.Errorf("%s IPAddresses = %v", name, c.IPAddresses)
		}
		for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
			if err := c.VerifyHostname(h); err != nil {
				t.Errorf("%s VerifyHostname(%q): %v", name, h, err)
			}
		}
	}

	w := b.WrongSAN.Cert
	if !reflect.DeepEqual(w.DNSNames, []string{"wrong.example"}) || len(w.IPAddresses) != 0 {
		t.Errorf("wrong-san SANs = %v %v", w.DNSNames, w.IPAddresses)
	}
	if err := w.VerifyHostname("localhost"); err == nil {
		t.Error("wrong-san unexpectedly valid for localhost")
	}

	n := b.NoSAN.Cert
	if n.Subject.CommonName != "localhost" {
		t.Errorf("no-san CN = %q", n.Subject.CommonName)
	}
	if len(n.DNSNames)+len(n.IPAddresses)+len(n.EmailAddresses)+len(n.URIs) != 0 {
		t.Errorf("no-san has SANs: %v %v %v %v", n.DNSNames, n.IPAddresses, n.EmailAddresses, n.URIs)
	}
	for _, e := range n.Extensions {
		if e.Id.Equal([]int{2, 5, 29, 17}) {
			t.Error("no-san carries a SubjectAltName extension")
		}
	}
	if err := n.VerifyHostname("localhost"); err == nil {
		t.Error("no-san unexpectedly valid for localhost (CN must not count)")
	}
}

// wantSKI recomputes the RFC 5280 method-1 key id independently of the
// package: the subjectPublicKey BIT STRING is the uncompressed point for
// ECDSA, the raw key for Ed25519 and the PKCS#1 RSAPublicKey for RSA.
func wantSKI(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	var bits []byte
	switch pub := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		var err error
		if bits, err = pub.Bytes(); err != nil {
			t.Fatal(err)
		}
	case ed25519.PublicKey:
		bits = pub
	case *rsa.PublicKey:
		bits = x509.MarshalPKCS1PublicKey(pub)
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
	sum := sha1.Sum(bits)
	return sum[:]
}

func TestKeyIdentifiers(t *testing.T) {
	b := newBundle(t)
	for _, ca := range []*CA{b.CA, b.ForeignCA} {
		if !bytes.Equal(ca.Cert.SubjectKeyId, wantSKI(t, ca.Cert)) {
			t.Errorf("CA %q SKI %x, want %x", ca.Cert.Subject.CommonName, ca.Cert.SubjectKeyId, wantSKI(t, ca.Cert))
		}
		if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid {
			t.Errorf("CA %q not marked as CA", ca.Cert.Subject.CommonName)
		}
	}
	check := func(name string, leaf *Leaf, ca *CA) {
		c := leaf.Cert
		if len(c.SubjectKeyId) != sha1.Size || !bytes.Equal(c.SubjectKeyId, wantSKI(t, c)) {
			t.Errorf("%s SKI %x, want %x", name, c.SubjectKeyId, wantSKI(t, c))
		}
		if len(c.AuthorityKeyId) == 0 || !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
			t.Errorf("%s AKI %x, want CA SKI %x", name, c.AuthorityKeyId, ca.Cert.SubjectKeyId)
		}
	}
	for _, l := range b.leaves() {
		ca := b.CA
		if l.leaf == b.Foreign {
			ca = b.ForeignCA
		}
		check(l.name, l.leaf, ca)
	}
	if bytes.Equal(b.CA.Cert.SubjectKeyId, b.ForeignCA.Cert.SubjectKeyId) {
		t.Error("CA and ForeignCA share a SKI")
	}
}

func TestLeafProfile(t *testing.T) {
	b := newBundle(t)
	serials := map[string]string{}
	for _, l := range b.leaves() {
		c := l.leaf.Cert
		if !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s ExtKeyUsage = %v", l.name, c.ExtKeyUsage)
		}
		if c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s KeyUsage = %v", l.name, c.KeyUsage)
		}
		if !c.BasicConstraintsValid || c.IsCA {
			t.Errorf("%s basic constraints: valid=%v isCA=%v", l.name, c.BasicConstraintsValid, c.IsCA)
		}
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
			t.Errorf("%s serial %v out of range", l.name, c.SerialNumber)
		}
		if prev, dup := serials[c.SerialNumber.String()]; dup {
			t.Errorf("%s and %s share serial %v", l.name, prev, c.SerialNumber)
		}
		serials[c.SerialNumber.String()] = l.name
		if c.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("%s bundle key is %v, want ECDSA", l.name, c.PublicKeyAlgorithm)
		}
	}
}

func TestKeyTypes(t *testing.T) {
	ca, err := NewCA("key type CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kt    KeyType
		alg   x509.PublicKeyAlgorithm
		usage x509.KeyUsage
	}{
		{ECDSAP256, x509.ECDSA, x509.KeyUsageDigitalSignature},
		{RSA2048, x509.RSA, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{Ed25519, x509.Ed25519, x509.KeyUsageDigitalSignature},
	} {
		t.Run(tc.kt.String(), func(t *testing.T) {
			leaf, err := ca.Issue(LeafOptions{CommonName: "peer", DNSNames: []string{"localhost"}, KeyType: tc.kt})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if leaf.Cert.PublicKeyAlgorithm != tc.alg {
				t.Errorf("algorithm %v, want %v", leaf.Cert.PublicKeyAlgorithm, tc.alg)
			}
			if leaf.Cert.KeyUsage != tc.usage {
				t.Errorf("KeyUsage %v, want %v", leaf.Cert.KeyUsage, tc.usage)
			}
			if !bytes.Equal(leaf.Cert.SubjectKeyId, wantSKI(t, leaf.Cert)) {
				t.Errorf("SKI %x, want %x", leaf.Cert.SubjectKeyId, wantSKI(t, leaf.Cert))
			}
			if !bytes.Equal(leaf.Cert.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Errorf("AKI %x, want CA SKI %x", leaf.Cert.AuthorityKeyId, ca.Cert.SubjectKeyId)
			}
			if err := verify(leaf, ca.Pool(), x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
				t.Errorf("verify: %v", err)
			}

			if blk, _ := pem.Decode(leaf.KeyPEM); blk == nil || blk.Type != "PRIVATE KEY" {
				t.Fatalf("KeyPEM is not a PKCS#8 PRIVATE KEY block")
			}
			pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
			if err != nil {
				t.Fatalf("X509KeyPair: %v", err)
			}
			if len(pair.Certificate) != 1 || !bytes.Equal(pair.Certificate[0], leaf.Cert.Raw) {
				t.Error("X509KeyPair certificate differs from Cert")
			}
			if !reflect.DeepEqual(pair.PrivateKey, leaf.Key) {
				t.Error("X509KeyPair private key differs from Key")
			}

			// The ready-made TLS field must match what X509KeyPair builds.
			if len(leaf.TLS.Certificate) != 1 || !bytes.Equal(leaf.TLS.Certificate[0], pair.Certificate[0]) {
				t.Error("TLS.Certificate is not [leaf DER]")
			}
			if !reflect.DeepEqual(leaf.TLS.PrivateKey, pair.PrivateKey) {
				t.Error("TLS.PrivateKey differs from parsed key")
			}
			if leaf.TLS.Leaf != leaf.Cert {
				t.Error("TLS.Leaf not set to Cert")
			}
		})
	}
	if _, err := ca.Issue(LeafOptions{KeyType: KeyType(99)}); err == nil {
		t.Error("Issue accepted an unknown key type")
	}
}

func TestIssueValidityDefaults(t *testing.T) {
	ca, err := NewCA("validity CA")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	leaf, err := ca.Issue(LeafOptions{CommonName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	nb, na := leaf.Cert.NotBefore, leaf.Cert.NotAfter
	if d := before.Add(-time.Hour).Sub(nb); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("default NotBefore %v, want about now-1h", nb)
	}
	if d := before.AddDate(1, 0, 0).Sub(na); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("default NotAfter %v, want about now+1y", na)
	}
	if ca.Cert.NotAfter.Before(before.AddDate(10, 0, 0).Add(-time.Minute)) || !ca.Cert.NotBefore.Before(before) {
		t.Errorf("CA validity %v..%v, want now-1h..now+10y", ca.Cert.NotBefore, ca.Cert.NotAfter)
	}
	if _, err := ca.Issue(LeafOptions{NotBefore: before, NotAfter: before.Add(-time.Second)}); err == nil {
		t.Error("Issue accepted NotAfter before NotBefore")
	}
}

func TestWriteFiles(t *testing.T) {
	b := newBundle(t)
	dir := filepath.Join(t.TempDir(), "pki")
	if err := b.WriteFiles(dir); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	// Writing twice must keep working and keep key permissions tight.
	if err := b.WriteFiles(dir); err != nil {
		t.Fatalf("second WriteFiles: %v", err)
	}

	for name, ca := range map[string]*CA{"ca.pem": b.CA, "foreign-ca.pem": b.ForeignCA} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			t.Fatalf("%s: no certificate", name)
		}
		if !bytes.Equal(data, ca.CertPEM) {
			t.Errorf("%s content differs from CertPEM", name)
		}
	}

	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots.AppendCertsFromPEM(caPEM)

	want := []string{"server", "client", "expired", "almost-expired", "foreign", "wrong-san", "no-san"}
	for i, l := range b.leaves() {
		if l.name != want[i] {
			t.Fatalf("leaf %d named %q, want %q", i, l.name, want[i])
		}
		certFile := filepath.Join(dir, l.name+".pem")
		keyFile := filepath.Join(dir, l.name+"-key.pem")
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Errorf("%s: LoadX509KeyPair: %v", l.name, err)
			continue
		}
		if !bytes.Equal(pair.Certificate[0], l.leaf.Cert.Raw) {
			t.Errorf("%s: file certificate differs", l.name)
		}
		fi, err := os.Stat(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: key mode %v, want 0600", l.name, perm)
		}
		fi, err = os.Stat(certFile)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o644 {
			t.Errorf("%s: cert mode %v, want 0644", l.name, perm)
		}
		if l.name == "server" {
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
				t.Errorf("server from files does not verify against ca.pem: %v", err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(entries); got != 2+2*len(want) {
		t.Errorf("%d files written, want %d", got, 2+2*len(want))
	}
}

func BenchmarkNewBundle(b *testing.B) {
	for b.Loop() {
		if _, err := NewBundle(); err != nil {
			b.Fatal(err)
		}
	}
}
