package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keep := fs.Bool("keep", false, "keep everything running and print the URLs to try with curl")
	verbose := fs.Bool("v", false, "show the sidecars' logs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	dir, err := os.MkdirTemp("", "idscp2-sidecar-demo-")
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	var log *slog.Logger
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	p := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	p("== starting: throw-away PKI, built-in DAPS, sample provider service, two sidecars (in %s)", dir)
	env, err := demo.Start(ctx, demo.Options{Dir: dir, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	defer env.Close()
	p("   DAPS (built-in, development only)  %s", env.DAPSURL)
	p("   provider service (plain HTTP)      %s", env.BackendURL)
	p("   provider sidecar, IDSCP2 ingress   %s", env.ProviderAddr)
	p("   consumer sidecar, egress           %s", env.ConsumerURL)

	client := &http.Client{Timeout: 30 * time.Second}
	p("\n== 1. plain HTTP through the tunnel: GET %s/hello", env.ConsumerURL)
	start := time.Now()
	resp, err := client.Get(env.ConsumerURL + "/hello")
	if err != nil {
		fmt.Fprintln(stderr, "demo: request failed:", err)
		return 1
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p("   %s in %s (first request: includes the IDSCP2 handshake with DAPS tokens)", resp.Status, time.Since(start).Round(time.Microsecond))
	p("   %s", strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	start = time.Now()
	resp, err = client.Get(env.ConsumerURL + "/hello")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		p("   again on the established connection: %s in %s", resp.Status, time.Since(start).Round(time.Microsecond))
	}

	p("\n== 2. IDS multipart through the tunnel: ids:DescriptionRequestMessage")
	req := &idsmsg.Message{Type: "ids:DescriptionRequestMessage", IssuerConnector: "https://consumer.demo.local/", SenderAgent: "https://consumer.demo.local/"}
	req.ID = idsmsg.NewID(req.Type)
	header, err := req.Marshal()
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	var mp bytes.Buffer
	ct, err := idsmsg.WriteMultipart(&mp, &idsmsg.Multipart{Header: header})
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	start = time.Now()
	resp, err = client.Post(env.ConsumerURL+"/", ct, &mp)
	if err != nil {
		fmt.Fprintln(stderr, "demo: multipart request failed:", err)
		return 1
	}
	answer, err := idsmsg.ReadMultipart(resp.Header.Get("Content-Type"), resp.Body, 16<<20)
	resp.Body.Close()
	if err != nil {
		fmt.Fprintf(stderr, "demo: multipart answer (%s): %v\n", resp.Status, err)
		return 1
	}
	ah, err := idsmsg.Parse(answer.Header)
	if err != nil {
		fmt.Fprintln(stderr, "demo: answer header:", err)
		return 1
	}
	p("   %s in %s: %s, correlationMessage matches: %t", resp.Status, time.Since(start).Round(time.Microsecond), ah.Type, ah.CorrelationMessage == req.ID)
	p("   securityToken present (the provider sidecar's DAT): %t", ah.SecurityToken != "")
	p("   payload: %s", answer.Payload)

	if !*keep {
		p("\n== done; `idscp2-sidecar demo --keep` leaves it running for curl")
		return 0
	}
	p("\n== running; try:")
	p("   curl -s %s/hello", env.ConsumerURL)
	p("   curl -s -X POST --data-binary @/etc/hostname -H 'Content-Type: text/plain' %s/echo", env.ConsumerURL)
	p("   curl -s %s | grep idscp2_", env.ConsumerMetrics)
	p("   configurations: %s, %s", env.ConsumerConfig, env.ProviderConfig)
	p("   Ctrl-C to stop")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case <-sigs:
	case <-ctx.Done():
	}
	return 0
}
