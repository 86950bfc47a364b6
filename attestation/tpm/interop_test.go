package tpm_test

// Interoperability with tpm2-tools 5.x (Debian package tpm2-tools), against
// the same swtpm in both directions.

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package tpm2-tools; .ci/run installs it): tpm2-tools interop skipped", tool)
		}
	}
}

// tools runs tpm2-tools commands against one swtpm (TCTI swtpm:, which
// speaks raw commands on the data port; mssim: would need the MS platform
// protocol on the control port).
type tools struct {
	t    *testing.T
	dir  string
	tcti string
}

func (tl *tools) run(args ...string) string {
	tl.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = tl.dir
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+tl.tcti)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tl.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (tl *tools) file(name string) []byte {
	tl.t.Helper()
	b, err := os.ReadFile(filepath.Join(tl.dir, name))
	if err != nil {
		tl.t.Fatal(err)
	}
	return b
}

func (tl *tools) write(name string, b []byte) {
	tl.t.Helper()
	if err := os.WriteFile(filepath.Join(tl.dir, name), b, 0o644); err != nil {
		tl.t.Fatal(err)
	}
}

// pcrList is the tpm2-tools PCR list for m, e.g. "sha256:0,1,2".
func pcrList(m tpm.PCRMask) string {
	var s []string
	for _, i := range m.Indices() {
		s = append(s, strconv.Itoa(i))
	}
	return "sha256:" + strings.Join(s, ",")
}

