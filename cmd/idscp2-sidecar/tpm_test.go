package main

// Tests of `idscp2-sidecar tpm` against swtpm (started per test on free
// loopback ports; skipped when swtpm is not installed) and of its usage
// errors (no TPM needed).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/swtpmtest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

// tpmTestRun runs the command line and returns stdout, stderr and the exit
// code.
func tpmTestRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// tpmTestMust runs the command line and fails the test unless it exits 0.
func tpmTestMust(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := tpmTestRun(t, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

var tpmTestField = regexp.MustCompile(`(?m)^(handle|algorithm|name) +(\S+)$`)

// tpmTestAK is what create-ak and show-ak print.
type tpmTestAK struct {
	handle, algorithm, name string
	key                     crypto.PublicKey
	pem                     []byte
}

func tpmTestParseAK(t *testing.T, out string) tpmTestAK {
	t.Helper()
	var ak tpmTestAK
	for _, m := range tpmTestField.FindAllStringSubmatch(out, -1) {
		switch m[1] {
		case "handle":
			ak.handle = m[2]
		case "algorithm":
			ak.algorithm = m[2]
		case "name":
			ak.name = m[2]
		}
	}
	start := strings.Index(out, "-----BEGIN PUBLIC KEY-----")
	if start < 0 {
		t.Fatalf("no public key PEM in:\n%s", out)
	}
	blk, _ := pem.Decode([]byte(out[start:]))
	if blk == nil {
		t.Fatalf("unparsable public key PEM in:\n%s", out)
	}
	ak.pem = pem.EncodeToMemory(blk)
	key, err := tpm.ParsePublicKeyPEM(ak.pem)
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	ak.key = key
	// The TPM name: nameAlg SHA-256 (000b) and the SHA-256 of the public area.
	if b, err := hex.DecodeString(ak.name); err != nil || len(b) != 34 || !strings.HasPrefix(ak.name, "000b") {
		t.Fatalf("name %q is not a SHA-256 TPM name", ak.name)
	}
	return ak
}

func tpmTestReadPEM(t *testing.T, path, typ string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != typ {
		t.Fatalf("%s: no PEM %s block:\n%s", path, typ, data)
	}
	return blk.Bytes
}

func tpmTestWriteCA(t *testing.T, dir, name string, ca *testpki.CA) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// TestTPMCommand provisions an AK on swtpm the way an operator would:
// create-ak → show-ak → issue-cert → golden → read-pcrs → evict-ak, and
// checks that every output parses and fits the others.
func TestTPMCommand(t *testing.T) {
	spec := tpmTestSwtpm(t)
	dir := t.TempDir()
	csrPath := filepath.Join(dir, "ak.csr")
	pubPath := filepath.Join(dir, "ak.pem")

	// create-ak: persisted RSA AK, public key on stdout and in --pub, CSR.
	out := tpmTestMust(t, "tpm", "create-ak", "--tpm", spec, "--csr", csrPath, "--pub", pubPath,
		"--subject", `CN=cmd-test AK,O=IDSCP2 Test\, Inc.,C=DE`)
	created := tpmTestParseAK(t, out)
	if created.handle != "0x81010002" || created.algorithm != "rsa2048" {
		t.Errorf("create-ak printed handle %q, algorithm %q; want 0x81010002, rsa2048", created.handle, created.algorithm)
	}
	if pubFile, err := os.ReadFile(pubPath); err != nil || !bytes.Equal(pubFile, created.pem) {
		t.Errorf("--pub file %q differs from the printed key %q (%v)", pubFile, created.pem, err)
	}
	csr, err := x509.ParseCertificateRequest(tpmTestReadPEM(t, csrPath, "CERTIFICATE REQUEST"))
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("the CSR's signature (made by the AK in the TPM) does not verify: %v", err)
	}
	if !created.key.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Error("the CSR is not for the AK's key")
	}
	if csr.Subject.CommonName != "cmd-test AK" || !slices.Equal(csr.Subject.Organization, []string{"IDSCP2 Test, Inc."}) ||
		!slices.Equal(csr.Subject.Country, []string{"DE"}) {
		t.Errorf("CSR subject %q", csr.Subject.String())
	}

	// The handle is taken now.
	_, errOut, code := tpmTestRun(t, "tpm", "create-ak", "--tpm", spec)
	if code != 1 || !strings.Contains(errOut, "already persisted at 0x81010002") || !strings.Contains(errOut, "--replace") {
		t.Errorf("create-ak on an occupied handle: exit %d, %q; want 1 and a hint at --replace", code, errOut)
	}

	// show-ak: the same key and name; a CSR with the default subject.
	csr2Path := filepath.Join(dir, "ak2.csr")
	shown := tpmTestParseAK(t, tpmTestMust(t, "tpm", "show-ak", "--tpm", spec, "--handle", "0x81010002", "--csr", csr2Path))
	if shown.name != created.name || !bytes.Equal(shown.pem, created.pem) || shown.algorithm != "rsa2048" {
		t.Errorf("show-ak printed %+v, create-ak %+v", shown, created)
	}
	csr2, err := x509.ParseCertificateRequest(tpmTestReadPEM(t, csr2Path, "CERTIFICATE REQUEST"))
	if err != nil || csr2.CheckSignature() != nil || !strings.HasSuffix(csr2.Subject.CommonName, " AK") {
		t.Errorf("show-ak CSR: %v, subject %q", err, csr2.Subject.String())
	}

	// issue-cert: the operator's CA signs the AK CSR.
	b, err := testpki.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := tpmTestWriteCA(t, dir, "ak-ca", b.CA)
	_, foreignKey := tpmTestWriteCA(t, dir, "foreign-ca", b.ForeignCA)
	certPath := filepath.Join(dir, "ak-cert.pem")
	out = tpmTestMust(t, "tpm", "issue-cert", "--csr", csrPath, "--ca-cert", caCert, "--ca-key", caKey, "--out", certPath, "--days", "30")
	if !strings.Contains(out, certPath) {
		t.Errorf("issue-cert output does not name %s:\n%s", certPath, out)
	}
	cert, err := x509.ParseCertificate(tpmTestReadPEM(t, certPath, "CERTIFICATE"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: b.CA.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the AK certificate does not chain to the CA: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: b.ForeignCA.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("the AK certificate chains to a foreign CA")
	}
	if !created.key.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Error("the AK certificate is not for the AK's key")
	}
	if cert.Subject.CommonName != "cmd-test AK" || cert.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.ContainsFunc(cert.UnknownExtKeyUsage, tpm.OIDAKCertificate.Equal) {
		t.Errorf("AK certificate: subject %q, key usage %v, unknown EKUs %v", cert.Subject.String(), cert.KeyUsage, cert.UnknownExtKeyUsage)
	}
	if d := time.Until(cert.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("--days 30 gave a certificate valid until %v", cert.NotAfter)
	}
	// The wrong CA key is refused before anything is signed.
	_, errOut, code = tpmTestRun(t, "tpm", "issue-cert", "--csr", csrPath, "--ca-cert", caCert, "--ca-key", foreignKey, "--out", filepath.Join(dir, "bad.pem"))
	if code != 1 || !strings.Contains(errOut, "is not the key of --ca-cert") {
		t.Errorf("issue-cert with a foreign CA key: exit %d, %q", code, errOut)
	}
	// A tampered CSR is refused.
	tampered := filepath.Join(dir, "tampered.csr")
	raw := tpmTestReadPEM(t, csrPath, "CERTIFICATE REQUEST")
	raw = bytes.Clone(raw)
	raw[len(raw)-1] ^= 1 // last byte of the signature
	if err := os.WriteFile(tampered, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = tpmTestRun(t, "tpm", "issue-cert", "--csr", tampered, "--ca-cert", caCert, "--ca-key", caKey, "--out", filepath.Join(dir, "bad.pem"))
	if code != 1 || !strings.Contains(errOut, "signature") {
		t.Errorf("issue-cert with a tampered CSR: exit %d, %q", code, errOut)
	}

	// Give PCR 16 a non-zero value, so golden values and reads are not all zero.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dev, err := tpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	measurement := sha256.Sum256([]byte("cmd test measurement"))
	if err := dev.ExtendPCR(ctx, 16, measurement[:]); err != nil {
		t.Fatal(err)
	}
	dev.Close() // swtpm serves one client at a time

	// golden --claim: the file and the DAT claim hold the same values.
	goldenPath := filepath.Join(dir, "golden.json")
	out = tpmTestMust(t, "tpm", "golden", "--tpm", spec, "--out", goldenPath, "--claim")
	golden, err := tpm.LoadGoldenValues(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(golden.PCRs) != tpm.NumPCRs {
		t.Fatalf("golden values hold %d PCRs, want %d", len(golden.PCRs), tpm.NumPCRs)
	}
	if bytes.Equal(golden.PCRs[16], make([]byte, 32)) {
		t.Error("PCR 16 in the golden values is still zero after the extend")
	}
	start := strings.Index(out, "{")
	if start < 0 {
		t.Fatalf("golden --claim printed no JSON:\n%s", out)
	}
	var claim map[string]any
	if err := json.Unmarshal([]byte(out[start:]), &claim); err != nil {
		t.Fatalf("golden --claim JSON: %v\n%s", err, out)
	}
	if list, ok := claim[tpm.ClaimGoldenValues].([]any); !ok || len(list) != tpm.NumPCRs {
		t.Fatalf("claim %v: want %s with %d strings", claim, tpm.ClaimGoldenValues, tpm.NumPCRs)
	}
	fromClaim, err := tpm.GoldenValuesFromClaim(claim[tpm.ClaimGoldenValues])
	if err != nil {
		t.Fatal(err)
	}
	for i := range tpm.NumPCRs {
		if !bytes.Equal(fromClaim.PCRs[i], golden.PCRs[i]) {
			t.Errorf("PCR %d: claim %x, file %x", i, fromClaim.PCRs[i], golden.PCRs[i])
		}
	}
	// golden --out - writes the file to stdout; a subset of PCRs.
	out = tpmTestMust(t, "tpm", "golden", "--tpm", spec, "--out", "-", "--pcrs", "0-7,16")
	subset, err := tpm.ParseGoldenValues([]byte(out))
	if err != nil || subset.PCRs.Mask() != 0x100ff || !bytes.Equal(subset.PCRs[16], golden.PCRs[16]) {
		t.Errorf("golden --out - --pcrs 0-7,16: %v, %v", err, subset)
	}

	// read-pcrs: the same values, one line per PCR.
	out = tpmTestMust(t, "tpm", "read-pcrs", "--tpm", spec, "--pcrs", "0-11,16")
	t.Logf("read-pcrs:\n%s", out)
	line := regexp.MustCompile(`(?m)^ +(\d+): ([0-9a-f]{64})$`)
	var seen []int
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		i, _ := strconv.Atoi(m[1])
		seen = append(seen, i)
		if m[2] != hex.EncodeToString(golden.PCRs[i]) {
			t.Errorf("read-pcrs PCR %d = %s, golden %x", i, m[2], golden.PCRs[i])
		}
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16}; !slices.Equal(seen, want) {
		t.Errorf("read-pcrs --pcrs 0-11,16 printed PCRs %v, want %v", seen, want)
	}

	// A second AK (ECC) at another handle; then evict both.
	ecc := tpmTestParseAK(t, tpmTestMust(t, "tpm", "create-ak", "--tpm", spec, "--algorithm", "ecc", "--handle", "0x81010003"))
	if ecc.algorithm != "eccp256" || ecc.handle != "0x81010003" || ecc.name == created.name {
		t.Errorf("ECC AK: %+v", ecc)
	}
	// --replace gives the same primary key again.
	again := tpmTestParseAK(t, tpmTestMust(t, "tpm", "create-ak", "--tpm", spec, "--replace"))
	if again.name != created.name {
		t.Errorf("create-ak --replace: name %s, before %s (a primary AK is deterministic)", again.name, created.name)
	}
	for _, h := range []string{"0x81010002", "0x81010003"} {
		if out := tpmTestMust(t, "tpm", "evict-ak", "--tpm", spec, "--handle", h); !strings.Contains(out, h) {
			t.Errorf("evict-ak output %q does not name %s", out, h)
		}
	}
	_, errOut, code = tpmTestRun(t, "tpm", "show-ak", "--tpm", spec)
	if code != 1 || !strings.Contains(errOut, "nothing is persisted") || !strings.Contains(errOut, "create-ak") {
		t.Errorf("show-ak after evict-ak: exit %d, %q", code, errOut)
	}
	_, errOut, code = tpmTestRun(t, "tpm", "evict-ak", "--tpm", spec)
	if code != 1 || !strings.Contains(errOut, "nothing is persisted at 0x81010002") {
		t.Errorf("evict-ak of an empty handle: exit %d, %q", code, errOut)
	}
}

// TestTPMCommandUsage checks help, usage errors (exit 2) and the errors
// that need no TPM (exit 1).
func TestTPMCommandUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout for code 0, else in stderr
	}{
		{[]string{"help"}, 0, "tpm SUBCOMMAND"},
		{[]string{"tpm"}, 2, "create-ak"},
		{[]string{"tpm", "help"}, 0, "issue-cert --csr FILE --ca-cert FILE --ca-key FILE --out FILE"},
		{[]string{"tpm", "help", "golden"}, 0, "pcrGoldenValues"},
		{[]string{"tpm", "help", "frob"}, 2, `unknown subcommand "frob"`},
		{[]string{"tpm", "frob"}, 2, `unknown subcommand "frob"`},
		{[]string{"tpm", "create-ak", "-h"}, 0, ""},
		{[]string{"tpm", "create-ak", "--algorithm", "dsa"}, 2, `--algorithm "dsa"`},
		{[]string{"tpm", "create-ak", "--handle", "0x80000001"}, 2, "not a persistent handle"},
		{[]string{"tpm", "create-ak", "--handle", "0x81800000"}, 2, "owner range"},
		{[]string{"tpm", "create-ak", "--subject", "CN=x"}, 2, "--subject is only used with --csr"},
		{[]string{"tpm", "create-ak", "--csr", out, "--subject", "XX=y"}, 2, `attribute "XX" not supported`},
		{[]string{"tpm", "show-ak", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"tpm", "show-ak", "--tpm", filepath.Join(dir, "no-tpm")}, 1, "no TPM: " + filepath.Join(dir, "no-tpm") + " does not exist"},
		{[]string{"tpm", "read-pcrs", "--tpm", "bogus"}, 1, `unknown TPM "bogus"`},
		{[]string{"tpm", "read-pcrs", "--tpm", "swtpm:127.0.0.1:1"}, 1, "is swtpm running"},
		{[]string{"tpm", "read-pcrs", "--pcrs", "0-24"}, 2, "--pcrs"},
		{[]string{"tpm", "golden"}, 2, "--out is required"},
		{[]string{"tpm", "golden", "--out", out, "--pcrs", "basic", "--claim"}, 2, "--claim needs all 24 PCRs"},
		{[]string{"tpm", "golden", "--out", "-", "--claim"}, 2, "--claim prints to stdout"},
		{[]string{"tpm", "issue-cert"}, 2, "--csr, --ca-cert, --ca-key, --out required"},
		{[]string{"tpm", "issue-cert", "--csr", out, "--ca-cert", out, "--ca-key", out, "--out", out, "--days", "0"}, 2, "--days must be between 1"},
		{[]string{"tpm", "issue-cert", "--csr", filepath.Join(dir, "none.csr"), "--ca-cert", out, "--ca-key", out, "--out", out}, 1, "none.csr"},
		{[]string{"tpm", "evict-ak", "--handle", "xyz"}, 2, "not a handle"},
	} {
		stdout, stderr, code := tpmTestRun(t, tc.args...)
		got := stderr
		if tc.code == 0 {
			got = stdout
		}
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, tc.code, tc.want)
		}
	}
}

// tpmTestSwtpm starts swtpm for the test and returns the --tpm spec of its
// data port.
func tpmTestSwtpm(t *testing.T) string {
	addr, _ := swtpmtest.Start(t)
	return "swtpm:" + addr
}
