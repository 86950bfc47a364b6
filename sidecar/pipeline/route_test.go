package pipeline

import (
	"context"
	"net/http"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

func request(typ, path string, id *dat.Identity, suite string, payload int) *Request {
	return &Request{
		Peer:    &Peer{Identity: id, VerifierSuite: suite},
		Header:  &idsmsg.Message{Type: typ, ID: "https://w3id.org/idsa/autogen/requestMessage/1"},
		Extra:   []idsmsg.Header{{Name: idsmsg.HdrPath, Value: path}},
		Payload: make([]byte, payload),
	}
}

// answered is a backend that says which route reached it.
func answered(name string) Handler {
	return HandlerFunc(func(context.Context, *Request) *Response {
		return &Response{Header: &idsmsg.Message{Type: "ids:ResponseMessage"}, Payload: []byte(name), Status: http.StatusOK}
	})
}

func TestRouter(t *testing.T) {
	base := &dat.Identity{Subject: "A:keyid:B", SecurityProfile: "idsc:BASE_SECURITY_PROFILE", ReferringConnector: "https://a.example/"}
	trusted := &dat.Identity{Subject: "C:keyid:D", SecurityProfile: "idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE"}
	r := &Router{Routes: []*Route{
		{Name: "queries", Match: Match{MessageTypes: []string{"ids:QueryMessage"}}, Backend: answered("queries")},
		{Name: "admin", Match: Match{PathPrefix: "/admin"}, Allow: AccessRule{MinSecurityProfile: "idsc:TRUST_SECURITY_PROFILE"}, Backend: answered("admin")},
		{Name: "partners", Match: Match{PathPrefix: "/partners"}, Allow: AccessRule{Connectors: []string{"https://a.example/"}}, Backend: answered("partners")},
		{Name: "tpm-only", Match: Match{PathPrefix: "/attested"}, Allow: AccessRule{Suites: []string{"TPM"}}, Backend: answered("tpm-only")},
		{Name: "small", Match: Match{PathPrefix: "/small"}, MaxBodyBytes: 10, Backend: answered("small")},
		{Name: "by-subject", Match: Match{Subjects: []string{"C:keyid:D"}}, Backend: answered("by-subject")},
	}}
	cases := []struct {
		name   string
		req    *Request
		status int
		want   string // payload of the answer: the route name, or a rejection reason
	}{
		{"type match wins first", request("ids:QueryMessage", "/admin", base, "Dummy2", 0), 200, "queries"},
		{"profile below the minimum", request("ids:RequestMessage", "/admin/x", base, "Dummy2", 0), 403, idsmsg.NotAuthorized},
		{"profile meets it in the other naming generation", request("ids:RequestMessage", "/admin/x", trusted, "Dummy2", 0), 200, "admin"},
		{"connector from the DAT", request("ids:RequestMessage", "/partners", base, "Dummy2", 0), 200, "partners"},
		{"connector missing", request("ids:RequestMessage", "/partners", trusted, "Dummy2", 0), 403, idsmsg.NotAuthorized},
		{"suite refused", request("ids:RequestMessage", "/attested", base, "Dummy2", 0), 403, idsmsg.NotAuthorized},
		{"suite allowed", request("ids:RequestMessage", "/attested", base, "TPM", 0), 200, "tpm-only"},
		{"no identity never passes a rule", request("ids:RequestMessage", "/admin", nil, "Dummy2", 0), 403, idsmsg.NotAuthorized},
		{"body at the limit", request("ids:RequestMessage", "/small", base, "Dummy2", 10), 200, "small"},
		{"body over the limit", request("ids:RequestMessage", "/small", base, "Dummy2", 11), 413, idsmsg.BadParameters},
		{"subject match", request("ids:RequestMessage", "/other", trusted, "Dummy2", 0), 200, "by-subject"},
		{"no route", request("ids:RequestMessage", "/other", base, "Dummy2", 0), 404, idsmsg.NotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := r.Handle(context.Background(), c.req)
			if resp.Status != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.Status, c.status, resp.Payload)
			}
			if c.status == 200 {
				if string(resp.Payload) != c.want {
					t.Errorf("answered by %q, want %q", resp.Payload, c.want)
				}
				return
			}
			if resp.Header.Type != "ids:RejectionMessage" || resp.Header.RejectionReason != c.want {
				t.Errorf("answer %s %s, want a rejection %s", resp.Header.Type, resp.Header.RejectionReason, c.want)
			}
			if resp.Header.CorrelationMessage != c.req.Header.ID {
				t.Errorf("rejection correlates %q, want %q", resp.Header.CorrelationMessage, c.req.Header.ID)
			}
			if got := StatusOf(resp.Extra, 0); got != c.status {
				t.Errorf("status carried to the egress %d, want %d", got, c.status)
			}
		})
	}
}

func TestChainOrder(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, req *Request) *Response {
				order = append(order, name)
				return next.Handle(ctx, req)
			})
		}
	}
	h := Chain(answered("end"), mw("outer"), mw("inner"))
	h.Handle(context.Background(), request("ids:RequestMessage", "/", nil, "", 0))
	if len(order) != 2 || order[0] != "outer" || order[1] != "inner" {
		t.Errorf("middlewares ran in order %v, want [outer inner]", order)
	}
}
