package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// Route sends matching requests to one backend.
type Route struct {
	Name    string
	Match   Match
	Allow   AccessRule
	Backend Handler // the forwarder (HTTPBackend or MultipartBackend)
	Timeout time.Duration
	// MaxBodyBytes caps the request payload (0: no cap here; the frame
	// size still bounds it).
	MaxBodyBytes int64
}

// Match selects requests; empty fields match everything.
type Match struct {
	MessageTypes []string // compact IDS types, e.g. "ids:QueryMessage"
	PathPrefix   string   // of the CamelHttpPath extra header
	Subjects     []string // DAT subjects of the peer
}

func (m *Match) matches(req *Request) bool {
	if len(m.MessageTypes) > 0 && !slices.Contains(m.MessageTypes, req.Header.Type) {
		return false
	}
	if m.PathPrefix != "" && !strings.HasPrefix(extraValue(req.Extra, idsmsg.HdrPath), m.PathPrefix) {
		return false
	}
	if len(m.Subjects) > 0 && (req.Peer.Identity == nil || !slices.Contains(m.Subjects, req.Peer.Identity.Subject)) {
		return false
	}
	return true
}

// AccessRule says which peers may use a route. Every non-empty field must
// hold. The zero rule admits every peer that completed the IDSCP2 handshake:
// its DAT was verified and bound to its certificate and it was attested with
// one of the expected suites.
type AccessRule struct {
	Subjects           []string // DAT "sub"
	Connectors         []string // DAT referringConnector
	MinSecurityProfile string   // either naming generation
	Suites             []string // the suite the peer was verified with
}

// admits reports whether the rule lets req through, and if not, why.
func (a *AccessRule) admits(req *Request) (bool, string) {
	id := req.Peer.Identity
	if len(a.Subjects) > 0 && (id == nil || !slices.Contains(a.Subjects, id.Subject)) {
		return false, "peer subject not allowed"
	}
	// Only the DAT binds a connector id to the peer; the message header's
	// issuerConnector is the peer's own claim and is not used here.
	if len(a.Connectors) > 0 && (id == nil || !slices.Contains(a.Connectors, id.ReferringConnector)) {
		return false, "peer connector not allowed"
	}
	if a.MinSecurityProfile != "" {
		have := dat.ProfileInvalid
		if id != nil {
			have = dat.ProfileLevel(id.SecurityProfile)
		}
		if have < dat.ProfileLevel(a.MinSecurityProfile) {
			return false, "peer security profile too low"
		}
	}
	if len(a.Suites) > 0 && !slices.Contains(a.Suites, req.Peer.VerifierSuite) {
		return false, "peer attestation suite not allowed"
	}
	return true, ""
}

// Router picks the first matching route, applies its access rule and
// forwards to its backend with its timeout. No route: NOT_FOUND.
type Router struct {
	Routes []*Route
}

// Handle implements Handler.
func (r *Router) Handle(ctx context.Context, req *Request) *Response {
	for _, rt := range r.Routes {
		if !rt.Match.matches(req) {
			continue
		}
		req.Route = rt
		if ok, why := rt.Allow.admits(req); !ok {
			return Reject(req, idsmsg.NotAuthorized, http.StatusForbidden, why)
		}
		if rt.MaxBodyBytes > 0 && int64(len(req.Payload)) > rt.MaxBodyBytes {
			return Reject(req, idsmsg.BadParameters, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body exceeds %d bytes", rt.MaxBodyBytes))
		}
		if rt.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, rt.Timeout)
			defer cancel()
		}
		return rt.Backend.Handle(ctx, req)
	}
	return Reject(req, idsmsg.NotFound, http.StatusNotFound, "no route for this message")
}

func extraValue(extra []idsmsg.Header, name string) string {
	for _, h := range extra {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}
