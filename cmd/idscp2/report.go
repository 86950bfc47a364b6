package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// syncWriter serialises writes from several goroutines, one Write per
// message or report so that lines do not interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// writeMessage writes one received message followed by a newline, in one Write.
func writeMessage(w io.Writer, msg []byte) error {
	buf := make([]byte, 0, len(msg)+1)
	buf = append(append(buf, msg...), '\n')
	_, err := w.Write(buf)
	return err
}

// handshakeReport describes what an established connection's handshake
// settled: transport addresses, the peer certificate, the negotiated RA
// suites and the peer's DAT. Every line starts with prefix.
//
// idscp2.Conn does not expose the tls.ConnectionState, so the TLS version
// and cipher suite are not shown.
func handshakeReport(prefix string, c *idscp2.Conn) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		b.WriteString(prefix)
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	line("connected: peer %s, local %s, state %s", c.RemoteAddr(), c.LocalAddr(), c.State())
	if cert := c.PeerCertificate(); cert != nil {
		line("peer certificate: subject %q, issuer %q", cert.Subject.String(), cert.Issuer.String())
		line("  SANs: %s", sans(cert))
		line("  valid until %s (%s left)", cert.NotAfter.UTC().Format(time.RFC3339),
			time.Until(cert.NotAfter).Round(time.Minute))
		line("  SHA-256 fingerprint: %s", dat.Fingerprint(cert))
		line("  connector id: %s", dat.ConnectorID(cert))
	}
	prover, verifier := c.Suites()
	line("RA suites: proving with %s, verifying the peer with %s", prover, verifier)
	if id := c.PeerIdentity(); id != nil {
		line("peer DAT: subject %q, issuer %q, expires %s", id.Subject, id.Issuer, id.Expiry.UTC().Format(time.RFC3339))
		if id.SecurityProfile != "" {
			line("  security profile: %s", id.SecurityProfile)
		}
		if id.ReferringConnector != "" {
			line("  referring connector: %s", id.ReferringConnector)
		}
		claims := []byte("{}")
		if len(id.Claims) > 0 {
			if j, err := json.Marshal(id.Claims); err == nil {
				claims = j
			} else {
				claims = []byte(fmt.Sprintf("(not representable as JSON: %v)", err))
			}
		}
		line("  claims: %s", claims)
	} else {
		line("peer DAT: none")
	}
	return b.String()
}

// sans lists a certificate's subjectAltNames.
func sans(cert *x509.Certificate) string {
	var s []string
	for _, n := range cert.DNSNames {
		s = append(s, "DNS:"+n)
	}
	for _, ip := range cert.IPAddresses {
		s = append(s, "IP:"+ip.String())
	}
	for _, u := range cert.URIs {
		s = append(s, "URI:"+u.String())
	}
	for _, e := range cert.EmailAddresses {
		s = append(s, "email:"+e)
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// closeCause names the IdscpClose cause behind a close: the one sent or
// received, or the one the reference would have used when it closes without
// sending any (suite mismatch); NONE when no cause applies (channel error).
func closeCause(ce *idscp2.CloseError) string {
	if !ce.Sent && !ce.Remote && ce.Cause == pb.IdscpClose_USER_SHUTDOWN {
		return "NONE"
	}
	return ce.Cause.String()
}

// describe returns err's text, followed by " cause=<CAUSE>" when a
// *idscp2.CloseError is in its chain.
func describe(err error) string {
	var ce *idscp2.CloseError
	if errors.As(err, &ce) {
		return err.Error() + " cause=" + closeCause(ce)
	}
	return err.Error()
}

// peerClosedNormally reports whether the connection ended because the peer
// closed it with USER_SHUTDOWN (an IdscpClose or a clean end of the channel).
func peerClosedNormally(err error) bool {
	var ce *idscp2.CloseError
	return errors.As(err, &ce) && ce.Remote && ce.Cause == pb.IdscpClose_USER_SHUTDOWN
}

// closedByUs reports whether the connection ended because this side closed
// it (Conn.Close: IdscpClose USER_SHUTDOWN sent, nothing from the peer).
func closedByUs(err error) bool {
	var ce *idscp2.CloseError
	return errors.As(err, &ce) && ce.Sent && !ce.Remote && ce.Cause == pb.IdscpClose_USER_SHUTDOWN
}
