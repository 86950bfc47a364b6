// Package testpki generates throw-away PKIs in memory for tests.
//
// Everything is generated at run time with the standard library, so no
// private key ever has to be committed to the repository. The certificates
// mirror what the sidecar expects in production: leaves are usable for both
// TLS client and server authentication (IDSCP2 is symmetric, both peers
// present a certificate), and every certificate carries an explicit
// SubjectKeyIdentifier, with leaves also carrying an AuthorityKeyIdentifier,
// because the DAPS connector id is derived as "SKI:keyid:AKI".
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyType selects the leaf key algorithm. The zero value is ECDSA P-256,
// because it is by far the fastest to generate and keeps tests quick.
type KeyType int

const (
	// ECDSAP256 is an ECDSA key on NIST P-256 (the default).
	ECDSAP256 KeyType = iota
	// RSA2048 is a 2048-bit RSA key; slow to generate, so only made on request.
	RSA2048
	// Ed25519 is an Ed25519 key.
	Ed25519
)

// String returns a short name, useful for sub-test and benchmark names.
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ECDSAP256"
	case RSA2048:
		return "RSA2048"
	case Ed25519:
		return "Ed25519"
	default:
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
}

// CA is a self-signed certificate authority that can issue leaves.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA creates a self-signed ECDSA P-256 root valid from one hour ago (to
// tolerate clock skew) for ten years, so tests never trip over CA expiry.
func NewCA(commonName string) (*CA, error) {
	key, err := generateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true, // roots issue leaves directly; no intermediates
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("testpki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der)}, nil
}

// Pool returns a fresh pool containing only this CA, suitable for
// tls.Config.RootCAs / ClientCAs or x509.VerifyOptions.Roots.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// LeafOptions describes a leaf certificate to issue.
type LeafOptions struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// NotBefore and NotAfter default (each, when zero) to now-1h and now+1y.
	NotBefore, NotAfter time.Time
	KeyType             KeyType
}

// Leaf is an issued end-entity certificate with its key in the forms tests
// typically need: parsed, PEM, and ready-to-use tls.Certificate.
type Leaf struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte // PKCS#8 "PRIVATE KEY", loadable by tls.X509KeyPair
	TLS     tls.Certificate
}

// Issue signs a new leaf for o. Leaves get both ServerAuth and ClientAuth
// because IDSCP2 peers authenticate each other with the same certificate.
func (ca *CA) Issue(o LeafOptions) (*Leaf, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("testpki: Issue on incomplete CA")
	}
	now := time.Now()
	notBefore, notAfter := o.NotBefore, o.NotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.AddDate(1, 0, 0)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("testpki: NotAfter %v not after NotBefore %v", notAfter, notBefore)
	}

	key, err := generateKey(o.KeyType)
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if o.KeyType == RSA2048 {
		// RSA key exchange (non-ECDHE suites) encrypts to the leaf key.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
		// AuthorityKeyId is left empty: CreateCertificate copies it from
		// the parent's SubjectKeyId (checked by the tests).
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: create leaf certificate %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse leaf certificate %q: %w", o.CommonName, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpki: marshal leaf key: %w", err)
	}
	return &Leaf{
		Cert:    cert,
		Key:     key,
		CertPEM: encodeCert(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		TLS: tls.Certificate{
			Certificate: [][]byte{der},
			PrivateKey:  key,
			Leaf:        cert,
		},
	}, nil
}

// Bundle is the standard set of certificates the sidecar tests need: good
// peers plus one leaf for each way a peer certificate can be unacceptable.
type Bundle struct {
	CA, ForeignCA *CA

	Server, Client *Leaf // SAN DNS "localhost", IP 127.0.0.1 and ::1
	Expired        *Leaf // whole validity window lies in the past
	AlmostExpired  *Leaf // expires in 1 hour: fails a 24 h remaining-validity check
	Foreign        *Leaf // issued by ForeignCA, not trusted by CA.Pool()
	WrongSAN       *Leaf // SAN DNS "wrong.example" only
	NoSAN          *Leaf // CN "localhost" but no SAN extension at all
}

