package idscp2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

var benchSizes = []int{1 << 10, 64 << 10, 1 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// localDatConfig gives leaf a config with real signed DATs from a shared
// local issuer (ES256), as a closed data space would have.
func localDatConfig(tb testing.TB, iss *dat.LocalIssuer, leaf *testpki.Leaf) *Config {
	cfg := testConfig(leaf)
	d, err := dat.NewLocal(dat.LocalConfig{Issuer: iss, Cert: leaf.Cert})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.DAT = d
	return cfg
}

func benchIssuer(tb testing.TB) *dat.LocalIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := dat.NewLocalIssuer("https://daps.test", key, "k1")
	if err != nil {
		tb.Fatal(err)
	}
	return iss
}

// BenchmarkHandshake measures one full connection per op: TCP, mutual TLS
// 1.3 (ECDSA P-256), IDSCP2 Hello exchange with DAT verification on both
// sides (cached ES256 DATs) and Dummy2 attestation, until both sides are
// ESTABLISHED; then the connection is closed.
func BenchmarkHandshake(b *testing.B) {
	iss := benchIssuer(b)
	ln := listen(b, localDatConfig(b, iss, testPKI.Server))
	clientCfg := localDatConfig(b, iss, testPKI.Client)
	addr := dialAddr(ln)
	ctx := context.Background()
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() { // serve until the client closes
				for {
					if _, err := c.Recv(ctx); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := Dial(ctx, "tcp", addr, clientCfg)
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
		}
	})
}

// BenchmarkConnect measures connect → ESTABLISHED latency for one client
// at a time (same set-up as BenchmarkHandshake).
func BenchmarkConnect(b *testing.B) {
	iss := benchIssuer(b)
	ln := listen(b, localDatConfig(b, iss, testPKI.Server))
	clientCfg := localDatConfig(b, iss, testPKI.Client)
	addr := dialAddr(ln)
	ctx := context.Background()
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
	b.ResetTimer()
	for range b.N {
		c, err := Dial(ctx, "tcp", addr, clientCfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkSend measures one connection's throughput: each op is one Send,
// which returns when the peer has acknowledged the message.
func BenchmarkSend(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			p := connectPair(b, testConfig(testPKI.Client), testConfig(testPKI.Server))
			ctx := context.Background()
			go func() {
				for {
					if _, err := p.server.Recv(ctx); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				if err := p.client.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip1KiB measures send → echo → receive of 1 KiB.
func BenchmarkRoundTrip1KiB(b *testing.B) {
	p := connectPair(b, testConfig(testPKI.Client), testConfig(testPKI.Server))
	ctx := context.Background()
	go func() {
		for {
			m, err := p.server.Recv(ctx)
			if err != nil {
				return
			}
			if p.server.Send(ctx, m) != nil {
				return
			}
		}
	}()
	msg := make([]byte, 1<<10)
	b.ResetTimer()
	for range b.N {
		if err := p.client.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := p.client.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// rawTLSPair returns a connected mutual-TLS 1.3 pair over loopback TCP with
// the same certificates and curves as the IDSCP2 benchmarks.
func rawTLSPair(b *testing.B) (client, server *tls.Conn) {
	cfg, _ := testConfig(testPKI.Server).resolved()
	ccfg, _ := testConfig(testPKI.Client).resolved()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan *tls.Conn)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(done)
			return
		}
		sc := tls.Server(nc, cfg.serverTLS(nc.RemoteAddr(), &handshakeState{}))
		if sc.Handshake() != nil {
			close(done)
			return
		}
		done <- sc
	}()
	cc, err := tls.Dial("tcp", ln.Addr().String(), ccfg.clientTLS("127.0.0.1", &handshakeState{}))
	if err != nil {
		b.Fatal(err)
	}
	sc := <-done
	if sc == nil {
		b.Fatal("server handshake failed")
	}
	b.Cleanup(func() { cc.Close(); sc.Close() })
	return cc, sc
}

// BenchmarkRawTLS is the baseline for BenchmarkSend: the same payloads
// streamed over one TLS 1.3 connection with no protocol on top.
func BenchmarkRawTLS(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			cc, sc := rawTLSPair(b)
			go io.Copy(io.Discard, sc)
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				if _, err := cc.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawTLSStopAndWait is raw TLS with the same discipline as IDSCP2:
// a length-prefixed message, then wait for a 1-byte acknowledgement.
func BenchmarkRawTLSStopAndWait(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			cc, sc := rawTLSPair(b)
			go func() {
				var hdr [4]byte
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(sc, hdr[:]); err != nil {
						return
					}
					if _, err := io.ReadFull(sc, buf[:binary.BigEndian.Uint32(hdr[:])]); err != nil {
						return
					}
					if _, err := sc.Write(hdr[:1]); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, 4+size)
			binary.BigEndian.PutUint32(msg, uint32(size))
			ack := make([]byte, 1)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				if _, err := cc.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(cc, ack); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleConnMemory reports the memory one idle ESTABLISHED
// connection costs (heap and goroutine stacks, per side, TLS buffers
// included), measured over 500 connection pairs in one process.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 500
	ln := listen(b, testConfig(testPKI.Server))
	clientCfg := testConfig(testPKI.Client)
	ctx := context.Background()
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*Conn, 0, 2*n)
		accepted := make(chan *Conn, n)
		go func() {
			for range n {
				c, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		for range n {
			c, err := Dial(ctx, "tcp", dialAddr(ln), clientCfg)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c, <-accepted)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
		b.ReportMetric(float64(used)/float64(len(conns)), "bytes/conn")
		b.ReportMetric(float64(runtime.NumGoroutine())/float64(len(conns)), "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
	}
}
