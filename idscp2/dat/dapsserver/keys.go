package dapsserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Files in Config.StateDir.
const (
	SigningKeyFile  = "signing-key.pem"  // PKCS#8 private key, mode 0600
	RetiredKeysFile = "retired-keys.pem" // public keys still published, with their drop time
)

// signingKey is one DAT signing key: the current one, or a retired one
// whose public half is still published.
type signingKey struct {
	kid       string
	alg       string
	pub       crypto.PublicKey
	issuer    *dat.LocalIssuer // nil for a retired key
	lastExp   time.Time        // latest exp of a token this key signed (or may have signed)
	dropAfter time.Time        // retired keys: when it leaves the JWKS
}

func generateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "RS256":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("dapsserver: unsupported key algorithm %q (want RS256, ES256, ES384, ES512 or EdDSA)", alg)
}

// keyAlg is the JWS algorithm a key signs with (as dat.LocalIssuer picks it).
func keyAlg(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("dapsserver: unsupported signing key type %T", pub)
}

// newSigningKey wraps a private key; the kid is derived from the public
// key by dat.NewLocalIssuer (SHA-256 over the SPKI, 20 bytes, hex).
func newSigningKey(issuerName string, key crypto.Signer) (*signingKey, error) {
	alg, err := keyAlg(key.Public())
	if err != nil {
		return nil, err
	}
	li, err := dat.NewLocalIssuer(issuerName, key, "")
	if err != nil {
		return nil, fmt.Errorf("dapsserver: %w", err)
	}
	return &signingKey{kid: li.Kid(), alg: alg, pub: key.Public(), issuer: li}, nil
}

// loadOrCreateKey reads dir/signing-key.pem or creates it with a new key
// of algorithm alg.
func loadOrCreateKey(dir, alg string) (crypto.Signer, bool, error) {
	path := filepath.Join(dir, SigningKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := generateKey(alg)
		if err != nil {
			return nil, false, err
		}
		if err := writeKey(dir, key); err != nil {
			return nil, false, err
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("dapsserver: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("dapsserver: %s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("dapsserver: %s: %w", path, err)
	}
	return key, false, nil
}

func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no private key PEM block")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
}

// writeKey stores key as dir/signing-key.pem (PKCS#8, 0600), atomically.
func writeKey(dir string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("dapsserver: encoding the signing key: %w", err)
	}
	return writeFileAtomic(dir, SigningKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// writeRetired stores the retired public keys with their kid and drop time.
func writeRetired(dir string, keys []*signingKey) error {
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.pub)
		if err != nil {
			return fmt.Errorf("dapsserver: encoding a retired key: %w", err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{
			Type:    "PUBLIC KEY",
			Headers: map[string]string{"Kid": k.kid, "Drop-After": k.dropAfter.UTC().Format(time.RFC3339)},
			Bytes:   der,
		})...)
	}
	return writeFileAtomic(dir, RetiredKeysFile, out)
}

// readRetired loads the retired public keys that are still to be published.
func readRetired(dir string, now time.Time) ([]*signingKey, error) {
	data, err := os.ReadFile(filepath.Join(dir, RetiredKeysFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dapsserver: %w", err)
	}
	var keys []*signingKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return keys, nil
		}
		if b.Type != "PUBLIC KEY" {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("dapsserver: %s: %w", RetiredKeysFile, err)
		}
		drop, err := time.Parse(time.RFC3339, b.Headers["Drop-After"])
		if err != nil || b.Headers["Kid"] == "" {
			return nil, fmt.Errorf("dapsserver: %s: key without Kid or Drop-After", RetiredKeysFile)
		}
		alg, err := keyAlg(pub)
		if err != nil {
			return nil, err
		}
		if drop.After(now) {
			keys = append(keys, &signingKey{kid: b.Headers["Kid"], alg: alg, pub: pub, dropAfter: drop})
		}
	}
}

// writeFileAtomic writes dir/name with mode 0600 through a temporary file
// and a rename, so a crash leaves the old or the new content.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("dapsserver: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("dapsserver: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("dapsserver: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dapsserver: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dapsserver: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("dapsserver: %w", err)
	}
	return nil
}

// jwk renders a public key as a JSON Web Key (RFC 7517/7518/8037).
func jwk(k *signingKey) (map[string]any, error) {
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"kid": k.kid, "use": "sig", "alg": k.alg}
	switch p := k.pub.(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = enc(p.N.Bytes())
		m["e"] = enc(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		raw, err := p.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, err
		}
		m["kty"] = "EC"
		m["crv"] = p.Curve.Params().Name
		m["x"] = enc(raw[1 : 1+size])
		m["y"] = enc(raw[1+size:])
	case ed25519.PublicKey:
		m["kty"] = "OKP"
		m["crv"] = "Ed25519"
		m["x"] = enc(p)
	default:
		return nil, fmt.Errorf("dapsserver: cannot render a %T as JWK", k.pub)
	}
	return m, nil
}
