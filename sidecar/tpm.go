package sidecar

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
)

// registerTPM adds the TPM suite to r when the configuration uses it: a
// prover if this side proves with TPM, a verifier if it expects TPM.
// It returns a closer for the TPM.
func (s *Sidecar) registerTPM(cfg *config.Config, r *attestation.Registry) (func() error, error) {
	proves := slices.Contains(cfg.Attestation.SupportedSuites, config.SuiteTPM)
	verifies := slices.Contains(cfg.Attestation.ExpectedSuites, config.SuiteTPM)
	if !proves && !verifies {
		return func() error { return nil }, nil
	}
	t := cfg.Attestation.TPM
	if t == nil {
		return nil, errors.New("attestation.tpm is required when the TPM suite is used")
	}
	onFailure := func(role string) func(string) {
		return func(reason string) { s.metrics.TPMFailures.WithLabelValues(role, reason).Inc() }
	}
	var prover *tpm.Prover
	closeTPM := func() error { return nil }
	if proves {
		spec := t.Device
		if t.Address != "" {
			spec = "swtpm:" + t.Address
		}
		dev, err := tpm.Open(spec)
		if err != nil {
			return nil, fmt.Errorf("attestation.tpm: %w", err)
		}
		closeTPM = dev.Close
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ak, err := tpm.LoadAK(ctx, dev, t.AKHandle)
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("attestation.tpm: attestation key: %w (provision it with `idscp2-sidecar tpm create-ak`)", err)
		}
		var cert []byte
		if t.AKCert != "" {
			if cert, err = readCertDER(t.AKCert); err != nil {
				dev.Close()
				return nil, fmt.Errorf("attestation.tpm.akCert: %w", err)
			}
		}
		if prover, err = tpm.NewProver(tpm.ProverConfig{AK: ak, Certificate: cert, Logger: s.log.With("component", "tpm"),
			OnFailure: onFailure("prover")}); err != nil {
			dev.Close()
			return nil, fmt.Errorf("attestation.tpm: %w", err)
		}
	}
	var verifier *tpm.Verifier
	if verifies {
		vc := tpm.VerifierConfig{GoldenFromDAT: t.GoldenValuesFromDAT, Logger: s.log.With("component", "tpm"),
			OnFailure: onFailure("verifier")}
		if t.Roots != "" {
			pool, err := loadPool(t.Roots)
			if err != nil {
				closeTPM()
				return nil, fmt.Errorf("attestation.tpm.roots: %w", err)
			}
			vc.Roots = pool
		}
		for _, p := range t.PinnedKeys {
			k, err := loadPublicKey(p)
			if err != nil {
				closeTPM()
				return nil, fmt.Errorf("attestation.tpm.pinnedKeys: %w", err)
			}
			vc.PinnedKeys = append(vc.PinnedKeys, k)
		}
		switch t.AttestationType {
		case config.TPMAll:
			vc.AttestationType = tpmpb.IdsAttestationType_ALL
		case config.TPMAdvanced:
			vc.AttestationType = tpmpb.IdsAttestationType_ADVANCED
			mask, err := tpm.ParseMask(t.PCRMask)
			if err != nil {
				closeTPM()
				return nil, fmt.Errorf("attestation.tpm.pcrMask: %w", err)
			}
			vc.PCRMask = mask
		}
		if t.GoldenValues != "" {
			g, err := tpm.LoadGoldenValues(t.GoldenValues)
			if err != nil {
				closeTPM()
				return nil, fmt.Errorf("attestation.tpm.goldenValues: %w", err)
			}
			vc.Golden = g
		}
		var err error
		if verifier, err = tpm.NewVerifier(vc); err != nil {
			closeTPM()
			return nil, fmt.Errorf("attestation.tpm: %w", err)
		}
	}
	tpm.Register(r, prover, verifier)
	return closeTPM, nil
}

func readCertDER(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		return blk.Bytes, nil
	}
	return b, nil
}

func loadPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return tpm.ParsePublicKeyPEM(b)
}
