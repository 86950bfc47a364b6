package attestation

import (
	"context"
)

// Suite names of the reference's test suites.
const (
	Dummy2 = "Dummy2" // no messages, both sides succeed at once (Camel's default)
	Dummy  = "Dummy"  // four "test" messages, P→V, V→P, P→V, V→P (legacy)
	NullRa = "NullRa" // the prover sends one empty message, the verifier answers with one
)

var dummyPayload = []byte("test")

func proveDummy2(context.Context, *Session) error  { return nil }
func verifyDummy2(context.Context, *Session) error { return nil }

// proveDummy mirrors idscp2-jvm RaProverDummy: send "test", wait for the
// verifier, twice. The content of the verifier's messages is not checked.
func proveDummy(ctx context.Context, s *Session) error {
	for range 2 {
		if err := s.Send(dummyPayload); err != nil {
			return err
		}
		if _, err := s.Recv(ctx); err != nil {
			return err
		}
	}
	return nil
}

// verifyDummy mirrors idscp2-jvm RaVerifierDummy: wait for the prover and
// answer "test", twice.
func verifyDummy(ctx context.Context, s *Session) error {
	for range 2 {
		if _, err := s.Recv(ctx); err != nil {
			return err
		}
		if err := s.Send(dummyPayload); err != nil {
			return err
		}
	}
	return nil
}

// proveNullRa sends an empty message and succeeds on the verifier's answer.
func proveNullRa(ctx context.Context, s *Session) error {
	if err := s.Send(nil); err != nil {
		return err
	}
	_, err := s.Recv(ctx)
	return err
}

// verifyNullRa waits for the prover's message and answers with an empty one.
func verifyNullRa(ctx context.Context, s *Session) error {
	if _, err := s.Recv(ctx); err != nil {
		return err
	}
	return s.Send(nil)
}
