// Command idscp2 is a protocol tool for IDSCP2, in the spirit of
// openssl s_client and s_server: it opens one IDSCP2 connection (connect) or
// serves them (listen), prints what the handshake established, and moves
// lines between the terminal and IDSCP2 data messages.
//
//	idscp2 listen  --addr :29292 --cert server.pem --key server-key.pem --ca ca.pem --daps null --echo
//	idscp2 connect --addr localhost:29292 --cert client.pem --key client-key.pem --ca ca.pem --daps null
//
// Exit codes: 0 success, 1 the connection failed or ended abnormally, 2 a
// usage or configuration error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process the usual way
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "listen":
		return runListen(ctx, rest, stdin, stdout, stderr)
	case "connect":
		return runConnect(ctx, rest, stdin, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			switch rest[0] {
			case "listen":
				fs, _ := newListenFlags(stdout)
				fs.Usage()
				return exitOK
			case "connect":
				fs, _ := newConnectFlags(stdout)
				fs.Usage()
				return exitOK
			}
			fmt.Fprintf(stderr, "idscp2: unknown subcommand %q\n\n", rest[0])
			usage(stderr)
			return exitUsage
		}
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "idscp2: unknown subcommand %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}
}

// usage prints the overview and the flags of every subcommand.
func usage(w io.Writer) {
	fmt.Fprint(w, `idscp2 is an IDSCP2 protocol tool (like openssl s_client / s_server).

Usage:
  idscp2 listen  --addr HOST:PORT [--echo] [--once] [flags]
  idscp2 connect --addr HOST:PORT [flags]
  idscp2 help [listen|connect]

listen accepts IDSCP2 connections, prints each one's handshake to stderr
(prefixed with the peer address) and every received message to stdout, one
per line. SIGINT/SIGTERM close everything with USER_SHUTDOWN and exit 0.

connect opens one connection, prints its handshake to stderr, sends every
stdin line (without its newline) as one data message, waiting for its ACK,
and prints every received message to stdout followed by a newline. At stdin
EOF, once every line was acknowledged (and after --linger), it closes with
USER_SHUTDOWN and exits 0. If the handshake fails or the peer closes first,
the cause goes to stderr ("... cause=<CAUSE>") and the exit code is 1.

Exit codes: 0 success, 1 connection failure, 2 usage or configuration error.

`)
	fs, _ := newListenFlags(w)
	fs.Usage()
	fmt.Fprintln(w)
	fs, _ = newConnectFlags(w)
	fs.Usage()
}
