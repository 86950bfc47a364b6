package idscp2

// Integration tests of failing IDSCP2 handshakes over real TLS: timeouts,
// RA suite mismatch, failing RA drivers and peers that vanish mid-handshake.

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// closeFrame is the framed IdscpClose the reference sends for cause/msg.
func closeFrame(t testing.TB, cause pb.IdscpClose_CloseCause, msg string) []byte {
	t.Helper()
	b, err := appendFrame(nil, &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpClose{IdscpClose: &pb.IdscpClose{CauseCode: cause, CauseMsg: msg}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIntegrationHandshakeTimeoutClient: a server that completes TLS but
// never sends Hello makes Dial fail with TIMEOUT after HandshakeTimeout,
// and the client tells it so with IdscpClose{TIMEOUT, "Handshake Timeout"}.
func TestIntegrationHandshakeTimeoutClient(t *testing.T) {
	checkNoLeak(t)
	rl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{testPKI.Server.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    testPKI.CA.Pool(),
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan []byte, 1)
	var wg sync.WaitGroup
	defer func() { rl.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := rl.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer nc.Close()
		tc := nc.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(itWait))
		if err := tc.Handshake(); err != nil {
			received <- nil
			return
		}
		b, _ := io.ReadAll(tc) // everything the client sends until it closes
		received <- b
	}()

	cfg := itConfig(testPKI.Client)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	_, port, _ := net.SplitHostPort(rl.Addr().String())
	c, err := Dial(itCtx(t), "tcp", net.JoinHostPort("localhost", port), cfg)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded against a server that never sends Hello")
	}
	ce := asCloseError(t, err)
	wantClose(t, "client", ce, pb.IdscpClose_TIMEOUT, "Handshake Timeout", true, false)

	b := <-received
	r := bytes.NewReader(b)
	m, err := readRawMsg(r)
	if err != nil || m.GetIdscpHello() == nil {
		t.Fatalf("first frame from the client: %v, %v (all bytes %x)", m, err, b)
	}
	rest, _ := io.ReadAll(r)
	if want := closeFrame(t, pb.IdscpClose_TIMEOUT, "Handshake Timeout"); !bytes.Equal(rest, want) {
		t.Errorf("after Hello the client sent %x, want exactly IdscpClose{TIMEOUT} %x", rest, want)
	}
}

// TestIntegrationHandshakeTimeoutServer: a client that completes TLS but
// never sends Hello is dropped after HandshakeTimeout: the listener reports
// a TIMEOUT close and the client reads IdscpClose{TIMEOUT,"Handshake Timeout"}.
func TestIntegrationHandshakeTimeoutServer(t *testing.T) {
	checkNoLeak(t)
	scfg := itConfig(testPKI.Server)
	scfg.HandshakeTimeout = 200 * time.Millisecond
	hs := hsErrors(scfg)
	ln := listen(t, scfg)

	tc, err := rawDial(t, ln, rawClientTLS(testPKI.Client))
	if err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(itWait))
	b, _ := io.ReadAll(tc) // until the listener closes
	ce := asCloseError(t, nextHSErr(t, hs))
	wantClose(t, "listener", ce, pb.IdscpClose_TIMEOUT, "Handshake Timeout", true, false)

	r := bytes.NewReader(b)
	m, err := readRawMsg(r)
	if err != nil || m.GetIdscpHello() == nil {
		t.Fatalf("first frame from the listener: %v, %v (all bytes %x)", m, err, b)
	}
	rest, _ := io.ReadAll(r)
	want := closeFrame(t, pb.IdscpClose_TIMEOUT, "Handshake Timeout")
	if !bytes.Equal(rest, want) {
		t.Errorf("after Hello the listener sent %x, want exactly %x", rest, want)
	}
	// The literal bytes, independent of our encoder.
	if lit, _ := hex.DecodeString("00000017" + "12150801121148616e647368616b652054696d656f7574"); !bytes.Equal(want, lit) {
		t.Errorf("IdscpClose{TIMEOUT,\"Handshake Timeout\"} encodes as %x, want %x", want, lit)
	}
	noHSErr(t, hs)
}

