package idscp2

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// Observer receives the events operators count. Every method is called on
// the connection's hot path or under its lock: it must be cheap and must
// not block or call back into the connection. Config.Observer nil means none.
type Observer interface {
	// Opened and Closed bracket the life of every connection that passed
	// the TLS handshake.
	Opened(c *Conn)
	Closed(c *Conn, err *CloseError)
	// Handshake reports the end of every handshake a Dial or Listener ran:
	// err nil means ESTABLISHED; ClassifyHandshake names the failure.
	Handshake(client bool, took time.Duration, err error)
	// Message counts one frame; kind is a MessageKind name.
	Message(out bool, kind string, frameBytes int)
	// Dropped counts a received frame that was discarded (unparseable, empty).
	Dropped(reason string)
	// DatVerified counts a peer DAT verification; reason "" means accepted.
	DatVerified(reason dat.Reason)
	// Attestation reports one finished driver run.
	Attestation(prover bool, suite string, took time.Duration, err error)
}

// MessageKind names an IdscpMessage by its oneof field.
func MessageKind(m *pb.IdscpMessage) string {
	switch m.GetMessage().(type) {
	case *pb.IdscpMessage_IdscpHello:
		return "hello"
	case *pb.IdscpMessage_IdscpClose:
		return "close"
	case *pb.IdscpMessage_IdscpDatExpired:
		return "dat_expired"
	case *pb.IdscpMessage_IdscpDat:
		return "dat"
	case *pb.IdscpMessage_IdscpReRa:
		return "re_ra"
	case *pb.IdscpMessage_IdscpRaProver:
		return "ra_prover"
	case *pb.IdscpMessage_IdscpRaVerifier:
		return "ra_verifier"
	case *pb.IdscpMessage_IdscpData:
		return "data"
	case *pb.IdscpMessage_IdscpAck:
		return "ack"
	}
	return "empty"
}

// Handshake failure classes, a bounded label set for metrics.
const (
	HandshakeOK           = "ok"
	HandshakeTLSError     = "tls_error"
	HandshakeCertRejected = "cert_rejected"
	HandshakeTimeout      = "timeout"
	HandshakeDatInvalid   = "dat_invalid"
	HandshakeRaFailed     = "ra_failed"
	HandshakeRaMismatch   = "ra_mismatch"
	HandshakePeerClosed   = "peer_closed"
	HandshakeError        = "error"
)

// ClassifyHandshake maps a Dial or Listener handshake error to one of the
// Handshake* classes.
func ClassifyHandshake(err error) string {
	if err == nil {
		return HandshakeOK
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		switch ce.Cause {
		case pb.IdscpClose_TIMEOUT:
			return HandshakeTimeout
		case pb.IdscpClose_NO_VALID_DAT:
			return HandshakeDatInvalid
		case pb.IdscpClose_RA_PROVER_FAILED, pb.IdscpClose_RA_VERIFIER_FAILED:
			return HandshakeRaFailed
		case pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER, pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER:
			return HandshakeRaMismatch
		}
		if ce.Remote {
			return HandshakePeerClosed
		}
		return HandshakeError
	}
	var pe *PeerCertError
	var ue x509.UnknownAuthorityError
	var ie x509.CertificateInvalidError
	var he x509.HostnameError
	if errors.As(err, &pe) || errors.As(err, &ue) || errors.As(err, &ie) || errors.As(err, &he) {
		return HandshakeCertRejected
	}
	var ae tls.AlertError
	var re tls.RecordHeaderError
	if errors.As(err, &ae) || errors.As(err, &re) {
		return HandshakeTLSError
	}
	if errors.Is(err, errTLS) {
		return HandshakeTLSError
	}
	return HandshakeError
}

// errTLS marks errors from the TLS handshake itself.
var errTLS = errors.New("TLS handshake")

type nopObserver struct{}

func (nopObserver) Opened(*Conn)                                   {}
func (nopObserver) Closed(*Conn, *CloseError)                      {}
func (nopObserver) Handshake(bool, time.Duration, error)           {}
func (nopObserver) Message(bool, string, int)                      {}
func (nopObserver) Dropped(string)                                 {}
func (nopObserver) DatVerified(dat.Reason)                         {}
func (nopObserver) Attestation(bool, string, time.Duration, error) {}
