package main

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat/daps"
)

// commonFlags are the flags both subcommands share; config turns them into
// an idscp2.Config.
type commonFlags struct {
	addr        string
	cert, key   string
	ca          string
	raSupported string
	raExpected  string
	daps        string
	dapsCA      string

	handshakeTimeout time.Duration
	ackTimeout       time.Duration
	raInterval       time.Duration
	maxFrame         int
	verbose          bool
}

type listenFlags struct {
	commonFlags
	addrFile            string
	echo, once          bool
	verifyClientAddress bool
}

type connectFlags struct {
	commonFlags
	skipHostnameVerification bool
	linger                   time.Duration
}

// usageError is a mistake on the command line or in the files it names:
// exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func (f *commonFlags) register(fs *flag.FlagSet, addrHelp string) {
	fs.StringVar(&f.addr, "addr", "", addrHelp+" (required)")
	fs.StringVar(&f.cert, "cert", "", "PEM `file` with this side's certificate (chain) (required)")
	fs.StringVar(&f.key, "key", "", "PEM `file` with the certificate's private key: PKCS#8, PKCS#1 or SEC1 (required)")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` with the CA certificates the peer must chain to (required)")
	fs.StringVar(&f.raSupported, "ra-supported", attestation.Dummy2,
		"comma-separated RA `suites` this side can prove with, in priority order")
	fs.StringVar(&f.raExpected, "ra-expected", attestation.Dummy2,
		"comma-separated RA `suites` this side accepts from the peer, in priority order")
	fs.StringVar(&f.daps, "daps", "",
		"DAT source: a DAPS `URL` (e.g. https://daps.example.org/auth; the client assertion is signed with --key), "+
			"or \"null\" for the reference's insecure NullDaps, which accepts every DAT (required)")
	fs.StringVar(&f.dapsCA, "daps-ca", "", "PEM `file` with the CAs of the DAPS's HTTPS certificate (default: system roots)")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", idscp2.DefaultHandshakeTimeout,
		"time allowed for the TLS and IDSCP2 handshakes and each RA driver run")
	fs.DurationVar(&f.ackTimeout, "ack-timeout", idscp2.DefaultAckTimeout,
		"retransmission interval for an unacknowledged data message")
	fs.DurationVar(&f.raInterval, "ra-interval", idscp2.DefaultRaInterval,
		"interval of the periodic re-attestation of the peer")
	fs.IntVar(&f.maxFrame, "max-frame", idscp2.DefaultMaxFrameSize,
		"maximum frame size in `bytes`, both directions")
	fs.BoolVar(&f.verbose, "v", false, "debug logs to stderr (default: warnings and errors only)")
}

// newListenFlags returns the listen FlagSet, writing its messages to out.
func newListenFlags(out io.Writer) (*flag.FlagSet, *listenFlags) {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &listenFlags{}
	f.register(fs, "`address` to listen on, HOST:PORT (port 0 picks a free one)")
	fs.StringVar(&f.addrFile, "addr-file", "", "write the bound address to this `file` once listening")
	fs.BoolVar(&f.echo, "echo", false, "send every received message back to its sender")
	fs.BoolVar(&f.once, "once", false,
		"serve one connection, then exit: 0 if the peer closed with USER_SHUTDOWN, 1 otherwise (also 1 if the first handshake fails)")
	fs.BoolVar(&f.verifyClientAddress, "verify-client-address", false,
		"require the client certificate to carry the client's source IP as an IP SAN (the reference's default)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "idscp2 listen --addr HOST:PORT [--echo] [--once] [flags]\n\nlisten flags:\n")
		printFlags(fs)
	}
	return fs, f
}

// newConnectFlags returns the connect FlagSet, writing its messages to out.
func newConnectFlags(out io.Writer) (*flag.FlagSet, *connectFlags) {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &connectFlags{}
	f.register(fs, "`address` of the server, HOST:PORT")
	fs.BoolVar(&f.skipHostnameVerification, "skip-hostname-verification", false,
		"do not check the server certificate's SANs against HOST (the chain is still verified)")
	fs.DurationVar(&f.linger, "linger", 0,
		"after stdin EOF and the last ACK, keep printing received messages until the peer has been quiet this long (for echoes), then close (0: close at once)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "idscp2 connect --addr HOST:PORT [flags]\n\nconnect flags:\n")
		printFlags(fs)
	}
	return fs, f
}

// printFlags is flag.PrintDefaults with the --long spelling this tool
// documents (the flag package accepts both - and --).
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(fl *flag.Flag) {
		name, help := flag.UnquoteUsage(fl)
		dash := "--"
		if len(fl.Name) == 1 {
			dash = "-"
		}
		line := "  " + dash + fl.Name
		if name != "" {
			line += " " + name
		}
		if def := fl.DefValue; def != "" && def != "false" && def != "0" && def != "0s" {
			help += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, help)
	})
}

// parseFlags parses args into fs. It returns -1 to go on, or the exit code:
// 0 for -h, 2 for a usage error (already reported by the flag package).
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "idscp2 %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage
	}
	return -1
}

// config checks the shared flags and builds the Config and the logger
// (a slog text handler on stderr). Every error is a *usageError.
func (f *commonFlags) config(stderr io.Writer) (*idscp2.Config, *slog.Logger, error) {
	if f.daps == "" {
		return nil, nil, usagef("--daps is required: a DAPS URL, or null for the insecure NullDaps driver")
	}
	if f.daps != "null" {
		u, err := url.Parse(f.daps)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, nil, usagef("--daps %s: want an http(s) URL of a DAPS, or null", f.daps)
		}
	}
	if f.addr == "" {
		return nil, nil, usagef("--addr is required")
	}
	for _, req := range []struct{ name, val string }{{"cert", f.cert}, {"key", f.key}, {"ca", f.ca}} {
		if req.val == "" {
			return nil, nil, usagef("--%s is required", req.name)
		}
	}
	supported, err := suiteList("ra-supported", f.raSupported)
	if err != nil {
		return nil, nil, err
	}
	expected, err := suiteList("ra-expected", f.raExpected)
	if err != nil {
		return nil, nil, err
	}
	reg := attestation.Default()
	if err := reg.Check(supported, expected); err != nil {
		provers, verifiers := reg.Suites()
		return nil, nil, usagef("%v (provers: %s; verifiers: %s)", err,
			strings.Join(provers, ", "), strings.Join(verifiers, ", "))
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{{"handshake-timeout", f.handshakeTimeout}, {"ack-timeout", f.ackTimeout}, {"ra-interval", f.raInterval}} {
		if d.val <= 0 {
			return nil, nil, usagef("--%s must be positive, not %s", d.name, d.val)
		}
	}
	if f.maxFrame < 64 {
		return nil, nil, usagef("--max-frame %d is too small (at least 64 bytes)", f.maxFrame)
	}

	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, nil, usagef("--cert %s / --key %s: %v", f.cert, f.key, err)
	}
	roots, err := loadRoots(f.ca)
	if err != nil {
		return nil, nil, err
	}

	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	driver, err := f.datDriver(&cert, logger)
	if err != nil {
		return nil, nil, err
	}
	cfg := &idscp2.Config{
		Certificate:      &cert,
		Roots:            roots,
		DAT:              driver,
		Attestation:      reg,
		SupportedSuites:  supported,
		ExpectedSuites:   expected,
		HandshakeTimeout: f.handshakeTimeout,
		AckTimeout:       f.ackTimeout,
		RaInterval:       f.raInterval,
		MaxFrameSize:     f.maxFrame,
		Logger:           logger,
	}
	return cfg, logger, nil
}

// datDriver is NullDaps for --daps null, else the DAPS client, signing its
// client assertions with the TLS key and binding the DAT to the TLS
// certificate.
func (f *commonFlags) datDriver(cert *tls.Certificate, logger *slog.Logger) (dat.Driver, error) {
	if f.daps == "null" {
		return dat.NewNull(logger), nil
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, usagef("--cert %s: %v", f.cert, err)
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, usagef("--key %s cannot sign DAPS client assertions", f.key)
	}
	var roots *x509.CertPool
	if f.dapsCA != "" {
		if roots, err = loadRoots(f.dapsCA); err != nil {
			return nil, err
		}
	}
	d, err := daps.New(daps.Config{URL: f.daps, Certificate: leaf, Key: signer, RootCAs: roots, Logger: logger})
	if err != nil {
		return nil, usagef("--daps %s: %v", f.daps, err)
	}
	return d, nil
}

// suiteList splits a comma-separated suite list, dropping blanks.
func suiteList(flagName, s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, usagef("--%s must name at least one suite", flagName)
	}
	return out, nil
}

// loadRoots reads every certificate in a PEM file into a pool.
func loadRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, usagef("--ca %s: no PEM certificate found", path)
	}
	return pool, nil
}
