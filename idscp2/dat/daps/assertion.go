package daps

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// assertionAlg picks the JWS algorithm for a client assertion signed with
// a key whose public half is pub, as jjwt's signWith(key) does in the
// reference: RS256 for RSA, ES256/384/512 by curve, EdDSA for Ed25519.
func assertionAlg(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSAKeyBits {
			return "", fmt.Errorf("daps: connector RSA key of %d bits; at least %d are required", k.N.BitLen(), MinRSAKeyBits)
		}
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
		return "", errors.New("daps: connector ECDSA key on an unsupported curve")
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("daps: unsupported connector key type %T", pub)
}

// signJWS signs claims as a JWS compact token with header {alg, typ JWT}
// (no kid, as the reference) using any crypto.Signer.
func signJWS(key crypto.Signer, alg string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("daps: encoding assertion claims: %w", err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	var sig []byte
	switch alg {
	case "EdDSA":
		sig, err = key.Sign(rand.Reader, []byte(input), crypto.Hash(0))
	case "RS256":
		d := sha256.Sum256([]byte(input))
		sig, err = key.Sign(rand.Reader, d[:], crypto.SHA256)
	case "ES256", "ES384", "ES512":
		var digest []byte
		var hash crypto.Hash
		var size int
		switch alg {
		case "ES256":
			d := sha256.Sum256([]byte(input))
			digest, hash, size = d[:], crypto.SHA256, 32
		case "ES384":
			d := sha512.Sum384([]byte(input))
			digest, hash, size = d[:], crypto.SHA384, 48
		default:
			d := sha512.Sum512([]byte(input))
			digest, hash, size = d[:], crypto.SHA512, 66
		}
		var der []byte
		if der, err = key.Sign(rand.Reader, digest, hash); err == nil {
			sig, err = derToRaw(der, size)
		}
	default:
		err = fmt.Errorf("unsupported alg %q", alg)
	}
	if err != nil {
		return "", fmt.Errorf("daps: signing the client assertion: %w", err)
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// derToRaw converts an ASN.1 ECDSA signature to the fixed-width R || S
// form JWS uses (RFC 7518 §3.4).
func derToRaw(der []byte, size int) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 {
		return nil, errors.New("malformed ECDSA signature from the signer")
	}
	if rs.R.BitLen() > 8*size || rs.S.BitLen() > 8*size {
		return nil, errors.New("ECDSA signature too large for the curve")
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}

// newJTI returns a random UUID (version 4) for the assertion's jti.
func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// clientAssertion builds and signs the RFC 7523 client assertion, shaped as
// idscp2-jvm sends it (iss = sub = connector id, @context, @type
// ids:DatRequestToken, iat = nbf = now) plus a jti and a short exp.
func (d *Driver) clientAssertion(aud string) (string, error) {
	jti, err := newJTI()
	if err != nil {
		return "", err
	}
	now := d.cfg.Now()
	claims := map[string]any{
		"@context": AssertionContext,
		"@type":    AssertionType,
		"iss":      d.connectorID,
		"sub":      d.connectorID,
		"aud":      aud,
		"iat":      now.Unix(),
		"nbf":      now.Unix(),
		"exp":      now.Add(d.cfg.AssertionLifetime).Unix(),
		"jti":      jti,
	}
	return signJWS(d.cfg.Key, d.alg, claims)
}

// claimsRequest is the draft-spencer-oauth-claims request for
// transportCertsSha256, as idscp2-jvm sends it.
func claimsRequest(fingerprints []string) (string, error) {
	b, err := json.Marshal(map[string]any{
		"access_token": map[string]any{
			"transportCertsSha256": map[string]any{"value": fingerprints},
		},
	})
	return string(b), err
}

// unverifiedClaims decodes a JWS payload without verifying anything, to
// learn the exp and transportCertsSha256 of the DAT this side received.
func unverifiedClaims(token string) (map[string]any, error) {
	var parts [3]string
	n := 0
	start := 0
	for i := 0; i < len(token); i++ {
		if token[i] == '.' {
			if n == 2 {
				return nil, errors.New("not a JWS compact token")
			}
			parts[n] = token[start:i]
			n++
			start = i + 1
		}
	}
	if n != 2 {
		return nil, errors.New("not a JWS compact token")
	}
	parts[2] = token[start:]
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil || claims == nil {
		return nil, fmt.Errorf("payload is not a JSON object: %v", err)
	}
	return claims, nil
}

// expClaim returns the exp of claims, if it is a number.
func expClaim(claims map[string]any) (time.Time, bool) {
	f, ok := claims["exp"].(float64)
	if !ok || f <= 0 || f > 1<<53 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}
