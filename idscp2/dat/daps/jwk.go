package daps

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// Limits of the JWKS parser.
const (
	MaxJWKSKeys    = 256   // entries in one key set
	MinRSAKeyBits  = 2048  // smaller RSA keys are skipped
	maxRSAKeyBits  = 16384 // bound on verification cost
	maxRSAExponent = 1<<31 - 1
)

// JWKS is a parsed JSON Web Key Set (RFC 7517): the keys usable to verify
// signatures, by kid.
type JWKS struct {
	// Keys maps kid to *rsa.PublicKey, *ecdsa.PublicKey (P-256, P-384,
	// P-521) or ed25519.PublicKey.
	Keys map[string]crypto.PublicKey
	// Algs maps kid to the key's "alg" member, where it has one.
	Algs map[string]string
	// Skipped says which entries were ignored and why: keys without kid,
	// symmetric or unknown key types, keys not meant for signatures, RSA
	// keys under MinRSAKeyBits, malformed keys, duplicate kids (the first
	// wins) and entries carrying private key material.
	Skipped []error
}

// ParseJWKS parses a JWK Set document. Only a document that is not a JSON
// object with a "keys" array (or has more than MaxJWKSKeys entries) is an
// error; unusable entries are listed in Skipped.
func ParseJWKS(data []byte) (*JWKS, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil || doc == nil {
		return nil, fmt.Errorf("daps: JWKS is not a JSON object: %v", err)
	}
	raw, ok := doc["keys"]
	if !ok {
		return nil, errors.New(`daps: JWKS has no "keys" member`)
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		return nil, fmt.Errorf(`daps: JWKS "keys" is not an array: %v`, err)
	}
	if len(entries) > MaxJWKSKeys {
		return nil, fmt.Errorf("daps: JWKS has %d keys, more than %d", len(entries), MaxJWKSKeys)
	}
	set := &JWKS{Keys: make(map[string]crypto.PublicKey, len(entries)), Algs: map[string]string{}}
	for i, e := range entries {
		kid, alg, key, err := parseJWK(e)
		if err != nil {
			set.Skipped = append(set.Skipped, fmt.Errorf("key %d (kid %q): %w", i, kid, err))
			continue
		}
		if _, dup := set.Keys[kid]; dup {
			set.Skipped = append(set.Skipped, fmt.Errorf("key %d: duplicate kid %q ignored", i, kid))
			continue
		}
		set.Keys[kid] = key
		if alg != "" {
			set.Algs[kid] = alg
		}
	}
	return set, nil
}

// ParseJWK parses one public JSON Web Key meant for signature verification
// and returns its kid, alg (may be empty) and key.
func ParseJWK(data []byte) (kid, alg string, key crypto.PublicKey, err error) {
	return parseJWK(data)
}

// privateMembers are JWK members that only private (or symmetric) keys have.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

func parseJWK(data []byte) (kid, alg string, key crypto.PublicKey, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return "", "", nil, fmt.Errorf("not a JSON object: %v", err)
	}
	str := func(name string) (string, error) {
		raw, ok := m[name]
		if !ok {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%q is not a string", name)
		}
		return s, nil
	}
	if kid, err = str("kid"); err != nil {
		return "", "", nil, err
	}
	kty, err := str("kty")
	if err != nil {
		return kid, "", nil, err
	}
	if alg, err = str("alg"); err != nil {
		return kid, "", nil, err
	}
	use, err := str("use")
	if err != nil {
		return kid, "", nil, err
	}
	if kid == "" {
		return kid, "", nil, errors.New("no kid: the key cannot be selected")
	}
	for _, p := range privateMembers {
		if _, ok := m[p]; ok {
			return kid, "", nil, fmt.Errorf("private key material (%q) in a public key set", p)
		}
	}
	if use != "" && use != "sig" {
		return kid, "", nil, fmt.Errorf("use %q is not \"sig\"", use)
	}
	if raw, ok := m["key_ops"]; ok {
		var ops []string
		if err := json.Unmarshal(raw, &ops); err != nil {
			return kid, "", nil, errors.New(`"key_ops" is not an array of strings`)
		}
		verify := false
		for _, op := range ops {
			verify = verify || op == "verify"
		}
		if !verify {
			return kid, "", nil, errors.New(`"key_ops" lacks "verify"`)
		}
	}
	b64 := func(name string) ([]byte, error) {
		s, err := str(name)
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, fmt.Errorf("%q is missing", name)
		}
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not base64url: %v", name, err)
		}
		return b, nil
	}
	switch kty {
	case "RSA":
		n, err := b64("n")
		if err != nil {
			return kid, "", nil, err
		}
		e, err := b64("e")
		if err != nil {
			return kid, "", nil, err
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
		if bits := k.N.BitLen(); bits < MinRSAKeyBits || bits > maxRSAKeyBits {
			return kid, "", nil, fmt.Errorf("RSA modulus of %d bits (want %d to %d)", bits, MinRSAKeyBits, maxRSAKeyBits)
		}
		if k.N.Bit(0) == 0 {
			return kid, "", nil, errors.New("RSA modulus is even")
		}
		ev := new(big.Int).SetBytes(e)
		if !ev.IsInt64() || ev.Int64() < 3 || ev.Int64() > maxRSAExponent || ev.Bit(0) == 0 {
			return kid, "", nil, errors.New("RSA exponent out of range")
		}
		k.E = int(ev.Int64())
		key = k
	case "EC":
		crv, err := str("crv")
		if err != nil {
			return kid, "", nil, err
		}
		var curve elliptic.Curve
		switch crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return kid, "", nil, fmt.Errorf("unsupported EC curve %q", crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := b64("x")
		if err != nil {
			return kid, "", nil, err
		}
		y, err := b64("y")
		if err != nil {
			return kid, "", nil, err
		}
		if len(x) != size || len(y) != size {
			return kid, "", nil, fmt.Errorf("EC coordinates of %d and %d bytes, want %d (RFC 7518 §6.2.1.2)", len(x), len(y), size)
		}
		point := make([]byte, 0, 1+2*size)
		point = append(append(append(point, 4), x...), y...)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return kid, "", nil, fmt.Errorf("EC point: %v", err)
		}
		key = k
	case "OKP":
		crv, err := str("crv")
		if err != nil {
			return kid, "", nil, err
		}
		if crv != "Ed25519" {
			return kid, "", nil, fmt.Errorf("unsupported OKP curve %q", crv)
		}
		x, err := b64("x")
		if err != nil {
			return kid, "", nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return kid, "", nil, fmt.Errorf("Ed25519 key of %d bytes", len(x))
		}
		key = ed25519.PublicKey(x)
	case "":
		return kid, "", nil, errors.New("no kty")
	default:
		return kid, "", nil, fmt.Errorf("unsupported kty %q", kty)
	}
	if alg != "" && !algFitsKey(alg, key) {
		return kid, "", nil, fmt.Errorf("alg %q does not fit a %s key or is not an allowed signature algorithm", alg, kty)
	}
	return kid, alg, key, nil
}

// algFitsKey says whether a JWK's alg is an allowed JWS algorithm for key.
func algFitsKey(alg string, key crypto.PublicKey) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA" || alg == "Ed25519"
	}
	return false
}