// TestIntegrationRaSuiteMismatch: no common RA suite. Both sides fail and
// neither sends IdscpClose (as the reference); the CloseError names the
// side of the negotiation that failed.
func TestIntegrationRaSuiteMismatch(t *testing.T) {
	reg := attestation.Default()
	for _, s := range []string{"A", "B"} {
		reg.RegisterProver(s, okProver())
		reg.RegisterVerifier(s, okVerifier())
	}
	for _, tc := range []struct {
		name                   string
		cSup, cExp, sSup, sExp []string
		client, server         pb.IdscpClose_CloseCause
	}{
		{"disjoint", []string{"A"}, []string{"A"}, []string{"B"}, []string{"B"},
			pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER, pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER},
		{"supported A vs expected B", []string{"A"}, []string{"B"}, []string{"B"}, []string{"B"},
			pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER, pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER},
		{"client expects what the server lacks", []string{"A", "B"}, []string{"A"}, []string{"B"}, []string{"B", "A"},
			pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER, pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			scfg := withSuites(itConfig(testPKI.Server), reg, tc.sSup, tc.sExp)
			hs := hsErrors(scfg)
			ln := listen(t, scfg)
			c, err := Dial(itCtx(t), "tcp", dialAddr(ln), withSuites(itConfig(testPKI.Client), reg, tc.cSup, tc.cExp))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded without a common RA suite")
			}
			wantClose(t, "client", asCloseError(t, err), tc.client, "", false, false)
			wantClose(t, "listener", asCloseError(t, nextHSErr(t, hs)), tc.server, "", false, false)
		})
	}

	// On the wire: after its Hello the listener sends nothing, not even
	// IdscpClose, and closes the channel.
	t.Run("raw", func(t *testing.T) {
		checkNoLeak(t)
		scfg := withSuites(itConfig(testPKI.Server), reg, []string{"B"}, []string{"B"})
		hs := hsErrors(scfg)
		ln := listen(t, scfg)
		tc, err := rawDial(t, ln, rawClientTLS(testPKI.Client))
		if err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Now().Add(itWait))
		if err := writeRawMsg(tc, helloMsg(dat.NullToken, []string{"A"}, []string{"A"})); err != nil {
			t.Fatal(err)
		}
		if m, err := readRawMsg(tc); err != nil || m.GetIdscpHello() == nil {
			t.Fatalf("first frame: %v, %v", m, err)
		}
		if m, err := readRawMsg(tc); err == nil {
			t.Errorf("the listener sent %v after its Hello, want nothing", m)
		} else if !errors.Is(err, io.EOF) {
			t.Errorf("after the Hello: %v, want a clean EOF", err)
		}
		wantClose(t, "listener", asCloseError(t, nextHSErr(t, hs)), pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER, "", false, false)
	})
}

