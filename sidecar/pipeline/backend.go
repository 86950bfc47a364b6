package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// Identity headers the ingress sets on requests to an HTTP backend. The
// mapping never copies these from a peer (they are not on its allow-list),
// so a backend can trust them.
const (
	HeaderPeerSubject         = "X-IDS-Peer-Subject"
	HeaderPeerConnector       = "X-IDS-Peer-Connector"
	HeaderPeerSecurityProfile = "X-IDS-Peer-Security-Profile"
	HeaderPeerSuite           = "X-IDS-Peer-Suite"
	HeaderMessageType         = "X-IDS-Message-Type"
)

// HTTPBackend rebuilds the HTTP request a peer's message describes and
// sends it to a local service; the service's answer becomes an
// ids:ResponseMessage.
type HTTPBackend struct {
	URL          *url.URL // scheme and host (and a path prefix) of the service
	Client       *http.Client
	MaxBodyBytes int64
}

// Handle implements Handler.
func (b *HTTPBackend) Handle(ctx context.Context, req *Request) *Response {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, b.URL.String(), bytes.NewReader(req.Payload))
	if err != nil {
		return Reject(req, idsmsg.InternalRecipientError, http.StatusInternalServerError, "cannot build backend request")
	}
	if err := idsmsg.ApplyRequestHeaders(req.Extra, hr); err != nil {
		return Reject(req, idsmsg.MalformedMessage, http.StatusBadRequest, err.Error())
	}
	hr.URL.Scheme, hr.URL.Host = b.URL.Scheme, b.URL.Host
	hr.Host = b.URL.Host
	if p := strings.TrimSuffix(b.URL.Path, "/"); p != "" {
		hr.URL.Path = p + hr.URL.Path
	}
	if hr.Method == http.MethodGet || hr.Method == http.MethodHead {
		if len(req.Payload) == 0 {
			hr.Body, hr.ContentLength = http.NoBody, 0
		}
	}
	setIdentity(hr.Header, req)
	resp, err := b.Client.Do(hr)
	if err != nil {
		return backendFailure(req, err)
	}
	defer resp.Body.Close()
	body, err := ReadLimited(resp.Body, b.MaxBodyBytes, resp.ContentLength)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return Reject(req, idsmsg.InternalRecipientError, http.StatusBadGateway,
				fmt.Sprintf("backend response exceeds %d bytes", b.MaxBodyBytes))
		}
		return backendFailure(req, err)
	}
	return &Response{
		Header:  idsmsg.NewResponse("ids:ResponseMessage", req.Header, idsmsg.Self{}),
		Payload: body,
		Extra:   idsmsg.ResponseHeaders(resp),
		Status:  resp.StatusCode,
	}
}

// MultipartBackend forwards the message as an IDS multipart POST, as IDS
// components (Broker, Clearing House) expect, and passes their multipart
// answer back.
type MultipartBackend struct {
	URL          *url.URL
	Client       *http.Client
	MaxBodyBytes int64
}

// Handle implements Handler.
func (b *MultipartBackend) Handle(ctx context.Context, req *Request) *Response {
	header, err := req.Header.Marshal()
	if err != nil {
		return Reject(req, idsmsg.MalformedMessage, http.StatusBadRequest, err.Error())
	}
	var body bytes.Buffer
	ct, err := idsmsg.WriteMultipart(&body, &idsmsg.Multipart{Header: header, Payload: req.Payload,
		PayloadType: extraValue(req.Extra, "Content-Type")})
	if err != nil {
		return Reject(req, idsmsg.InternalRecipientError, http.StatusInternalServerError, err.Error())
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, b.URL.String(), &body)
	if err != nil {
		return Reject(req, idsmsg.InternalRecipientError, http.StatusInternalServerError, "cannot build backend request")
	}
	hr.Header.Set("Content-Type", ct)
	setIdentity(hr.Header, req)
	resp, err := b.Client.Do(hr)
	if err != nil {
		return backendFailure(req, err)
	}
	defer resp.Body.Close()
	mp, err := idsmsg.ReadMultipart(resp.Header.Get("Content-Type"), resp.Body, b.MaxBodyBytes)
	if err != nil {
		// Not an IDS answer: report the status as the backend gave it.
		reason := idsmsg.InternalRecipientError
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return Reject(req, reason, http.StatusBadGateway, "backend answered without an IDS multipart message: "+err.Error())
		}
		return Reject(req, reason, resp.StatusCode, fmt.Sprintf("backend answered %s without an IDS message", resp.Status))
	}
	h, err := idsmsg.Parse(mp.Header)
	if err != nil {
		return Reject(req, idsmsg.InternalRecipientError, http.StatusBadGateway, "backend sent a malformed IDS header: "+err.Error())
	}
	if h.CorrelationMessage == "" && req.Header != nil {
		h.CorrelationMessage = req.Header.ID
	}
	extra := []idsmsg.Header{{Name: idsmsg.HdrStatus, Value: fmt.Sprint(resp.StatusCode)}}
	if mp.PayloadType != "" {
		extra = append(extra, idsmsg.Header{Name: "Content-Type", Value: mp.PayloadType})
	}
	return &Response{Header: h, Payload: mp.Payload, Extra: extra, Status: resp.StatusCode}
}

func setIdentity(h http.Header, req *Request) {
	for _, k := range []string{HeaderPeerSubject, HeaderPeerConnector, HeaderPeerSecurityProfile, HeaderPeerSuite, HeaderMessageType} {
		h.Del(k)
	}
	if id := req.Peer.Identity; id != nil {
		h.Set(HeaderPeerSubject, id.Subject)
		if id.ReferringConnector != "" {
			h.Set(HeaderPeerConnector, id.ReferringConnector)
		}
		if id.SecurityProfile != "" {
			h.Set(HeaderPeerSecurityProfile, id.SecurityProfile)
		}
	}
	h.Set(HeaderPeerSuite, req.Peer.VerifierSuite)
	if req.Header != nil {
		h.Set(HeaderMessageType, req.Header.Type)
	}
}

// backendFailure maps a failed backend call: a timeout is a 504, anything
// else (refused, reset, DNS) means the backend is down: 502. Both are
// TEMPORARILY_NOT_AVAILABLE to the peer.
func backendFailure(req *Request, err error) *Response {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return Reject(req, idsmsg.TemporarilyNotAvailable, http.StatusGatewayTimeout, "backend timed out")
	}
	return Reject(req, idsmsg.TemporarilyNotAvailable, http.StatusBadGateway, "backend unavailable: "+errText(err))
}

// errText drops the URL net/http puts in front of transport errors: the
// peer has no business learning the backend's address.
func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// ErrTooLarge is returned by ReadLimited for a body over its limit.
var ErrTooLarge = errors.New("body too large")

// ReadLimited reads all of r, failing with ErrTooLarge past limit bytes
// (limit <= 0: no limit). size is the announced length (-1 if unknown), a
// hint only (HEAD and 304 answers announce bodies they do not carry): the
// buffer is allocated for it once instead of grown by doubling.
func ReadLimited(r io.Reader, limit, size int64) ([]byte, error) {
	if limit > 0 && size > limit {
		return nil, ErrTooLarge
	}
	if limit > 0 {
		r = io.LimitReader(r, limit+1)
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size) + bytes.MinRead) // ReadFrom wants MinRead spare before EOF
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	if limit > 0 && int64(buf.Len()) > limit {
		return nil, ErrTooLarge
	}
	return buf.Bytes(), nil
}
