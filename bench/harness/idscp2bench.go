package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// peerConfig is an IDSCP2 config for leaf with a cached ES256 DAT signed by
// the bench data space's shared issuer key (the same key the sidecar
// processes use, so these configs can talk to them too). Dummy2 both ways.
func peerConfig(b *testpki.Bundle, leaf *testpki.Leaf, key crypto.Signer) (*idscp2.Config, error) {
	iss, err := dat.NewLocalIssuer(issuerName, key, "")
	if err != nil {
		return nil, err
	}
	d, err := dat.NewLocal(dat.LocalConfig{Issuer: iss, Cert: leaf.Cert,
		Claims: map[string]any{"securityProfile": "idsc:BASE_SECURITY_PROFILE"}})
	if err != nil {
		return nil, err
	}
	cert := leaf.TLS
	return &idscp2.Config{Certificate: &cert, Roots: b.CA.Pool(), DAT: d, Logger: quiet}, nil
}

type handshakeResult struct {
	Where      string  `json:"where"`
	Goroutines int     `json:"goroutines"`
	Seconds    float64 `json:"seconds"`
	Handshakes int     `json:"handshakes"`
	Errors     int     `json:"errors"`
	FirstErr   string  `json:"first_error,omitempty"`
	PerSecond  float64 `json:"per_second"`
	MeanMs     float64 `json:"mean_ms"` // wall time per Dial, per goroutine
}

// handshakeRate dials addr in a tight loop from workers goroutines for d:
// TCP + mutual TLS 1.3 (ECDSA P-256, X25519) + IDSCP2 Hello with DAT
// verification on both sides + Dummy2 both ways, until ESTABLISHED; then
// the connection is closed.
func handshakeRate(ctx context.Context, where, addr string, cfg *idscp2.Config, workers int, d time.Duration) handshakeResult {
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	var busy atomic.Int64 // nanoseconds inside successful Dials
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				s := time.Now()
				c, err := idscp2.Dial(ctx, "tcp", addr, cfg)
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				busy.Add(int64(time.Since(s)))
				ok.Add(1)
				c.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0).Seconds()
	r := handshakeResult{Where: where, Goroutines: workers, Seconds: el, Handshakes: int(ok.Load()), Errors: int(bad.Load())}
	if s, _ := firstErr.Load().(string); s != "" {
		r.FirstErr = s
	}
	r.PerSecond = float64(r.Handshakes) / el
	if r.Handshakes > 0 {
		r.MeanMs = float64(busy.Load()) / float64(r.Handshakes) / 1e6
	}
	return r
}

// inProcessListener is an IDSCP2 listener in this process that keeps
// every accepted connection until the client closes it.
func inProcessListener(ctx context.Context, cfg *idscp2.Config) (*idscp2.Listener, error) {
	ln, err := idscp2.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					if _, err := c.Recv(ctx); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	return ln, nil
}

type idleResult struct {
	Where          string  `json:"where"`
	Connections    int     `json:"connections"`
	RSSBeforeKiB   int64   `json:"rss_before_kib"`
	RSSAfterKiB    int64   `json:"rss_after_kib"`
	RSSPerConnKiB  float64 `json:"rss_per_conn_kib"`
	HeapPerConnKiB float64 `json:"heap_stack_per_conn_kib"` // go_memstats heap_inuse+stack_inuse after a forced GC
	GoroutinesPer  float64 `json:"goroutines_per_conn"`
	OpenSeconds    float64 `json:"open_seconds"`
}

// sidecarMem reads the Go memory figures of a sidecar process through its
// admin endpoint, after forcing a GC (the heap profile handler with gc=1).
func sidecarMem(admin string) (heapStack, goroutines float64, err error) {
	resp, err := http.Get(admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h, err := promValue(admin+"/metrics", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return 0, 0, err
	}
	s, err := promValue(admin+"/metrics", "go_memstats_stack_inuse_bytes")
	if err != nil {
		return 0, 0, err
	}
	g, err := promValue(admin+"/metrics", "go_goroutines")
	return h + s, g, err
}

// idleConnMemory opens n IDSCP2 connections to a freshly started provider
// sidecar process (nothing else has touched it) and reports how much its
// RSS grew per ESTABLISHED, idle connection.
func idleConnMemory(ctx context.Context, p *proc, ingress, admin string, cfg *idscp2.Config, n int) (idleResult, error) {
	r := idleResult{Where: "provider sidecar process (ingress side), fresh", Connections: n}
	time.Sleep(500 * time.Millisecond)
	heap0, g0, err := sidecarMem(admin)
	if err != nil {
		return r, err
	}
	time.Sleep(200 * time.Millisecond)
	if r.RSSBeforeKiB, err = statusKiB(p.pid(), "VmRSS"); err != nil {
		return r, err
	}
	conns := make([]*idscp2.Conn, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	t0 := time.Now()
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := idscp2.Dial(ctx, "tcp", ingress, cfg)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	r.OpenSeconds = time.Since(t0).Seconds()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if e, _ := firstErr.Load().(error); e != nil {
		return r, fmt.Errorf("opening idle connections: %w", e)
	}
	time.Sleep(time.Second) // let handshake garbage settle; connections are idle
	if r.RSSAfterKiB, err = statusKiB(p.pid(), "VmRSS"); err != nil {
		return r, err
	}
	heap1, g1, err := sidecarMem(admin)
	if err != nil {
		return r, err
	}
	r.RSSPerConnKiB = float64(r.RSSAfterKiB-r.RSSBeforeKiB) / float64(n)
	r.HeapPerConnKiB = (heap1 - heap0) / 1024 / float64(n)
	r.GoroutinesPer = (g1 - g0) / float64(n)
	return r, nil
}
