package idscp2

// Integration tests of DATs over real TLS: refused DATs (the reference's
// DapsRejector test), DATs from an untrusted issuer, and short-lived DATs
// renewed through IdscpDatExpired while data flows (DapsAcceptor(2)).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

const testDapsIssuer = "https://daps.test.invalid"

func newTestIssuer(t testing.TB, kid string) *dat.LocalIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := dat.NewLocalIssuer(testDapsIssuer, key, kid)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func newLocalDAT(t testing.TB, cfg dat.LocalConfig) dat.Driver {
	t.Helper()
	d, err := dat.NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIntegrationDatRefused: the listener refuses the client's DAT, so the
// client sees IdscpClose{NO_VALID_DAT, "No valid DAT"} from the peer.
func TestIntegrationDatRefused(t *testing.T) {
	trusted := newTestIssuer(t, "k1")
	other := newTestIssuer(t, "k1") // same name and kid, another key
	for _, tc := range []struct {
		name           string
		client, server func(leaf *testpki.Leaf) dat.Driver
	}{
		{"rejector", func(*testpki.Leaf) dat.Driver { return dat.NewNull(quietLogger()) },
			func(*testpki.Leaf) dat.Driver { return refusingDAT{} }},
		{"untrusted issuer key", func(leaf *testpki.Leaf) dat.Driver {
			return newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: leaf.Cert})
		}, func(leaf *testpki.Leaf) dat.Driver {
			return newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: leaf.Cert,
				Verify: dat.VerifierConfig{Issuer: testDapsIssuer, Keys: other.Keys()}})
		}},
		{"token bound to another certificate", func(*testpki.Leaf) dat.Driver {
			// A valid token of the trusted issuer, for the wrong leaf.
			return newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: testPKI.Server.Cert})
		}, func(leaf *testpki.Leaf) dat.Driver {
			return newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: leaf.Cert})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			// NullRa: the client's verifier needs the listener's prover, so
			// the client cannot be established before the refusal arrives.
			reg := attestation.Default()
			suites := []string{attestation.NullRa}
			ccfg := withSuites(itConfig(testPKI.Client), reg, suites, suites)
			ccfg.DAT = tc.client(testPKI.Client)
			scfg := withSuites(itConfig(testPKI.Server), reg, suites, suites)
			scfg.DAT = tc.server(testPKI.Server)
			hs := hsErrors(scfg)
			ln := listen(t, scfg)
			c, err := Dial(itCtx(t), "tcp", dialAddr(ln), ccfg)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded with a refused DAT")
			}
			wantClose(t, "client", asCloseError(t, err), pb.IdscpClose_NO_VALID_DAT, "No valid DAT", false, true)
			ce := asCloseError(t, nextHSErr(t, hs))
			wantClose(t, "listener", ce, pb.IdscpClose_NO_VALID_DAT, "No valid DAT", true, false)
			t.Logf("listener: %v", ce)
		})
	}

	// The same drivers with a trusted issuer work (the failures above are
	// about the DAT, not the set-up).
	t.Run("trusted", func(t *testing.T) {
		checkNoLeak(t)
		ccfg := itConfig(testPKI.Client)
		ccfg.DAT = newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: testPKI.Client.Cert})
		scfg := itConfig(testPKI.Server)
		scfg.DAT = newLocalDAT(t, dat.LocalConfig{Issuer: trusted, Cert: testPKI.Server.Cert})
		p := connectPair(t, ccfg, scfg)
		checkEcho(t, p.client, p.server, "trusted DAT")
		for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
			id := c.PeerIdentity()
			if id == nil || id.Issuer != testDapsIssuer {
				t.Errorf("%s: PeerIdentity %+v", who, id)
			}
		}
		if got, want := p.server.PeerIdentity().Subject, dat.ConnectorID(testPKI.Client.Cert); got != want {
			t.Errorf("server: peer subject %q, want %q", got, want)
		}
	})
}

