package main

// idscp2-sidecar tpm: provisioning and inspection of the TPM attestation
// identity (attestation/tpm's provisioning functions behind a command line).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
)

const tpmUsage = `idscp2-sidecar tpm provisions and inspects the identity of the "TPM"
attestation suite: the attestation key (AK) in the TPM, its certificate, the
PCR values and the golden-values file verifiers compare them with.

Usage:
  idscp2-sidecar tpm create-ak  [--tpm SPEC] [--algorithm rsa|ecc] [--handle H] [--replace] [--csr FILE [--subject DN]] [--pub FILE]
  idscp2-sidecar tpm show-ak    [--tpm SPEC] [--handle H] [--csr FILE [--subject DN]] [--pub FILE]
  idscp2-sidecar tpm issue-cert --csr FILE --ca-cert FILE --ca-key FILE --out FILE [--days N]
  idscp2-sidecar tpm read-pcrs  [--tpm SPEC] [--pcrs LIST]
  idscp2-sidecar tpm golden     [--tpm SPEC] --out FILE [--pcrs LIST] [--claim]
  idscp2-sidecar tpm evict-ak   [--tpm SPEC] [--handle H]
  idscp2-sidecar tpm help [SUBCOMMAND]

--tpm SPEC selects the TPM:
  (not given)       /dev/tpmrm0, the kernel's resource manager
  /dev/tpm0         a TPM device (any absolute path; device:PATH is the same)
  swtpm:HOST:PORT   swtpm's TCP data port (swtpm socket --tpm2 --server type=tcp,port=PORT ...)
swtpm serves one client at a time: stop a sidecar that uses it first.

Provisioning a prover (attestation.tpm in the sidecar's configuration):
  idscp2-sidecar tpm create-ak --csr ak.csr --subject "CN=connector-a AK"     akHandle (default 0x81010002)
  idscp2-sidecar tpm issue-cert --csr ak.csr --ca-cert ak-ca.pem \
      --ca-key ak-ca-key.pem --out ak-cert.pem                              akCert (run by the AK CA)
  idscp2-sidecar tpm golden --out golden.json [--claim]                     the verifiers' goldenValues
                                                                            (or the DAT claim pcrGoldenValues)
Verifiers trust ak-ca.pem (attestation.tpm.roots) or pin the AK's public key
(create-ak --pub ak.pem; attestation.tpm.pinnedKeys).

Run idscp2-sidecar tpm SUBCOMMAND -h for the flags of each.
Exit codes: 0 success, 1 failure (TPM, files), 2 usage error.
`

const createAKHelp = `idscp2-sidecar tpm create-ak [flags]

Creates the attestation key (AK), a restricted signing key of the endorsement
hierarchy, persists it at --handle and prints its handle, algorithm, TPM name
and public key (PEM). With --csr it also writes a PKCS #10 certificate request
for the AK, signed by the AK itself, for the CA that issues AK certificates.

The AK is a primary key: the same TPM and algorithm always give the same key.
An occupied handle is an error unless --replace is given, which evicts what is
there first. Persisting needs the owner hierarchy's authorisation to be empty
(the default of a TPM that has not been taken ownership of).
`

const showAKHelp = `idscp2-sidecar tpm show-ak [flags]

Prints the handle, algorithm, TPM name and public key (PEM) of the AK
persisted at --handle; with --csr it writes a new certificate request for it.
`

const issueCertHelp = `idscp2-sidecar tpm issue-cert --csr FILE --ca-cert FILE --ca-key FILE --out FILE [flags]

Issues an AK certificate for a certificate request (from create-ak or show-ak)
with a CA run by the operator: it checks the request's signature, then signs
a certificate for the requested key and subject with key usage
digitalSignature and the TCG AK certificate extended key usage (2.23.133.8.3),
and writes it as PEM. No TPM is used.

The request's signature proves possession of the key, not that it lives in a
TPM: issue certificates only for requests from machines provisioned in a
trusted way.
`

