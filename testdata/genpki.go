//go:build ignore

// genpki writes a freshly generated test PKI (see internal/testpki) to a
// directory, for manual testing and external tools that need files on disk.
// Nothing is committed: rerun it whenever certificates are needed.
//
//	go run ./testdata/genpki.go -out testdata/pki
package main

import (
	"flag"
	"fmt"
	"log"

	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

func main() {
	out := flag.String("out", "testdata/pki", "directory to write the PEM files into")
	flag.Parse()

	b, err := testpki.NewBundle()
	if err != nil {
		log.Fatalf("genpki: %v", err)
	}
	if err := b.WriteFiles(*out); err != nil {
		log.Fatalf("genpki: %v", err)
	}
	fmt.Printf("genpki: wrote test PKI to %s\n", *out)
}