// TestIntegrationDatExpiry mirrors the reference's DapsAcceptor(2) test:
// DATs live 2 s, so IdscpDatExpired / IdscpDat / re-attestation cycles run
// repeatedly while data flows both ways for 5 s; nothing may be lost,
// duplicated or reordered.
func TestIntegrationDatExpiry(t *testing.T) {
	checkNoLeak(t)
	iss := newTestIssuer(t, "")
	var log stateLog
	reg := attestation.Default()
	mk := func(leaf *testpki.Leaf) *Config {
		cfg := itConfig(leaf)
		// Threshold 0.25: the peer asks for a fresh DAT after a quarter of
		// the remaining validity and the local cache renews after a
		// quarter of the lifetime, well before exp (whole seconds).
		cfg.DAT = newLocalDAT(t, dat.LocalConfig{Issuer: iss, Cert: leaf.Cert, Lifetime: 2 * time.Second, Threshold: 0.25})
		cfg.AckTimeout = 20 * time.Millisecond
		return log.hook(withSuites(cfg, reg, []string{attestation.Dummy}, []string{attestation.Dummy}))
	}
	p := connectPair(t, mk(testPKI.Client), mk(testPKI.Server))
	ctx := itCtx(t)
	firstClient, firstServer := p.client.PeerIdentity(), p.server.PeerIdentity()

	type result struct {
		n   int
		err error
	}
	res := make(chan result, 2)
	go func() { n, err := stream(ctx, p.client, p.server, "c2s", 5*time.Second); res <- result{n, err} }()
	go func() { n, err := stream(ctx, p.server, p.client, "s2c", 5*time.Second); res <- result{n, err} }()
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Error(r.err)
		}
		if r.n == 0 {
			t.Error("no message went through")
		}
	}
	c, s := log.count(p.client, datExpiry), log.count(p.server, datExpiry)
	t.Logf("DAT renewals: client %d, server %d", c, s)
	if c+s < 2 {
		t.Errorf("%d IdscpDatExpired cycles in 5 s with 2 s DATs, want at least 2", c+s)
	}
	if c == 0 || s == 0 {
		t.Errorf("each side should have asked for a fresh DAT (client %d, server %d)", c, s)
	}
	for who, c := range map[string]*Conn{"client": p.client, "server": p.server} {
		if err := c.Err(); err != nil {
			t.Errorf("%s closed: %v", who, err)
		}
	}
	// The peers' identities were replaced by fresh tokens.
	if id := p.client.PeerIdentity(); id == nil || !id.Expiry.After(firstClient.Expiry) {
		t.Errorf("client: peer DAT not renewed (first exp %v, now %+v)", firstClient.Expiry, id)
	}
	if id := p.server.PeerIdentity(); id == nil || !id.Expiry.After(firstServer.Expiry) {
		t.Errorf("server: peer DAT not renewed (first exp %v, now %+v)", firstServer.Expiry, id)
	}
}

// TestIntegrationLocalDatNeverServesExpiredToken: the local DAT driver must
// not hand out a cached token whose exp has passed, otherwise the peer
// refuses it ("no remaining validity") and closes with NO_VALID_DAT during a
// DAT renewal. exp is whole seconds, so a token issued at x.9 s with a 2 s
// lifetime expires at x+2, 0.9 s before lifetime×threshold (threshold 1.0,
// the NullDaps value) has passed.
func TestIntegrationLocalDatNeverServesExpiredToken(t *testing.T) {
	iss := newTestIssuer(t, "")
	now := time.Unix(1_800_000_000, 900_000_000)
	clock := func() time.Time { return now }
	for _, threshold := range []float64{1.0, 0.9, 0.666} {
		now = time.Unix(1_800_000_000, 900_000_000)
		d := newLocalDAT(t, dat.LocalConfig{Issuer: iss, Cert: testPKI.Client.Cert, Lifetime: 2 * time.Second,
			Threshold: threshold, Now: clock})
		for _, step := range []time.Duration{0, 500 * time.Millisecond, 1000 * time.Millisecond, 1200 * time.Millisecond, 1500 * time.Millisecond, 1990 * time.Millisecond} {
			now = time.Unix(1_800_000_000, 900_000_000).Add(step)
			tok, err := d.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			id, err := d.Verify(context.Background(), tok, testPKI.Client.Cert)
			if err != nil {
				t.Fatalf("threshold %v, +%v: own token refused: %v", threshold, step, err)
			}
			if renew := id.RenewIn(now, d.RenewalThreshold()); renew <= 0 {
				t.Errorf("threshold %v: at issue time +%v Token() returned a token with exp %v, already %v past: a peer refuses it",
					threshold, step, id.Expiry.UTC().Format(time.RFC3339Nano), now.Sub(id.Expiry))
			}
		}
	}
}
