// Package attestation defines remote-attestation (RA) drivers and the
// registry that maps IDSCP2 suite names to them.
//
// IDSCP2 treats the RA exchange as opaque: each side runs a prover (proving
// itself to the peer) and a verifier (checking the peer) for the suites chosen
// from the Hello messages. A driver run is one call of Prove or Verify with a
// Session; it talks to its counterpart on the peer through Session.Send and
// Session.Recv, and reports success by returning nil. The connection cancels
// ctx when the run is no longer wanted (close, re-attestation restart).
package attestation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Prover proves this side to the peer's verifier.
type Prover interface {
	Prove(ctx context.Context, s *Session) error
}

// Verifier checks the peer's prover.
type Verifier interface {
	Verify(ctx context.Context, s *Session) error
}

// ProverFunc and VerifierFunc adapt functions to the interfaces.
type (
	ProverFunc   func(ctx context.Context, s *Session) error
	VerifierFunc func(ctx context.Context, s *Session) error
)

func (f ProverFunc) Prove(ctx context.Context, s *Session) error    { return f(ctx, s) }
func (f VerifierFunc) Verify(ctx context.Context, s *Session) error { return f(ctx, s) }

// Session is one driver run's view of the connection.
type Session struct {
	Suite        string
	LocalCert    *x509.Certificate // this side's TLS leaf
	PeerCert     *x509.Certificate // the peer's TLS leaf
	PeerIdentity *dat.Identity     // the peer's verified DAT (golden values may travel in it)

	// Out hands a message to the peer's counterpart driver (wrapped in
	// IdscpRaProver or IdscpRaVerifier by the connection).
	Out func([]byte) error
	// In receives the counterpart's messages.
	In <-chan []byte
}

// ErrClosed is returned by Recv when the connection stopped the run's input.
var ErrClosed = errors.New("attestation: session input closed")

// Send hands msg to the peer's counterpart driver.
func (s *Session) Send(msg []byte) error { return s.Out(msg) }

// Recv waits for the counterpart's next message.
func (s *Session) Recv(ctx context.Context) ([]byte, error) {
	select {
	case m, ok := <-s.In:
		if !ok {
			return nil, ErrClosed
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Registry maps suite names to drivers. It is safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	provers   map[string]Prover
	verifiers map[string]Verifier
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{provers: map[string]Prover{}, verifiers: map[string]Verifier{}}
}

// Default returns a registry with the suites every deployment of the
// reference can run: Dummy2 (the Camel default), Dummy and NullRa. None of
// them proves anything; they exist for interoperability.
func Default() *Registry {
	r := NewRegistry()
	r.RegisterProver(Dummy2, ProverFunc(proveDummy2))
	r.RegisterVerifier(Dummy2, VerifierFunc(verifyDummy2))
	r.RegisterProver(Dummy, ProverFunc(proveDummy))
	r.RegisterVerifier(Dummy, VerifierFunc(verifyDummy))
	r.RegisterProver(NullRa, ProverFunc(proveNullRa))
	r.RegisterVerifier(NullRa, VerifierFunc(verifyNullRa))
	return r
}

// RegisterProver adds or replaces the prover for suite.
func (r *Registry) RegisterProver(suite string, p Prover) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.provers[suite] = p
}

// RegisterVerifier adds or replaces the verifier for suite.
func (r *Registry) RegisterVerifier(suite string, v Verifier) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verifiers[suite] = v
}

// Prover returns the prover for suite.
func (r *Registry) Prover(suite string) (Prover, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.provers[suite]
	return p, ok
}

// Verifier returns the verifier for suite.
func (r *Registry) Verifier(suite string) (Verifier, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.verifiers[suite]
	return v, ok
}

// Suites lists the registered prover and verifier suite names, sorted.
func (r *Registry) Suites() (provers, verifiers []string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for s := range r.provers {
		provers = append(provers, s)
	}
	for s := range r.verifiers {
		verifiers = append(verifiers, s)
	}
	sort.Strings(provers)
	sort.Strings(verifiers)
	return provers, verifiers
}

// Check reports the first suite in supported without a prover or in expected
// without a verifier, so a misconfiguration fails at start-up, not at the
// first handshake.
func (r *Registry) Check(supported, expected []string) error {
	for _, s := range supported {
		if _, ok := r.Prover(s); !ok {
			return fmt.Errorf("attestation: no prover registered for supported suite %q", s)
		}
	}
	for _, s := range expected {
		if _, ok := r.Verifier(s); !ok {
			return fmt.Errorf("attestation: no verifier registered for expected suite %q", s)
		}
	}
	return nil
}
