//go:build tpmsimulator

package tpm_test

import (
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
)

// The in-process Microsoft reference TPM (go-tpm-tools/simulator, cgo,
// links OpenSSL: Debian package libssl-dev). One simulator exists per
// process; each test gets it freshly manufactured and closes it.
func init() {
	backends = append(backends, backend{
		name: "simulator",
		open: func(t testing.TB) transport.TPM {
			tr, err := simulator.OpenSimulator()
			if err != nil {
				t.Skipf("in-process TPM simulator unavailable (needs cgo and libssl-dev): %v", err)
			}
			t.Cleanup(func() { tr.Close() })
			return tr
		},
		swtpm: func(transport.TPM) string { return "" },
	})
}

func TestSimulatorBackend(t *testing.T) {
	be := backends[len(backends)-1]
	r := newRig(t, be, 0)
	if len(r.pcrs) != 24 {
		t.Fatalf("read %d PCRs", len(r.pcrs))
	}
}
