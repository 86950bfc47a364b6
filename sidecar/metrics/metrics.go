// Package metrics holds the sidecar's Prometheus metrics. Names follow the
// Prometheus conventions (base units, _total on counters, bounded labels:
// peers and routes come from the configuration, reasons from fixed sets) and
// are checked with promlint in the tests.
package metrics

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Metrics is the sidecar's metric set on its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	connectionsOpen   *prometheus.GaugeVec
	connectionsTotal  *prometheus.CounterVec
	closes            *prometheus.CounterVec
	handshakes        *prometheus.CounterVec
	handshakeDuration *prometheus.HistogramVec
	attestations      *prometheus.CounterVec
	attestationTime   *prometheus.HistogramVec
	datVerifications  *prometheus.CounterVec
	messages          *prometheus.CounterVec
	frameBytes        *prometheus.CounterVec
	dropped           *prometheus.CounterVec

	Requests        *prometheus.CounterVec   // direction, route, code class
	RequestDuration *prometheus.HistogramVec // direction, route
	Rejections      *prometheus.CounterVec   // direction, reason
	PoolConnections *prometheus.GaugeVec     // peer
	QueueDepth      *prometheus.GaugeVec     // peer
	PeerDials       *prometheus.CounterVec   // peer, result
	Unmatched       *prometheus.CounterVec   // peer
	CertExpiry      *prometheus.GaugeVec     // cert
	DatFetches      *prometheus.CounterVec   // outcome
	TPMFailures     *prometheus.CounterVec   // role, reason
	ReloadOK        prometheus.Gauge
	ReloadTime      prometheus.Gauge
}