// NewBundle generates a fresh Bundle (all ECDSA P-256, so it is fast).
func NewBundle() (*Bundle, error) {
	ca, err := NewCA("IDSCP2 Test CA")
	if err != nil {
		return nil, err
	}
	foreignCA, err := NewCA("IDSCP2 Foreign Test CA")
	if err != nil {
		return nil, err
	}
	localDNS := []string{"localhost"}
	localIPs := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	now := time.Now()

	b := &Bundle{CA: ca, ForeignCA: foreignCA}
	for _, it := range []struct {
		dst  **Leaf
		ca   *CA
		opts LeafOptions
	}{
		{&b.Server, ca, LeafOptions{CommonName: "server", DNSNames: localDNS, IPs: localIPs}},
		{&b.Client, ca, LeafOptions{CommonName: "client", DNSNames: localDNS, IPs: localIPs}},
		{&b.Expired, ca, LeafOptions{
			CommonName: "expired", DNSNames: localDNS, IPs: localIPs,
			NotBefore: now.AddDate(0, 0, -30), NotAfter: now.AddDate(0, 0, -1),
		}},
		{&b.AlmostExpired, ca, LeafOptions{
			CommonName: "almost-expired", DNSNames: localDNS, IPs: localIPs,
			NotAfter: now.Add(time.Hour),
		}},
		{&b.Foreign, foreignCA, LeafOptions{CommonName: "foreign", DNSNames: localDNS, IPs: localIPs}},
		{&b.WrongSAN, ca, LeafOptions{CommonName: "wrong-san", DNSNames: []string{"wrong.example"}}},
		{&b.NoSAN, ca, LeafOptions{CommonName: "localhost"}},
	} {
		leaf, err := it.ca.Issue(it.opts)
		if err != nil {
			return nil, err
		}
		*it.dst = leaf
	}
	return b, nil
}

// WriteFiles writes the bundle as PEM files into dir (created if needed):
// ca.pem, foreign-ca.pem and <name>.pem / <name>-key.pem per leaf. Keys are
// written 0600 so tools that check key file permissions accept them.
func (b *Bundle) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testpki: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "ca.pem"), b.CA.CertPEM, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "foreign-ca.pem"), b.ForeignCA.CertPEM, 0o644); err != nil {
		return err
	}
	for _, l := range b.leaves() {
		if err := writeFile(filepath.Join(dir, l.name+".pem"), l.leaf.CertPEM, 0o644); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, l.name+"-key.pem"), l.leaf.KeyPEM, 0o600); err != nil {
			return err
		}
	}
	return nil
}

type namedLeaf struct {
	name string
	leaf *Leaf
}

// leaves lists the bundle's leaves under their file base names.
func (b *Bundle) leaves() []namedLeaf {
	return []namedLeaf{
		{"server", b.Server},
		{"client", b.Client},
		{"expired", b.Expired},
		{"almost-expired", b.AlmostExpired},
		{"foreign", b.Foreign},
		{"wrong-san", b.WrongSAN},
		{"no-san", b.NoSAN},
	}
}

// writeFile writes data and then forces perm, since os.WriteFile leaves the
// mode of an existing file untouched and is subject to the umask.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("testpki: %w", err)
	}
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("testpki: %w", err)
	}
	return nil
}

func generateKey(kt KeyType) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch kt {
	case ECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("testpki: unknown key type %v", kt)
	}
	if err != nil {
		return nil, fmt.Errorf("testpki: generate %v key: %w", kt, err)
	}
	return key, nil
}

// subjectKeyID computes the key identifier per RFC 5280 §4.2.1.2 method 1:
// SHA-1 over the subjectPublicKey BIT STRING contents (excluding tag, length
// and unused-bits count). It is set explicitly because recent Go versions
// default to a different (truncated SHA-256) method, and the DAPS connector
// id depends on these bytes.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spkiDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("testpki: marshal public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(spkiDER, &spki)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse SubjectPublicKeyInfo: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("testpki: trailing data after SubjectPublicKeyInfo")
	}
	sum := sha1.Sum(spki.SubjectPublicKey.Bytes)
	return sum[:], nil
}

// randomSerial returns a random positive 128-bit serial, as CAs must use
// unpredictable serials and duplicates would confuse revocation tests.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("testpki: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
