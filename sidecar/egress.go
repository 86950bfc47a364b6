package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/metrics"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/peering"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/pipeline"
)

// Egress modes.
const (
	ModeHTTP      = "http"      // plain HTTP becomes ids:RequestMessage + extraHeaders
	ModeMultipart = "multipart" // IDS multipart passes through with the token filled in
	ModeAuto      = "auto"      // multipart when the client sends it, else http
)

// egress is the HTTP handler behind one local egress listener: it carries
// each local request to one peer and answers with the peer's response.
type egress struct {
	settings atomic.Pointer[egressSettings] // replaced by a reload
	self     func() idsmsg.Self
	log      *slog.Logger
	m        *metrics.Metrics
}

// egressSettings are what a reload may change on a running listener.
type egressSettings struct {
	peer        string
	pool        *peering.Pool
	mode        string
	messageType string
	timeout     time.Duration
	maxBody     int64
	retryAfter  time.Duration
}

// httpError is an answer the sidecar gives itself, never the peer.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func (eg *egress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := eg.settings.Load()
	start := time.Now()
	status, err := eg.serve(e, w, r)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		} else {
			status = http.StatusBadGateway
		}
		if status == http.StatusServiceUnavailable {
			e.setRetryAfter(w.Header())
		}
		http.Error(w, err.Error(), status)
	}
	took := time.Since(start)
	eg.m.Requests.WithLabelValues("egress", e.peer, metrics.CodeClass(status)).Inc()
	eg.m.RequestDuration.WithLabelValues("egress", e.peer).Observe(took.Seconds())
	attrs := []any{"peer", e.peer, "method", r.Method, "path", r.URL.Path, "status", status, "duration", took}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	eg.log.Info("egress request", attrs...)
}

// serve carries one request; it returns the status written, or an error
// for ServeHTTP to answer.
func (eg *egress) serve(e *egressSettings, w http.ResponseWriter, r *http.Request) (int, error) {
	if r.ContentLength > e.maxBody {
		return 0, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", e.maxBody)}
	}
	multipart := e.mode == ModeMultipart || e.mode == ModeAuto && isMultipart(r.Header.Get("Content-Type"))
	var app *idsmsg.AppMessage
	var header *idsmsg.Message
	var idempotent bool
	if multipart {
		mp, err := idsmsg.ReadMultipart(r.Header.Get("Content-Type"), r.Body, e.maxBody)
		if err != nil {
			if errors.Is(err, idsmsg.ErrTooLarge) {
				return 0, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", e.maxBody)}
			}
			return 0, &httpError{http.StatusBadRequest, "malformed IDS multipart request: " + err.Error()}
		}
		if header, err = idsmsg.Parse(mp.Header); err != nil {
			return 0, &httpError{http.StatusBadRequest, "malformed IDS header: " + err.Error()}
		}
		eg.self().Stamp(header)
		app = &idsmsg.AppMessage{IDS: true, Header: mustMarshal(header), Payload: mp.Payload}
		if mp.PayloadType != "" {
			app.Extra = []idsmsg.Header{{Name: "Content-Type", Value: mp.PayloadType}}
		}
	} else {
		body, err := pipeline.ReadLimited(r.Body, e.maxBody, r.ContentLength)
		if err != nil {
			if errors.Is(err, pipeline.ErrTooLarge) {
				return 0, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", e.maxBody)}
			}
			return 0, &httpError{http.StatusBadRequest, "cannot read request body: " + err.Error()}
		}
		header = &idsmsg.Message{Type: e.messageType}
		eg.self().Stamp(header)
		app = &idsmsg.AppMessage{IDS: true, Header: mustMarshal(header), Payload: body, Extra: idsmsg.RequestHeaders(r)}
		idempotent = isIdempotent(r.Method)
	}
	payload, err := idsmsg.EncodeApp(app)
	if err != nil {
		return 0, &httpError{http.StatusInternalServerError, "cannot encode the IDS message: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(r.Context(), e.timeout)
	defer cancel()
	reply, err := e.pool.Exchange(ctx, &peering.Request{ID: header.ID, Payload: payload, Idempotent: idempotent})
	if err != nil {
		return 0, e.roundTripError(err)
	}
	// The pool's reader parsed it to find this request: only a well-formed
	// answer can carry our id.
	a := reply.Decoded.(*answer)
	resp, rh := a.app, a.header
	rejected := rh.Type == "ids:RejectionMessage"
	status := http.StatusOK
	if rejected {
		eg.m.Rejections.WithLabelValues("egress", rh.RejectionReason).Inc()
		status = rejectionStatus(rh.RejectionReason)
	}
	// The peer's sidecar states the HTTP status it means (a backend's
	// answer, or 502 vs 504 behind TEMPORARILY_NOT_AVAILABLE).
	status = pipeline.StatusOf(resp.Extra, status)
	if status == http.StatusServiceUnavailable {
		e.setRetryAfter(w.Header())
	}
	if multipart {
		// Buffered: the boundary must not occur in the parts, which is
		// only known once they are written.
		var buf bytes.Buffer
		ct, err := idsmsg.WriteMultipart(&buf, &idsmsg.Multipart{Header: []byte(resp.Header), Payload: resp.Payload,
			PayloadType: headerValue(resp.Extra, "Content-Type")})
		if err != nil {
			return 0, &httpError{http.StatusBadGateway, "cannot encode the peer's answer: " + err.Error()}
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		w.Write(buf.Bytes())
		return status, nil
	}
	if !rejected {
		if _, err := idsmsg.ApplyResponseHeaders(resp.Extra, w.Header()); err != nil {
			return 0, &httpError{http.StatusBadGateway, "peer answered with malformed HTTP headers: " + err.Error()}
		}
	} else if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(status)
	w.Write(resp.Payload)
	return status, nil
}

// setRetryAfter tells a client refused with 503 when to try again.
func (e *egressSettings) setRetryAfter(h http.Header) {
	h.Set("Retry-After", strconv.Itoa(max(1, int(e.retryAfter.Seconds()))))
}

// rejectionStatus maps a rejection without an explicit status; the issue
// asks for 502 when the peer's backend is unavailable.
func rejectionStatus(reason string) int {
	if reason == idsmsg.TemporarilyNotAvailable {
		return http.StatusBadGateway
	}
	return idsmsg.StatusForRejection(reason)
}

func (e *egressSettings) roundTripError(err error) error {
	var ue *peering.UnavailableError
	var le *peering.LostError
	switch {
	case errors.Is(err, peering.ErrQueueFull):
		return &httpError{http.StatusServiceUnavailable, "too many requests to peer " + e.peer}
	case errors.Is(err, context.DeadlineExceeded):
		return &httpError{http.StatusGatewayTimeout, "peer " + e.peer + " did not answer in time"}
	case errors.As(err, &ue):
		return &httpError{http.StatusBadGateway, "no connection to peer " + e.peer + ": " + ue.Err.Error()}
	case errors.As(err, &le):
		return &httpError{http.StatusBadGateway, "connection to peer " + e.peer + " lost: " + le.Err.Error()}
	case errors.Is(err, peering.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, "sidecar is shutting down"}
	}
	return &httpError{http.StatusBadGateway, err.Error()}
}

func isMultipart(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "multipart/form-data" || mt == "multipart/mixed")
}

// isIdempotent follows RFC 9110 §9.2.2: only these may be sent twice.
func isIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func headerValue(extra []idsmsg.Header, name string) string {
	for _, h := range extra {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}
