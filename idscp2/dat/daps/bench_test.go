package daps

import (
	"context"
	"crypto"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// BenchmarkVerify measures Driver.Verify of a DAPS-issued DAT with the
// metadata and JWKS cached (fetched once before the timer starts), as
// every IDSCP2 handshake and DAT renewal pays it on the verifying side.
// "cold" disables the signature cache, so each iteration does the
// public-key operation (a DAT not seen before); "same-token" is the
// default configuration verifying a DAT seen before (a peer reconnecting
// or renewing with its cached DAT).
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []struct {
		name string
		key  crypto.Signer
	}{
		{"ES256", sharedDAPSKey},
		{"RS256", rsaTestKey()},
	} {
		for _, mode := range []struct {
			name  string
			cache int
		}{{"cold", -1}, {"same-token", 0}} {
			b.Run(alg.name+"/"+mode.name, func(b *testing.B) { benchmarkVerify(b, alg.key, mode.cache) })
		}
	}
}

func benchmarkVerify(b *testing.B, key crypto.Signer, cache int) {
	d := startDAPS(b, dapsOpts{key: key})
	v := d.driverFor(b, pki.Server, func(c *Config) { c.SignatureCache = cache })
	tok, err := d.srv.Issue(dat.ConnectorID(pki.Client.Cert), 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok, pki.Client.Cert); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok, pki.Client.Cert); err != nil {
			b.Fatal(err)
		}
	}
	if n := d.jwks.Load(); n != 1 {
		b.Fatalf("%d JWKS fetches", n)
	}
}
