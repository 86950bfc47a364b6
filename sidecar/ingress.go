package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/metrics"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/pipeline"
)

// ingress serves peers' requests arriving on accepted IDSCP2 connections.
type ingress struct {
	ln      *idscp2.Listener
	handler func() pipeline.Handler // the current chain (swapped on reload)
	self    func() idsmsg.Self
	sem     chan struct{} // bounds concurrent requests across all connections
	log     *slog.Logger
	m       *metrics.Metrics

	mu       sync.Mutex
	conns    map[*idscp2.Conn]struct{}
	closed   bool
	draining bool           // under mu: new requests are refused while in-flight ones finish
	requests sync.WaitGroup // request handlers
	wg       sync.WaitGroup // connection loops
}

// drain refuses new requests and waits for those in flight.
func (in *ingress) drain() {
	in.mu.Lock()
	in.draining = true
	in.mu.Unlock()
	in.requests.Wait()
}

func (in *ingress) serve(ctx context.Context) {
	for {
		c, err := in.ln.Accept(ctx)
		if err != nil {
			return
		}
		in.mu.Lock()
		if in.closed {
			in.mu.Unlock()
			c.Close()
			return
		}
		in.conns[c] = struct{}{}
		in.wg.Add(1)
		in.mu.Unlock()
		go in.serveConn(ctx, c)
	}
}

// serveConn reads requests from one peer connection and answers each in
// its own goroutine, bounded by the shared semaphore.
func (in *ingress) serveConn(ctx context.Context, c *idscp2.Conn) {
	defer in.wg.Done()
	defer func() {
		in.mu.Lock()
		delete(in.conns, c)
		in.mu.Unlock()
	}()
	peer := peerOf(c)
	log := in.log.With("peer", peer.Addr, "subject", subjectOf(peer))
	for {
		msg, err := c.Recv(ctx)
		if err != nil {
			if !errors.Is(err, idscp2.ErrClosed) && ctx.Err() == nil {
				log.Info("peer connection ended", "err", err)
			}
			return
		}
		select {
		case in.sem <- struct{}{}:
		default:
			// Full: refuse at once (the egress answers 503) rather than
			// stall every request behind this one on the connection.
			in.refuse(ctx, c, peer, msg, log, "too many concurrent requests")
			continue
		}
		in.mu.Lock()
		if in.draining {
			in.mu.Unlock()
			<-in.sem
			in.refuse(ctx, c, peer, msg, log, "sidecar is shutting down")
			continue
		}
		in.requests.Add(1) // under mu: never concurrent with drain's Wait
		in.mu.Unlock()
		go func() {
			defer in.requests.Done()
			in.handle(ctx, c, peer, msg, log, func() { <-in.sem })
		}()
	}
}

// handle answers one request; release frees its concurrency slot once
// the answer is known, before it is sent: the peer may send its next
// request as soon as it has this answer.
func (in *ingress) handle(ctx context.Context, c *idscp2.Conn, peer *pipeline.Peer, msg []byte, log *slog.Logger, release func()) {
	start := time.Now()
	// The identity may have been renewed since the connection started.
	if id := c.PeerIdentity(); id != nil {
		p := *peer
		p.Identity = id
		peer = &p
	}
	resp, req := in.answer(ctx, peer, msg)
	release()
	self := in.self()
	self.Stamp(resp.Header)
	route := "-"
	if req != nil && req.Route != nil {
		route = req.Route.Name
	}
	if resp.Header.Type == "ids:RejectionMessage" {
		in.m.Rejections.WithLabelValues("ingress", resp.Header.RejectionReason).Inc()
	}
	out, err := idsmsg.EncodeApp(&idsmsg.AppMessage{IDS: true, Header: mustMarshal(resp.Header), Payload: resp.Payload, Extra: resp.Extra})
	if err == nil {
		err = c.Send(ctx, out)
	}
	took := time.Since(start)
	in.m.Requests.WithLabelValues("ingress", route, metrics.CodeClass(resp.Status)).Inc()
	in.m.RequestDuration.WithLabelValues("ingress", route).Observe(took.Seconds())
	attrs := []any{"route", route, "status", resp.Status, "duration", took}
	if req != nil {
		attrs = append(attrs, "type", req.Header.Type, "id", req.Header.ID)
	}
	if err != nil {
		log.Warn("cannot answer peer", append(attrs, "err", err)...)
		return
	}
	log.Info("ingress request", attrs...)
}

