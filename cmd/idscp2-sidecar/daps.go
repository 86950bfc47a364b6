package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/dapsserver"
)

const dapsHelp = `idscp2-sidecar daps runs the built-in DAPS.

It is meant for development and closed test data spaces only: it issues DATs
to every client whose certificate is in --clients, with the attributes given
there, and has no certification process behind them. A production data space
uses its operator's DAPS (e.g. omejdn); the sidecar's DAPS client speaks the
same protocol to both.

`

func runDAPS(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("daps", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dapsHelp); fs.PrintDefaults() }
	listen := fs.String("listen", "127.0.0.1:4567", "address to serve on")
	issuer := fs.String("issuer", "", "issuer URL (default http://LISTEN)")
	state := fs.String("state", "", "directory keeping the signing key (required: tokens must survive restarts)")
	clients := fs.String("clients", "", "directory of client certificates (PEM), with optional <name>.json attributes")
	lifetime := fs.Duration("token-lifetime", time.Hour, "lifetime of issued DATs")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	keyFile := fs.String("tls-key", "", "key of --tls-cert")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *state == "" || *clients == "" {
		fmt.Fprintln(stderr, "daps: --state and --clients are required")
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "daps:", err)
		return 1
	}
	if *issuer == "" {
		scheme := "http"
		if *certFile != "" {
			scheme = "https"
		}
		*issuer = scheme + "://" + ln.Addr().String()
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := dapsserver.New(dapsserver.Config{Issuer: *issuer, StateDir: *state, ClientDir: *clients, TokenLifetime: *lifetime})
	if err != nil {
		ln.Close()
		fmt.Fprintln(stderr, "daps:", err)
		return 2
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	log.Warn("built-in DAPS: for development and closed test data spaces only", "issuer", *issuer)
	fmt.Fprintf(stdout, "DAPS issuer %s\n", *issuer)
	errc := make(chan error, 1)
	go func() {
		if *certFile != "" {
			errc <- hs.ServeTLS(ln, *certFile, *keyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(stderr, "daps:", err)
			return 1
		}
	case <-sigs:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	return 0
}