// durationBuckets span a loopback handshake (~1 ms) to a slow TPM or DAPS (~10 s).
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers every metric, the Go and process collectors and build info.
func New(version string) *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.connectionsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "idscp2_connections_open",
		Help: "IDSCP2 connections past the TLS handshake and not yet closed."}, []string{"role"})
	m.connectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_connections_total",
		Help: "IDSCP2 connections that passed the TLS handshake."}, []string{"role"})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_closes_total",
		Help: "Closed IDSCP2 connections by IdscpClose cause and by which side ended them."}, []string{"cause", "by"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_handshakes_total",
		Help: "Finished IDSCP2 handshakes (TCP to ESTABLISHED) by result."}, []string{"role", "result"})
	m.handshakeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idscp2_handshake_duration_seconds",
		Help: "Time from TCP connect to ESTABLISHED or failure.", Buckets: durationBuckets}, []string{"role"})
	m.attestations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_attestations_total",
		Help: "Finished remote-attestation driver runs."}, []string{"role", "suite", "result"})
	m.attestationTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idscp2_attestation_duration_seconds",
		Help: "Duration of remote-attestation driver runs.", Buckets: durationBuckets}, []string{"role", "suite"})
	m.datVerifications = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_dat_verifications_total",
		Help: "Peer DAT verifications by result (ok or the refusal reason)."}, []string{"result"})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_messages_total",
		Help: "IDSCP2 frames by direction and message type."}, []string{"direction", "type"})
	m.frameBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_frame_bytes_total",
		Help: "Bytes of IDSCP2 frames, length prefix included."}, []string{"direction"})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_dropped_messages_total",
		Help: "Received IDSCP2 frames discarded without effect."}, []string{"reason"})

	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_sidecar_requests_total",
		Help: "Requests through the sidecar by direction, route (ingress) or peer (egress) and HTTP status class."},
		[]string{"direction", "route", "code"})
	m.RequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idscp2_sidecar_request_duration_seconds",
		Help: "Request latency through the sidecar.", Buckets: durationBuckets}, []string{"direction", "route"})
	m.Rejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_sidecar_rejections_total",
		Help: "IDS RejectionMessages sent (ingress) or received (egress) by reason."}, []string{"direction", "reason"})
	m.PoolConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "idscp2_sidecar_pool_connections",
		Help: "Established IDSCP2 connections in a peer's pool."}, []string{"peer"})
	m.QueueDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "idscp2_sidecar_queue_depth",
		Help: "Egress requests waiting for a slot to a peer."}, []string{"peer"})
	m.PeerDials = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_sidecar_peer_dials_total",
		Help: "Connection attempts to peers by result."}, []string{"peer", "result"})
	m.Unmatched = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_sidecar_unmatched_responses_total",
		Help: "Messages from a peer that answered no waiting request."}, []string{"peer"})
	m.CertExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "idscp2_tls_certificate_expiry_timestamp_seconds",
		Help: "NotAfter of the certificates in use."}, []string{"cert"})
	m.DatFetches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_dat_fetches_total",
		Help: "DAT requests to the DAPS by outcome."}, []string{"outcome"})
	m.TPMFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idscp2_tpm_attestation_failures_total",
		Help: "Failed TPM attestation runs by role and reason."}, []string{"role", "reason"})
	m.ReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "idscp2_config_last_reload_successful",
		Help: "1 if the last configuration (re)load succeeded."})
	m.ReloadTime = prometheus.NewGauge(prometheus.GaugeOpts{Name: "idscp2_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully."})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "idscp2_build_info",
		Help: "Build information; always 1."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)

	for _, c := range []prometheus.Collector{m.connectionsOpen, m.connectionsTotal, m.closes, m.handshakes,
		m.handshakeDuration, m.attestations, m.attestationTime, m.datVerifications, m.messages, m.frameBytes,
		m.dropped, m.Requests, m.RequestDuration, m.Rejections, m.PoolConnections, m.QueueDepth, m.PeerDials,
		m.Unmatched, m.CertExpiry, m.DatFetches, m.TPMFailures, m.ReloadOK, m.ReloadTime, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// Version returns the module version the binary was built from.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// CodeClass returns "2xx" style labels.
func CodeClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// IDSCP2 returns the connection-layer observer feeding these metrics.
func (m *Metrics) IDSCP2() idscp2.Observer { return connObserver{m} }

type connObserver struct{ m *Metrics }

func role(client bool) string {
	if client {
		return "client"
	}
	return "server"
}

func (o connObserver) Opened(c *idscp2.Conn) {
	r := roleOf(c)
	o.m.connectionsOpen.WithLabelValues(r).Inc()
	o.m.connectionsTotal.WithLabelValues(r).Inc()
}

func (o connObserver) Closed(c *idscp2.Conn, err *idscp2.CloseError) {
	o.m.connectionsOpen.WithLabelValues(roleOf(c)).Dec()
	by := "local"
	if err.Remote {
		by = "peer"
	}
	cause := "none" // neither side sent IdscpClose: EOF or a channel error
	if err.Sent || err.Received || err.Cause != 0 {
		cause = err.Cause.String()
	}
	o.m.closes.WithLabelValues(cause, by).Inc()
}

func roleOf(c *idscp2.Conn) string { return role(c.IsClient()) }

func (o connObserver) Handshake(client bool, took time.Duration, err error) {
	o.m.handshakes.WithLabelValues(role(client), idscp2.ClassifyHandshake(err)).Inc()
	o.m.handshakeDuration.WithLabelValues(role(client)).Observe(took.Seconds())
}

func (o connObserver) Message(out bool, kind string, n int) {
	dir := "in"
	if out {
		dir = "out"
	}
	o.m.messages.WithLabelValues(dir, kind).Inc()
	o.m.frameBytes.WithLabelValues(dir).Add(float64(n))
}

func (o connObserver) Dropped(reason string) { o.m.dropped.WithLabelValues(reason).Inc() }

func (o connObserver) DatVerified(reason dat.Reason) {
	if reason == "" {
		reason = "ok"
	}
	o.m.datVerifications.WithLabelValues(string(reason)).Inc()
}

func (o connObserver) Attestation(prover bool, suite string, took time.Duration, err error) {
	r := "verifier"
	if prover {
		r = "prover"
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	o.m.attestations.WithLabelValues(r, suite, result).Inc()
	o.m.attestationTime.WithLabelValues(r, suite).Observe(took.Seconds())
}
