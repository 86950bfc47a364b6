package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/metrics"
)

func TestMetricsPassPromlint(t *testing.T) {
	m := metrics.New("test")
	m.Requests.WithLabelValues("egress", "provider", metrics.CodeClass(200)).Inc()
	m.RequestDuration.WithLabelValues("egress", "provider").Observe(0.01)
	m.PoolConnections.WithLabelValues("provider").Set(2)
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestObserverCountsARealConnection runs one IDSCP2 exchange with the
// observer wired in and checks what it counted.
func TestObserverCountsARealConnection(t *testing.T) {
	b, err := testpki.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := func(l *testpki.Leaf) *idscp2.Config {
		c := l.TLS
		return &idscp2.Config{Certificate: &c, Roots: b.CA.Pool(), DAT: dat.NewNull(quiet), Logger: quiet, Observer: m.IDSCP2()}
	}
	ln, err := idscp2.Listen("tcp", "127.0.0.1:0", cfg(b.Server))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan *idscp2.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	client, err := idscp2.Dial(ctx, "tcp", net.JoinHostPort("localhost", port), cfg(b.Client))
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("no connection accepted")
	}
	if err := client.Send(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	client.Close()
	<-server.Done()

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"client handshakes ok", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_handshakes_total", "client", "ok")), 1},
		{"server handshakes ok", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_handshakes_total", "server", "ok")), 1},
		{"DAT verifications ok", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_dat_verifications_total", "ok")), 2},
		{"data out", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_messages_total", "out", "data")), 1},
		{"data in", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_messages_total", "in", "data")), 1},
		{"hello out", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_messages_total", "out", "hello")), 2},
		{"closes USER_SHUTDOWN by local", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_closes_total", "USER_SHUTDOWN", "local")), 1},
		{"closes USER_SHUTDOWN by peer", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_closes_total", "USER_SHUTDOWN", "peer")), 1},
		{"open client", testutil.ToFloat64(metrics.MustCollector(t, m, "idscp2_connections_open", "client")), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}
