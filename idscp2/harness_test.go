package idscp2

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// testPKI is made once per test binary: key generation is the slow part.
var testPKI = func() *testpki.Bundle {
	b, err := testpki.NewBundle()
	if err != nil {
		panic(err)
	}
	return b
}()

func quietLogger() *slog.Logger {
	if os.Getenv("IDSCP2_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig returns a config presenting leaf, trusting the bundle CA, with
// the NullDaps driver.
func testConfig(leaf *testpki.Leaf) *Config {
	cert := leaf.TLS
	return &Config{
		Certificate: &cert,
		Roots:       testPKI.CA.Pool(),
		DAT:         dat.NewNull(quietLogger()),
		Logger:      quietLogger(),
	}
}

// pair is a listener and a dialled connection with its accepted peer.
type pair struct {
	ln             *Listener
	client, server *Conn
}

func listen(t testing.TB, cfg *Config) *Listener {
	t.Helper()
	ln, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dialAddr(ln *Listener) string {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return net.JoinHostPort("localhost", port)
}

func connectPair(t testing.TB, clientCfg, serverCfg *Config) *pair {
	t.Helper()
	ln := listen(t, serverCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   *Conn
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := ln.Accept(ctx)
		accepted <- res{c, err}
	}()
	client, err := Dial(ctx, "tcp", dialAddr(ln), clientCfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		client.Close()
		t.Fatalf("accept: %v", r.err)
	}
	p := &pair{ln: ln, client: client, server: r.c}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return p
}

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

var _ = tls.VersionTLS13
var _ = strings.Contains