const readPCRsHelp = `idscp2-sidecar tpm read-pcrs [flags]

Prints the SHA-256 bank's values of the PCRs in --pcrs, one per line as
"INDEX: HEX".
`

const goldenHelp = `idscp2-sidecar tpm golden --out FILE [flags]

Reads the current values of the PCRs in --pcrs (SHA-256 bank) and writes them
as a golden-values file (JSON), the attestation.tpm.goldenValues of verifiers.
Run it on a system in a known-good state. --out - writes the file to stdout.

With --claim it also prints the DAT claim pcrGoldenValues for these values
(JSON: 24 base64 strings, element i the value of PCR i), for verifiers with
attestation.tpm.goldenValuesFromDat; put it into the claims of the connector
at the DAPS. --claim needs all 24 PCRs.
`

const evictAKHelp = `idscp2-sidecar tpm evict-ak [flags]

Removes the object persisted at --handle from the TPM. A sidecar using it
cannot prove itself any more until an AK is created again.
`

// tpmSubcommands maps subcommand names to their run functions.
var tpmSubcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"create-ak":  runTPMCreateAK,
	"show-ak":    runTPMShowAK,
	"issue-cert": runTPMIssueCert,
	"read-pcrs":  runTPMReadPCRs,
	"golden":     runTPMGolden,
	"evict-ak":   runTPMEvictAK,
}

func runTPM(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tpmUsage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			sub, ok := tpmSubcommands[args[1]]
			if !ok {
				fmt.Fprintf(stderr, "tpm: unknown subcommand %q\n\n%s", args[1], tpmUsage)
				return 2
			}
			return sub(ctx, []string{"-h"}, stdout, stdout)
		}
		fmt.Fprint(stdout, tpmUsage)
		return 0
	}
	sub, ok := tpmSubcommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tpm: unknown subcommand %q\n\n%s", args[0], tpmUsage)
		return 2
	}
	return sub(ctx, args[1:], stdout, stderr)
}

// ---- flags ----

func tpmFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tpm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, help)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseTPMFlags parses args; when it returns false the command ends with
// code (0 after -h, 2 for a usage error).
func parseTPMFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see -h)\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

func tpmSpecFlag(fs *flag.FlagSet) *string {
	return fs.String("tpm", "", "`SPEC` of the TPM: a device path (default "+tpm.DefaultDevice+"), device:PATH or swtpm:HOST:PORT")
}

// handleFlag is a persistent handle, given in hex (0x81010002) or decimal.
type handleFlag uint32

func (h *handleFlag) String() string { return fmt.Sprintf("%#x", uint32(*h)) }

func (h *handleFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return fmt.Errorf("not a handle (e.g. 0x81010002)")
	}
	if v < 0x81000000 || v > 0x81ffffff {
		return fmt.Errorf("%#x is not a persistent handle (0x81000000-0x81ffffff)", v)
	}
	*h = handleFlag(v)
	return nil
}

func tpmHandleFlag(fs *flag.FlagSet) *handleFlag {
	h := handleFlag(tpm.DefaultAKHandle)
	fs.Var(&h, "handle", "persistent `HANDLE` of the AK (hex or decimal)")
	return &h
}

// tpmFail reports a runtime failure of a subcommand (exit code 1).
func tpmFail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "tpm %s: %v\n", name, err)
	return 1
}

// tpmUsageError reports a usage error (exit code 2).
func tpmUsageError(stderr io.Writer, name, format string, args ...any) int {
	fmt.Fprintf(stderr, "tpm %s: %s (see -h)\n", name, fmt.Sprintf(format, args...))
	return 2
}

// ---- TPM access ----

