// Package pipeline is the ingress request path: what happens to an IDS
// message from a peer between the IDSCP2 connection and the local backend.
//
// It is a chain of Handlers. Each Middleware sees the request with the
// peer's verified identity and either answers it (a rejection, a cached
// answer) or passes it on; the last Handler forwards to a backend. The
// routing, access control and backend steps live here; a contract gate or
// Clearing House logging are further Middlewares added to the chain.
package pipeline

import (
	"context"
	"crypto/x509"
	"strconv"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// Peer is what the IDSCP2 handshake established about the sender.
type Peer struct {
	Identity      *dat.Identity     // the verified DAT
	Certificate   *x509.Certificate // the TLS leaf
	ProverSuite   string            // the suite the peer verified us with
	VerifierSuite string            // the suite we verified the peer with
	Addr          string
}

// Request is one IDS message from a peer.
type Request struct {
	Peer    *Peer
	Header  *idsmsg.Message
	Payload []byte
	Extra   []idsmsg.Header
	Route   *Route // set by the router
}

// Response is the answer to a Request. Status is the HTTP status the
// answer corresponds to, for logs and metrics.
type Response struct {
	Header  *idsmsg.Message
	Payload []byte
	Extra   []idsmsg.Header
	Status  int
}

// Handler answers a request. It never returns nil.
type Handler interface {
	Handle(ctx context.Context, req *Request) *Response
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) *Response

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req *Request) *Response { return f(ctx, req) }

// Middleware wraps a Handler.
type Middleware func(next Handler) Handler

// Chain returns h wrapped by mws, the first middleware outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Reject answers req with an IDS RejectionMessage. status is the HTTP
// status the egress side should answer with, carried in the extra headers
// so a 504 (backend timeout) and a 502 (backend down) stay distinct although
// both are TEMPORARILY_NOT_AVAILABLE; text becomes the payload.
func Reject(req *Request, reason string, status int, text string) *Response {
	var h *idsmsg.Message
	if req != nil {
		h = req.Header
	}
	return &Response{
		Header:  idsmsg.NewRejection(h, reason, idsmsg.Self{}),
		Payload: []byte(text),
		Extra:   []idsmsg.Header{{Name: idsmsg.HdrStatus, Value: strconv.Itoa(status)}},
		Status:  status,
	}
}

// StatusOf returns the HTTP status a response carries in its extra headers,
// or fallback.
func StatusOf(extra []idsmsg.Header, fallback int) int {
	for _, h := range extra {
		if h.Name == idsmsg.HdrStatus {
			if n, err := strconv.Atoi(h.Value); err == nil && n >= 100 && n <= 599 {
				return n
			}
		}
	}
	return fallback
}
