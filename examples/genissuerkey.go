//go:build ignore

// genissuerkey writes a fresh ECDSA P-256 private key (PKCS#8 PEM, mode
// 0600) for daps.mode local: the DAT signing key a closed test set-up
// shares. Same as
// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out FILE`.
//
//	go run ./examples/genissuerkey.go -out examples/two-peers/pki/issuer-key.pem
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

func main() {
	out := flag.String("out", "examples/two-peers/pki/issuer-key.pem", "file to write the PEM key to")
	flag.Parse()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatalf("genissuerkey: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		log.Fatalf("genissuerkey: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		log.Fatalf("genissuerkey: %v", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(*out, data, 0o600); err != nil {
		log.Fatalf("genissuerkey: %v", err)
	}
	fmt.Printf("genissuerkey: wrote DAT signing key to %s\n", *out)
}