// openTPM opens the TPM named by spec (tpm.Open's forms) and explains the
// usual reasons it cannot be opened.
func openTPM(spec string) (*tpm.TPM, error) {
	t, err := tpm.Open(spec)
	if err == nil {
		return t, nil
	}
	dev := strings.TrimPrefix(spec, "device:")
	if dev == "" {
		dev = tpm.DefaultDevice
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no TPM: %s does not exist (give the TPM with --tpm DEVICE, or --tpm swtpm:HOST:PORT for a simulator)", dev)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("no access to the TPM %s: %v (run as a member of the device's group, usually tss, or as root)", dev, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%v (is swtpm running with --server type=tcp on that port?)", err)
	}
	return nil, err
}

func withTPM(spec string, stderr io.Writer, name string, fn func(t *tpm.TPM) int) int {
	t, err := openTPM(spec)
	if err != nil {
		return tpmFail(stderr, name, err)
	}
	defer t.Close()
	return fn(t)
}

// ---- create-ak, show-ak ----

func runTPMCreateAK(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "create-ak"
	fs := tpmFlagSet(name, createAKHelp, stderr)
	spec := tpmSpecFlag(fs)
	handle := tpmHandleFlag(fs)
	algorithm := fs.String("algorithm", "rsa", "`ALGORITHM` of the key: rsa (RSA-2048, RSASSA with SHA-256; the reference verifier accepts only this) or ecc (ECDSA P-256 with SHA-256)")
	replace := fs.Bool("replace", false, "evict an object already persisted at --handle")
	csr := fs.String("csr", "", "write a certificate request (PEM) for the AK to `FILE` (- for stdout)")
	subject := fs.String("subject", "", "`DN` (subject) of the certificate request, e.g. \"CN=connector-a AK,O=Example\" (default CN=<host name> AK)")
	pub := fs.String("pub", "", "also write the AK's public key (PEM) to `FILE`, e.g. for verifiers' pinnedKeys")
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	var alg tpm.KeyAlgorithm
	switch strings.ToLower(*algorithm) {
	case "rsa", "rsa2048":
		alg = tpm.RSA2048
	case "ecc", "ecdsa", "eccp256", "p256":
		alg = tpm.ECCP256
	default:
		return tpmUsageError(stderr, name, "--algorithm %q: use rsa or ecc", *algorithm)
	}
	if uint32(*handle) > 0x817fffff {
		return tpmUsageError(stderr, name, "--handle %#x: an AK is persisted in the owner range 0x81000000-0x817fffff", uint32(*handle))
	}
	dn, code, ok := csrSubject(stderr, name, *csr, *subject)
	if !ok {
		return code
	}
	return withTPM(*spec, stderr, name, func(t *tpm.TPM) int {
		h := uint32(*handle)
		if !*replace {
			if old, err := tpm.LoadAK(ctx, t, h); err == nil {
				old.Close()
				return tpmFail(stderr, name, fmt.Errorf("an AK is already persisted at %#x (show-ak prints it; --replace evicts it and creates a new one)", h))
			}
		}
		ak, err := tpm.CreateAK(ctx, t, tpm.AKOptions{Algorithm: alg, Persist: true, Handle: h, Replace: *replace})
		if err != nil {
			if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
				err = fmt.Errorf("%w (the endorsement and owner hierarchies must have empty authorisation values)", err)
			}
			return tpmFail(stderr, name, err)
		}
		defer ak.Close()
		fmt.Fprintf(stdout, "created the attestation key and persisted it at %#x\n", ak.Handle())
		return akOutputs(ctx, ak, stdout, stderr, name, *pub, *csr, dn)
	})
}

func runTPMShowAK(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "show-ak"
	fs := tpmFlagSet(name, showAKHelp, stderr)
	spec := tpmSpecFlag(fs)
	handle := tpmHandleFlag(fs)
	csr := fs.String("csr", "", "write a certificate request (PEM) for the AK to `FILE` (- for stdout)")
	subject := fs.String("subject", "", "`DN` (subject) of the certificate request (default CN=<host name> AK)")
	pub := fs.String("pub", "", "also write the AK's public key (PEM) to `FILE`")
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	dn, code, ok := csrSubject(stderr, name, *csr, *subject)
	if !ok {
		return code
	}
	return withTPM(*spec, stderr, name, func(t *tpm.TPM) int {
		ak, err := tpm.LoadAK(ctx, t, uint32(*handle))
		if errors.Is(err, tpm2.TPMRCHandle) {
			err = fmt.Errorf("no AK at %#x: nothing is persisted there (create one with `idscp2-sidecar tpm create-ak`)", uint32(*handle))
		}
		if err != nil {
			return tpmFail(stderr, name, err)
		}
		defer ak.Close()
		return akOutputs(ctx, ak, stdout, stderr, name, *pub, *csr, dn)
	})
}

