// Package tpm implements the IDSCP2 remote-attestation suite "TPM": a prover
// that quotes PCRs with a TPM 2.0 attestation key (AK) and a verifier that
// checks such quotes, wire-compatible with the reference driver
// idscp2-ra-tpm2d (message schema in tpmpb, flow below).
//
// The exchange, carried in IdscpRaVerifier/IdscpRaProver messages:
//
//  1. The verifier sends TpmChallenge{atype, nonce (20 random bytes),
//     pcr_indices}: BASIC asks for PCRs 0–11, ALL for 0–23, ADVANCED for the
//     PCRs set in the pcr_indices bit mask.
//  2. The prover quotes those PCRs of the SHA-256 bank with qualifying data
//     SHA-1(nonce ‖ DER of the verifier's TLS certificate), the binding the
//     reference uses, and answers TpmResponse{atype, hash_alg "SHA256",
//     quoted (the marshalled TPMS_ATTEST), signature (a marshalled
//     TPMT_SIGNATURE), pcr_values, certificate (the AK certificate, DER)}.
//  3. The verifier checks the AK (certificate chain to its roots, or a pinned
//     public key), the quote's signature, that extraData is the binding of its
//     own nonce and its own certificate, that the quote covers exactly the PCRs
//     it asked for, that the PCR digest in the quote is the digest of the
//     reported values (the reference only logs a mismatch; this is enforced),
//     and the values against golden values (a local file and/or the peer DAT's
//     pcrGoldenValues claim). It answers TpmResult{result}.
//  4. The prover succeeds iff result is true.
//
// Every refusal carries a Reason (VerifierConfig.OnFailure and
// ProverConfig.OnFailure receive it for metrics). Unlike the reference prover,
// which asks a tpm2d daemon, the prover talks to the TPM directly through
// go-tpm: a kernel device (OpenDevice), swtpm over TCP (OpenSwtpm) or any
// go-tpm transport such as the in-process simulator (New). Commands to one TPM
// are serialised; a slow TPM delays only the attestations that use it.
//
// A TPM takes 100–600 ms per signature, so attestation happens per connection
// and per re-attestation interval, never per request.
package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Suite is the suite name of this driver in IdscpHello, as the reference's.
const Suite = "TPM"

// DefaultDevice is the kernel's TPM resource manager device.
const DefaultDevice = "/dev/tpmrm0"

// ErrTPMClosed is returned by commands on a closed TPM.
var ErrTPMClosed = errors.New("tpm: TPM closed")

// TPM is one TPM. Commands are serialised (one at a time per TPM), as the TPM
// itself and swtpm (one client, no resource manager) require. It is safe for
// concurrent use.
type TPM struct {
	slot   chan struct{} // holds one token while a command sequence runs
	tr     transport.TPM
	closer io.Closer

	mu     sync.Mutex
	closed bool
}

// New wraps a go-tpm transport, for example the in-process simulator
// (go-tpm's transport/simulator) or a test wrapper. The transport is used by
// one goroutine at a time; Close closes it if it is an io.Closer.
func New(tr transport.TPM) *TPM {
	t := &TPM{slot: make(chan struct{}, 1), tr: tr}
	if c, ok := tr.(io.Closer); ok {
		t.closer = c
	}
	return t
}

// Open opens the TPM named by spec, the form a configuration file or a
// command-line flag gives:
//
//	""                    DefaultDevice (/dev/tpmrm0)
//	"/dev/tpmrm0"         a kernel TPM device (any absolute path)
//	"device:/dev/tpm0"    the same, explicitly
//	"swtpm:HOST:PORT"     swtpm's TCP data port (see OpenSwtpm)
//
// The in-process simulator is not reachable this way (it needs cgo and
// OpenSSL); wrap go-tpm's transport/simulator with New instead.
func Open(spec string) (*TPM, error) {
	switch {
	case spec == "":
		return OpenDevice(DefaultDevice)
	case strings.HasPrefix(spec, "swtpm:"):
		return OpenSwtpm(strings.TrimPrefix(spec, "swtpm:"))
	case strings.HasPrefix(spec, "device:"):
		return OpenDevice(strings.TrimPrefix(spec, "device:"))
	case strings.HasPrefix(spec, "/"):
		return OpenDevice(spec)
	default:
		return nil, fmt.Errorf("tpm: unknown TPM %q (want a device path, device:PATH or swtpm:HOST:PORT)", spec)
	}
}

