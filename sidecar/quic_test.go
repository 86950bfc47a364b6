package sidecar_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
)

// TestQUICRefused: a configuration asking for the not yet implemented QUIC
// binding is refused instead of silently dialling TCP.
func TestQUICRefused(t *testing.T) {
	env := e2eStart(t, demo.Options{})
	for _, tc := range []struct{ name, file, from, to, want string }{
		{"peer", env.ConsumerConfig, "    address:", "    transport: quic\n    address:", "transport quic"},
		{"ingress", env.ProviderConfig, "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  transports: [tcp, quic]\n", "ingress.transports"},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(b), tc.from, tc.to, 1)
		if edited == string(b) {
			t.Fatalf("%s: %q not found in the configuration", tc.name, tc.from)
		}
		cfg, err := config.Parse([]byte(edited), filepath.Dir(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := sidecar.New(cfg, sidecar.Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