// TestIntegrationRaDriverFailures mirrors the reference's RA rejector tests:
// a failing prover or verifier closes with RA_PROVER_FAILED /
// RA_VERIFIER_FAILED, sent by the failing side and seen by the other, and a
// prover that never finishes closes with TIMEOUT.
func TestIntegrationRaDriverFailures(t *testing.T) {
	const (
		good     = "Good"     // succeeds at once on both ends
		badProof = "BadProof" // prover fails; verifier waits for the prover
		badCheck = "BadCheck" // verifier fails; prover waits for the verifier
		hang     = "Hang"     // prover never finishes; verifier waits for it
	)
	reg := attestation.Default()
	reg.RegisterProver(good, okProver())
	reg.RegisterVerifier(good, okVerifier())
	reg.RegisterProver(badProof, failingProver())
	reg.RegisterVerifier(badProof, waitingVerifier())
	reg.RegisterProver(badCheck, waitingProver())
	reg.RegisterVerifier(badCheck, failingVerifier())
	reg.RegisterProver(hang, hangingProver())
	reg.RegisterVerifier(hang, waitingVerifier())

	for _, tc := range []struct {
		name string
		// The client proves with suite and verifies with good, the server
		// the other way round; onServer swaps the roles.
		suite               string
		onServer            bool
		handshakeTimeout    time.Duration
		cause               pb.IdscpClose_CloseCause
		msg                 string
		clientSent, srvSent bool
	}{
		{name: "client prover fails", suite: badProof, cause: pb.IdscpClose_RA_PROVER_FAILED, msg: "RA_PROVER failed", clientSent: true},
		{name: "server prover fails", suite: badProof, onServer: true, cause: pb.IdscpClose_RA_PROVER_FAILED, msg: "RA_PROVER failed", srvSent: true},
		{name: "server verifier fails", suite: badCheck, cause: pb.IdscpClose_RA_VERIFIER_FAILED, msg: "RA_VERIFIER failed", srvSent: true},
		{name: "client verifier fails", suite: badCheck, onServer: true, cause: pb.IdscpClose_RA_VERIFIER_FAILED, msg: "RA_VERIFIER failed", clientSent: true},
		{name: "client prover hangs", suite: hang, handshakeTimeout: 200 * time.Millisecond, cause: pb.IdscpClose_TIMEOUT, msg: "Handshake timeout", clientSent: true},
		{name: "server prover hangs", suite: hang, onServer: true, handshakeTimeout: 200 * time.Millisecond, cause: pb.IdscpClose_TIMEOUT, msg: "Handshake timeout", srvSent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			ccfg := withSuites(itConfig(testPKI.Client), reg, []string{tc.suite}, []string{good})
			scfg := withSuites(itConfig(testPKI.Server), reg, []string{good}, []string{tc.suite})
			if tc.onServer {
				ccfg.SupportedSuites, ccfg.ExpectedSuites = []string{good}, []string{tc.suite}
				scfg.SupportedSuites, scfg.ExpectedSuites = []string{tc.suite}, []string{good}
			}
			if tc.handshakeTimeout > 0 { // on the side whose prover hangs
				if tc.onServer {
					scfg.HandshakeTimeout = tc.handshakeTimeout
				} else {
					ccfg.HandshakeTimeout = tc.handshakeTimeout
				}
			}
			hs := hsErrors(scfg)
			ln := listen(t, scfg)
			c, err := Dial(itCtx(t), "tcp", dialAddr(ln), ccfg)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			wantClose(t, "client", asCloseError(t, err), tc.cause, tc.msg, tc.clientSent, !tc.clientSent)
			wantClose(t, "listener", asCloseError(t, nextHSErr(t, hs)), tc.cause, tc.msg, tc.srvSent, !tc.srvSent)
		})
	}
}

// TestIntegrationPeerVanishesMidHandshake: a raw client that leaves during
// the IDSCP2 handshake makes the listener report a handshake error, leaks
// no goroutine and leaves the listener serving.
func TestIntegrationPeerVanishesMidHandshake(t *testing.T) {
	hello := helloMsg(dat.NullToken, []string{attestation.NullRa}, []string{attestation.NullRa})
	helloBytes, err := appendFrame(nil, hello)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		write []byte
	}{
		{"after TLS", nil},
		{"after a partial Hello", helloBytes[:len(helloBytes)/2]},
		{"after a valid Hello", helloBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			reg := attestation.Default()
			// NullRa: the listener's verifier needs the peer's prover
			// message, so it cannot finish the handshake alone.
			scfg := withSuites(itConfig(testPKI.Server), reg, []string{attestation.NullRa}, []string{attestation.NullRa})
			hs := hsErrors(scfg)
			ln := listen(t, scfg)
			base := runtime.NumGoroutine()

			tc2, err := rawDial(t, ln, rawClientTLS(testPKI.Client))
			if err != nil {
				t.Fatal(err)
			}
			if tc.write != nil {
				if _, err := tc2.Write(tc.write); err != nil {
					t.Fatal(err)
				}
				if len(tc.write) == len(helloBytes) {
					// Wait for the listener's Hello so that ours was read
					// before the close.
					tc2.SetDeadline(time.Now().Add(itWait))
					if _, err := readRawMsg(tc2); err != nil {
						t.Fatal(err)
					}
				}
			}
			tc2.Close()
			err = nextHSErr(t, hs)
			ce := asCloseError(t, err)
			t.Logf("listener: %v", ce)
			if ce.Cause == pb.IdscpClose_TIMEOUT {
				t.Errorf("the listener timed out instead of noticing the close: %v", ce)
			}
			waitGoroutines(t, base)

			client, server := dialAccept(t, ln, withSuites(itConfig(testPKI.Client), reg, []string{attestation.NullRa}, []string{attestation.NullRa}))
			checkEcho(t, client, server, "next client")
			noHSErr(t, hs)
		})
	}
}
