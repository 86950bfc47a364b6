// Package proto_test checks that the committed generated code is what
// `make proto` produces from the .proto sources.
package proto_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("protoc not installed (Debian: apt-get install protobuf-compiler; .ci/run installs it): generated code not re-checked")
	}
	plugin, err := exec.Command("go", "tool", "-n", "protoc-gen-go").Output()
	if err != nil {
		t.Fatalf("locating the pinned protoc-gen-go (go.mod tool line): %v", err)
	}
	out := t.TempDir()
	cmd := exec.Command(protoc, "-I", ".",
		"--plugin=protoc-gen-go="+strings.TrimSpace(string(plugin)),
		"--go_out="+out, "--go_opt=module=github.com/idscp2-sidecar/idscp2-sidecar/proto",
		"idscpv2.proto", "idscp2-app.proto")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, msg)
	}
	for _, f := range []string{"idscp2pb/idscpv2.pb.go", "applayerpb/idscp2-app.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The header names the protoc version; only the code must match.
		if !bytes.Equal(stripVersions(got), stripVersions(want)) {
			t.Errorf("%s differs from what protoc generates: run `make proto` and commit", f)
		}
	}
}

func stripVersions(b []byte) []byte {
	var keep [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("// \tprotoc ")) || bytes.HasPrefix(line, []byte("// \tprotoc-gen-go ")) {
			continue
		}
		keep = append(keep, line)
	}
	return bytes.Join(keep, []byte("\n"))
}