// csrSubject checks --csr and --subject and returns the request's subject.
func csrSubject(stderr io.Writer, name, csr, subject string) (pkix.Name, int, bool) {
	if csr == "" {
		if subject != "" {
			return pkix.Name{}, tpmUsageError(stderr, name, "--subject is only used with --csr"), false
		}
		return pkix.Name{}, 0, true
	}
	if subject == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "idscp2-sidecar"
		}
		return pkix.Name{CommonName: host + " AK"}, 0, true
	}
	dn, err := parseSubject(subject)
	if err != nil {
		return pkix.Name{}, tpmUsageError(stderr, name, "--subject: %v", err), false
	}
	return dn, 0, true
}

// akOutputs prints the AK and writes the files asked for.
func akOutputs(ctx context.Context, ak *tpm.AK, stdout, stderr io.Writer, name, pubPath, csrPath string, dn pkix.Name) int {
	pubPEM, err := ak.PublicKeyPEM()
	if err != nil {
		return tpmFail(stderr, name, err)
	}
	fmt.Fprintf(stdout, "handle     %#x\n", ak.Handle())
	fmt.Fprintf(stdout, "algorithm  %s\n", keyAlgorithm(ak.Public()))
	fmt.Fprintf(stdout, "name       %x\n", ak.Name())
	fmt.Fprintf(stdout, "public key\n%s", pubPEM)
	if pubPath != "" {
		if err := writeOutput(stdout, pubPath, pubPEM, 0o644); err != nil {
			return tpmFail(stderr, name, err)
		}
		if pubPath != "-" {
			fmt.Fprintf(stdout, "public key written to %s\n", pubPath)
		}
	}
	if csrPath != "" {
		der, err := tpm.CertificateRequest(ctx, ak, dn)
		if err != nil {
			return tpmFail(stderr, name, err)
		}
		data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		if err := writeOutput(stdout, csrPath, data, 0o644); err != nil {
			return tpmFail(stderr, name, err)
		}
		if csrPath != "-" {
			fmt.Fprintf(stdout, "certificate request for %q written to %s\n", dn.String(), csrPath)
		}
	}
	return 0
}

func keyAlgorithm(k crypto.PublicKey) string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ecc" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	}
	return fmt.Sprintf("%T", k)
}

// parseSubject parses a distinguished name written as comma-separated
// attributes, most significant last or first as the user likes:
// "CN=connector-a AK,O=Example,C=DE". A comma inside a value is written \,.
func parseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ',':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	parts = append(parts, cur.String())
	for _, part := range parts {
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.ToUpper(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return n, fmt.Errorf("%q is not ATTRIBUTE=VALUE", strings.TrimSpace(part))
		}
		switch k {
		case "CN":
			if n.CommonName != "" {
				return n, errors.New("CN given twice")
			}
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "SERIALNUMBER":
			n.SerialNumber = v
		default:
			return n, fmt.Errorf("attribute %q not supported (CN, O, OU, C, L, ST, SERIALNUMBER)", k)
		}
	}
	return n, nil
}

// writeOutput writes data to path, or to stdout if path is "-".
func writeOutput(stdout io.Writer, path string, data []byte, perm os.FileMode) error {
	if path == "-" {
		_, err := stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, perm)
}

// ---- issue-cert ----