// TestTPM2ToolsInterop: (1) a quote made by our prover verifies with
// tpm2_checkquote (and a wrong nonce does not); (2) a quote made by
// tpm2_quote with an AK from tpm2_createak, on the same swtpm, verifies with
// our verifier, through an AK certificate and through a pinned key.
func TestTPM2ToolsInterop(t *testing.T) {
	needTools(t, "tpm2_checkquote", "tpm2_quote", "tpm2_createak", "tpm2_createek", "tpm2_flushcontext")
	inst := startSwtpm(t)
	tl := &tools{t: t, dir: t.TempDir(), tcti: "swtpm:host=127.0.0.1,port=" + inst.addr[strings.LastIndexByte(inst.addr, ':')+1:]}
	ctx := testCtx(t)
	serverCert := testPKI.Server.Cert
	mask := tpm.MaskBasic
	// tpm2_checkquote 5.4 fails ("Failed to hash PCR values related to
	// quote!") on quotes over 8 or more PCRs, its own included; it is
	// given a quote over PCRs 0-3,7,16 (ADVANCED). Our verifier takes
	// tpm2_quote's quote over all of BASIC.
	checkMask := tpm.PCRMask(0x1008f)

	// (1) Go → tpm2-tools.
	tp, err := tpm.OpenSwtpm(inst.addr)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := tp.ReadPCRs(ctx, tpm.MaskAll)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []tpm.KeyAlgorithm{tpm.RSA2048, tpm.ECCP256} {
		ak, err := tpm.CreateAK(ctx, tp, tpm.AKOptions{Algorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		p, err := tpm.NewProver(tpm.ProverConfig{AK: ak, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		v, err := tpm.NewVerifier(tpm.VerifierConfig{PinnedKeys: []crypto.PublicKey{ak.Public()}, GoldenFromDAT: true, Logger: quietLogger(),
			AttestationType: tpmpb.IdsAttestationType_ADVANCED, PCRMask: checkMask})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := v.Challenge()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p.Respond(ctx, ch, serverCert)
		if err != nil {
			t.Fatal(err)
		}
		pemKey, err := ak.PublicKeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		if err := ak.Close(); err != nil {
			t.Fatal(err)
		}
		var values []byte
		for _, pcr := range resp.PcrValues {
			values = append(values, pcr.Value...)
		}
		tl.write("ak.pem", pemKey)
		tl.write("quote.msg", resp.Quoted)
		tl.write("quote.sig", resp.Signature)
		tl.write("pcrs.bin", values)
		qual := hex.EncodeToString(tpm.Binding(ch.Nonce, serverCert))
		tl.run("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
			"-f", "pcrs.bin", "-F", "values", "-l", pcrList(checkMask), "-g", "sha256", "-q", qual)
		cmd := exec.Command("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
			"-f", "pcrs.bin", "-F", "values", "-l", pcrList(checkMask), "-g", "sha256", "-q", hex.EncodeToString(tpm.Binding([]byte("another nonce"), serverCert)))
		cmd.Dir = tl.dir
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("%v: tpm2_checkquote accepted a quote over another nonce:\n%s", alg, out)
		}
	}
	// swtpm serves one client: hand it over to tpm2-tools.
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	// (2) tpm2-tools → Go.
	for _, tc := range []struct{ name, keyAlg, sigAlg string }{
		{"ecc", "ecc", "ecdsa"},
		{"rsa", "rsa", "rsassa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl.t = t
			tl.run("tpm2_createek", "-c", "ek.ctx", "-G", tc.keyAlg)
			tl.run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", tc.keyAlg, "-g", "sha256", "-s", tc.sigAlg, "-u", "ak.pem", "-f", "pem")
			tl.run("tpm2_flushcontext", "-t")
			v, err := tpm.NewVerifier(tpm.VerifierConfig{Roots: testPKI.CA.Pool(), Golden: &tpm.GoldenValues{PCRs: golden}, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			ch, err := v.Challenge()
			if err != nil {
				t.Fatal(err)
			}
			qual := hex.EncodeToString(tpm.Binding(ch.Nonce, serverCert))
			tl.run("tpm2_quote", "-c", "ak.ctx", "-l", pcrList(mask), "-q", qual,
				"-m", "quote.msg", "-s", "quote.sig", "-o", "pcrs.bin", "-F", "values", "-g", "sha256")
			tl.run("tpm2_flushcontext", "-t")

			blk, _ := pem.Decode(tl.file("ak.pem"))
			if blk == nil {
				t.Fatal("ak.pem is not PEM")
			}
			akPub, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certDER, err := tpm.IssueAKCertificate(testPKI.CA.Cert, testPKI.CA.Key, akPub, pkix.Name{CommonName: "tpm2-tools AK"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			values := tl.file("pcrs.bin")
			if len(values) != 32*len(mask.Indices()) {
				t.Fatalf("pcrs.bin has %d bytes", len(values))
			}
			var pcrs []*tpmpb.Pcr
			for k, i := range mask.Indices() {
				n := int32(i)
				pcrs = append(pcrs, &tpmpb.Pcr{Number: &n, Value: values[32*k : 32*k+32]})
			}
			atype, hashAlg := tpmpb.IdsAttestationType_BASIC, "SHA256"
			resp := &tpmpb.TpmResponse{Atype: &atype, HashAlg: &hashAlg, Quoted: tl.file("quote.msg"),
				Signature: tl.file("quote.sig"), PcrValues: pcrs, Certificate: certDER}
			if err := v.CheckResponse(ch, resp, serverCert, nil); err != nil {
				t.Fatalf("certificate chain: %v", err)
			}
			// The same quote with a pinned key and a bare public key.
			pinned, err := tpm.NewVerifier(tpm.VerifierConfig{PinnedKeys: []crypto.PublicKey{akPub}, Golden: &tpm.GoldenValues{PCRs: golden}, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			resp.Certificate = blk.Bytes
			if err := pinned.CheckResponse(ch, resp, serverCert, nil); err != nil {
				t.Fatalf("pinned key: %v", err)
			}
			// And it is bound: another verifier certificate is refused.
			if err := pinned.CheckResponse(ch, resp, testPKI.Client.Cert, nil); tpm.ReasonOf(err) != tpm.ReasonNonce {
				t.Fatalf("quote for another certificate: %v, want reason %s", err, tpm.ReasonNonce)
			}
			if !bytes.Equal(resp.Quoted[:4], []byte{0xff, 'T', 'C', 'G'}) {
				t.Fatalf("tpm2_quote -m is not a bare TPMS_ATTEST")
			}
		})
	}
}
