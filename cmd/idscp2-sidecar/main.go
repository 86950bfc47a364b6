// Command idscp2-sidecar runs the IDSCP2 sidecar, the built-in development
// DAPS and the embedded demo.
//
//	idscp2-sidecar run --config FILE      the sidecar
//	idscp2-sidecar daps --listen ADDR …   a DAPS for development and closed test data spaces
//	idscp2-sidecar demo [--keep]          two peered sidecars, a DAPS and a backend, in-process
//	idscp2-sidecar tpm SUBCOMMAND …       provision and inspect the TPM attestation key, PCRs, golden values
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

const usage = `idscp2-sidecar puts an ordinary HTTP service into an International Data Space.

Usage:
  idscp2-sidecar run --config FILE     run the sidecar (SIGHUP reloads, SIGTERM drains)
  idscp2-sidecar daps --listen ADDR    run the built-in DAPS (development and closed test data spaces only)
  idscp2-sidecar demo [--keep]         two peered sidecars, the built-in DAPS and a sample backend
  idscp2-sidecar tpm SUBCOMMAND        provision and inspect the TPM attestation key, PCRs and golden values
  idscp2-sidecar help [COMMAND]

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runSidecar(ctx, args[1:], stdout, stderr)
	case "daps":
		return runDAPS(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "tpm":
		return runTPM(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return 2
}