func runTPMIssueCert(_ context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "issue-cert"
	fs := tpmFlagSet(name, issueCertHelp, stderr)
	csrPath := fs.String("csr", "", "the AK's certificate request `FILE` (PEM or DER) (required)")
	caCertPath := fs.String("ca-cert", "", "the CA's certificate `FILE` (PEM) (required)")
	caKeyPath := fs.String("ca-key", "", "the CA's private key `FILE` (PEM: PKCS #8, EC or RSA; unencrypted) (required)")
	out := fs.String("out", "", "write the AK certificate (PEM) to `FILE` (- for stdout) (required)")
	days := fs.Int("days", 365, "validity of the certificate in days (`N`)")
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	var missing []string
	for _, f := range []struct{ flag, val string }{{"--csr", *csrPath}, {"--ca-cert", *caCertPath}, {"--ca-key", *caKeyPath}, {"--out", *out}} {
		if f.val == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return tpmUsageError(stderr, name, "%s required", strings.Join(missing, ", "))
	}
	if *days <= 0 || *days > 100*366 {
		return tpmUsageError(stderr, name, "--days must be between 1 and %d", 100*366)
	}
	csrDER, err := readPEMOrDER(*csrPath, "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
	if err != nil {
		return tpmFail(stderr, name, fmt.Errorf("--csr: %w", err))
	}
	key, subject, err := tpm.ParseCertificateRequest(csrDER)
	if err != nil {
		return tpmFail(stderr, name, fmt.Errorf("--csr %s: %w", *csrPath, err))
	}
	caDER, err := readPEMOrDER(*caCertPath, "CERTIFICATE")
	if err != nil {
		return tpmFail(stderr, name, fmt.Errorf("--ca-cert: %w", err))
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tpmFail(stderr, name, fmt.Errorf("--ca-cert %s: %w", *caCertPath, err))
	}
	if !caCert.IsCA {
		return tpmFail(stderr, name, fmt.Errorf("--ca-cert %s: %q is not a CA certificate (no basicConstraints CA:TRUE)", *caCertPath, caCert.Subject.String()))
	}
	caKey, err := readPrivateKey(*caKeyPath)
	if err != nil {
		return tpmFail(stderr, name, fmt.Errorf("--ca-key: %w", err))
	}
	if k, ok := caKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(caCert.PublicKey) {
		return tpmFail(stderr, name, fmt.Errorf("--ca-key %s is not the key of --ca-cert %s", *caKeyPath, *caCertPath))
	}
	der, err := tpm.IssueAKCertificate(caCert, caKey, key, subject, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return tpmFail(stderr, name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tpmFail(stderr, name, err)
	}
	if err := writeOutput(stdout, *out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tpmFail(stderr, name, err)
	}
	if *out != "-" {
		fmt.Fprintf(stdout, "issued an AK certificate for %q (%s key) by %q, serial %x, valid until %s\nwritten to %s\n",
			cert.Subject.String(), keyAlgorithm(key), caCert.Subject.String(), cert.SerialNumber,
			cert.NotAfter.UTC().Format(time.RFC3339), *out)
	}
	return 0
}

// readPEMOrDER returns the DER of the first PEM block of one of the types
// in path, or the file itself if it is not PEM.
func readPEMOrDER(path string, types ...string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rest := data
	sawPEM := false
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		sawPEM = true
		for _, t := range types {
			if blk.Type == t {
				return blk.Bytes, nil
			}
		}
	}
	if sawPEM {
		return nil, fmt.Errorf("%s: no PEM block of type %s", path, types[0])
	}
	return data, nil
}

// readPrivateKey reads an unencrypted PEM private key.
func readPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM private key", path)
		}
		var key any
		switch blk.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			if blk.Headers["Proc-Type"] != "" {
				return nil, fmt.Errorf("%s: encrypted keys are not supported", path)
			}
			key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%s: encrypted keys are not supported", path)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: a %T cannot sign", path, key)
		}
		return s, nil
	}
}

// ---- read-pcrs, golden ----

