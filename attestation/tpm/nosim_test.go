//go:build !tpmsimulator

package tpm_test

import "testing"

func TestSimulatorBackend(t *testing.T) {
	t.Skip("in-process TPM simulator tests not built: they need `go test -tags tpmsimulator`, cgo and the Debian package libssl-dev (go-tpm-tools/simulator links OpenSSL)")
}