// OpenDevice opens a kernel TPM device, normally DefaultDevice (the
// in-kernel resource manager, which flushes what a crashed process left).
func OpenDevice(path string) (*TPM, error) {
	if path == "" {
		path = DefaultDevice
	}
	tr, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	return New(tr), nil
}

// OpenSwtpm connects to swtpm's TCP data port (swtpm socket --tpm2 --server
// type=tcp,port=P) and speaks raw TPM command framing to it. swtpm's control
// port is never used: it does not speak the MS simulator's platform
// protocol. If the TPM is not started yet, TPM2_Startup(CLEAR) is sent
// (swtpm's --flags not-need-init,startup-clear makes that unnecessary). A
// broken connection is redialled on the next command. swtpm serves one
// client at a time: close the TPM before another tool uses the same swtpm.
func OpenSwtpm(addr string) (*TPM, error) {
	st, err := DialSwtpm(addr)
	if err != nil {
		return nil, err
	}
	return New(st), nil
}

// DialSwtpm returns the transport OpenSwtpm uses, for wrapping (tests, a
// transport that records or delays commands). It is not safe for
// concurrent use; a broken connection is redialled on the next command.
func DialSwtpm(addr string) (transport.TPMCloser, error) {
	st := &streamTransport{addr: addr, timeout: swtpmTimeout}
	if err := st.dial(); err != nil {
		return nil, err
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(st); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		st.Close()
		return nil, fmt.Errorf("tpm: swtpm %s: startup: %w", addr, err)
	}
	return st, nil
}

// Close closes the transport. Commands already running finish first.
func (t *TPM) Close() error {
	t.slot <- struct{}{}
	defer func() { <-t.slot }()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.closer != nil {
		return t.closer.Close()
	}
	return nil
}

// do runs fn with exclusive use of the TPM. Waiting for the TPM honours ctx;
// a command that has started runs to completion.
func (t *TPM) do(ctx context.Context, fn func(tr transport.TPM) error) error {
	select {
	case t.slot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.slot }()
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrTPMClosed
	}
	return fn(t.tr)
}

// swtpmTimeout bounds one command on a swtpm connection. Real devices can
// take long for key generation; swtpm answers in milliseconds.
const swtpmTimeout = 2 * time.Minute

// maxResponse bounds a TPM response (TPM 2.0 MAX_RESPONSE_SIZE is 4096 on
// common TPMs; larger values are allowed).
const maxResponse = 64 << 10

// streamTransport sends raw TPM commands over a stream connection and reads
// each response whole (header, then the size it announces) with io.ReadFull.
// go-tpm's own TCP transport reads with a single Read, which a stream socket
// may split.
type streamTransport struct {
	addr    string
	timeout time.Duration
	conn    net.Conn
}

func (s *streamTransport) dial() error {
	c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("tpm: dial swtpm %s: %w", s.addr, err)
	}
	s.conn = c
	return nil
}

// Send implements transport.TPM.
func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	if s.conn == nil {
		if err := s.dial(); err != nil {
			return nil, err
		}
	}
	rsp, err := s.roundTrip(cmd)
	if err != nil {
		s.conn.Close()
		s.conn = nil
		return nil, fmt.Errorf("tpm: swtpm %s: %w", s.addr, err)
	}
	return rsp, nil
}

func (s *streamTransport) roundTrip(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	var hdr [10]byte // tag, size, response code
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxResponse {
		return nil, fmt.Errorf("bad response size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[len(hdr):]); err != nil {
		return nil, err
	}
	return rsp, nil
}

// Close implements io.Closer.
func (s *streamTransport) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