func runTPMReadPCRs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "read-pcrs"
	fs := tpmFlagSet(name, readPCRsHelp, stderr)
	spec := tpmSpecFlag(fs)
	pcrs := fs.String("pcrs", "0-23", "PCRs to read: a `LIST` such as \"0-7,10\", basic (0-11) or all (0-23)")
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	mask, err := tpm.ParseMask(*pcrs)
	if err != nil {
		return tpmUsageError(stderr, name, "--pcrs: %v", err)
	}
	return withTPM(*spec, stderr, name, func(t *tpm.TPM) int {
		vals, err := t.ReadPCRs(ctx, mask)
		if err != nil {
			return tpmFail(stderr, name, err)
		}
		fmt.Fprintln(stdout, "sha256:")
		for _, i := range mask.Indices() {
			fmt.Fprintf(stdout, "  %2d: %x\n", i, vals[i])
		}
		return 0
	})
}

func runTPMGolden(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "golden"
	fs := tpmFlagSet(name, goldenHelp, stderr)
	spec := tpmSpecFlag(fs)
	out := fs.String("out", "", "write the golden-values file to `FILE` (- for stdout) (required)")
	pcrs := fs.String("pcrs", "0-23", "PCRs to record: a `LIST` such as \"0-7,10\", basic (0-11) or all (0-23)")
	claim := fs.Bool("claim", false, "also print the DAT claim pcrGoldenValues (JSON) for these values")
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	if *out == "" {
		return tpmUsageError(stderr, name, "--out is required")
	}
	mask, err := tpm.ParseMask(*pcrs)
	if err != nil {
		return tpmUsageError(stderr, name, "--pcrs: %v", err)
	}
	if *claim && mask != tpm.MaskAll {
		return tpmUsageError(stderr, name, "--claim needs all 24 PCRs (--pcrs 0-23), not %s", mask)
	}
	if *claim && *out == "-" {
		return tpmUsageError(stderr, name, "--claim prints to stdout: give --out a file")
	}
	return withTPM(*spec, stderr, name, func(t *tpm.TPM) int {
		vals, err := t.ReadPCRs(ctx, mask)
		if err != nil {
			return tpmFail(stderr, name, err)
		}
		if *out == "-" {
			data, err := tpm.MarshalGoldenValues(vals)
			if err == nil {
				_, err = stdout.Write(data)
			}
			if err != nil {
				return tpmFail(stderr, name, err)
			}
			return 0
		}
		if err := tpm.WriteGoldenValues(*out, vals); err != nil {
			return tpmFail(stderr, name, err)
		}
		fmt.Fprintf(stdout, "golden values of PCRs %s (%s) written to %s\n", mask, tpm.PCRBank, *out)
		if *claim {
			c, err := tpm.GoldenValuesClaim(vals)
			if err != nil {
				return tpmFail(stderr, name, err)
			}
			data, err := json.MarshalIndent(map[string][]string{tpm.ClaimGoldenValues: c}, "", "  ")
			if err != nil {
				return tpmFail(stderr, name, err)
			}
			fmt.Fprintf(stdout, "%s\n", data)
		}
		return 0
	})
}

// ---- evict-ak ----

func runTPMEvictAK(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "evict-ak"
	fs := tpmFlagSet(name, evictAKHelp, stderr)
	spec := tpmSpecFlag(fs)
	handle := tpmHandleFlag(fs)
	if code, ok := parseTPMFlags(fs, args, stderr); !ok {
		return code
	}
	return withTPM(*spec, stderr, name, func(t *tpm.TPM) int {
		if err := tpm.EvictAK(ctx, t, uint32(*handle), nil); err != nil {
			if errors.Is(err, tpm2.TPMRCHandle) {
				err = fmt.Errorf("nothing is persisted at %#x", uint32(*handle))
			}
			return tpmFail(stderr, name, err)
		}
		fmt.Fprintf(stdout, "evicted the object persisted at %#x\n", uint32(*handle))
		return 0
	})
}