// refuse answers a request with TEMPORARILY_NOT_AVAILABLE (503) without
// running it: the ingress is full or draining.
func (in *ingress) refuse(ctx context.Context, c *idscp2.Conn, peer *pipeline.Peer, msg []byte, log *slog.Logger, why string) {
	var req *pipeline.Request
	if app, err := idsmsg.DecodeApp(msg); err == nil {
		if h, err := idsmsg.Parse([]byte(app.Header)); err == nil {
			req = &pipeline.Request{Peer: peer, Header: h}
		}
	}
	resp := pipeline.Reject(req, idsmsg.TemporarilyNotAvailable, http.StatusServiceUnavailable, why)
	in.self().Stamp(resp.Header)
	in.m.Rejections.WithLabelValues("ingress", resp.Header.RejectionReason).Inc()
	in.m.Requests.WithLabelValues("ingress", "-", metrics.CodeClass(resp.Status)).Inc()
	out, err := idsmsg.EncodeApp(&idsmsg.AppMessage{IDS: true, Header: mustMarshal(resp.Header), Payload: resp.Payload, Extra: resp.Extra})
	if err == nil {
		err = c.Send(ctx, out)
	}
	if err != nil {
		log.Warn("cannot refuse peer request", "err", err)
		return
	}
	log.Warn("request refused", "reason", why)
}

// answer decodes a peer message and runs it through the chain. Anything
// malformed is answered with MALFORMED_MESSAGE naming what is wrong.
func (in *ingress) answer(ctx context.Context, peer *pipeline.Peer, msg []byte) (*pipeline.Response, *pipeline.Request) {
	app, err := idsmsg.DecodeApp(msg)
	if err != nil {
		return pipeline.Reject(nil, idsmsg.MalformedMessage, http.StatusBadRequest, "not an IDSCP2 app-layer message: "+err.Error()), nil
	}
	if !app.IDS {
		return pipeline.Reject(nil, idsmsg.MessageTypeNotSupported, http.StatusBadRequest,
			"this sidecar expects IdsMessage, not GenericMessage"), nil
	}
	header, err := idsmsg.Parse([]byte(app.Header))
	if err != nil {
		return pipeline.Reject(nil, idsmsg.MalformedMessage, http.StatusBadRequest, "IDS header: "+err.Error()), nil
	}
	req := &pipeline.Request{Peer: peer, Header: header, Payload: app.Payload, Extra: app.Extra}
	return in.handler().Handle(ctx, req), req
}

// closeConns closes every peer connection with USER_SHUTDOWN.
func (in *ingress) closeConns() {
	in.mu.Lock()
	in.closed = true
	conns := make([]*idscp2.Conn, 0, len(in.conns))
	for c := range in.conns {
		conns = append(conns, c)
	}
	in.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func peerOf(c *idscp2.Conn) *pipeline.Peer {
	prover, verifier := c.Suites()
	return &pipeline.Peer{
		Identity:      c.PeerIdentity(),
		Certificate:   c.PeerCertificate(),
		ProverSuite:   prover,
		VerifierSuite: verifier,
		Addr:          c.RemoteAddr().String(),
	}
}

func subjectOf(p *pipeline.Peer) string {
	if p.Identity == nil {
		return ""
	}
	return p.Identity.Subject
}

func mustMarshal(m *idsmsg.Message) string {
	b, err := m.Marshal()
	if err != nil { // only for values the sidecar itself could not have built
		return "{}"
	}
	return string(b)
}
