package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm"
	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

func TestMasks(t *testing.T) {
	for _, tc := range []struct {
		atype tpmpb.IdsAttestationType
		mask  uint32
		want  tpm.PCRMask
		bad   bool
	}{
		{tpmpb.IdsAttestationType_BASIC, 0, 0xfff, false},
		{tpmpb.IdsAttestationType_BASIC, 0xffffffff, 0xfff, false}, // mask ignored
		{tpmpb.IdsAttestationType_ALL, 0, 0xffffff, false},
		{tpmpb.IdsAttestationType_ADVANCED, 0x10081, 0x10081, false},
		{tpmpb.IdsAttestationType_ADVANCED, 0, 0, true},
		{tpmpb.IdsAttestationType_ADVANCED, 1 << 24, 0, true},
		{tpmpb.IdsAttestationType(7), 1, 0, true},
	} {
		got, err := tpm.MaskFor(tc.atype, tc.mask)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("MaskFor(%v, %#x) = %#x, %v", tc.atype, tc.mask, got, err)
		}
	}
	m, err := tpm.ParseMask("0-3, 7,16")
	if err != nil || m != 0x1008f || m.String() != "0-3,7,16" {
		t.Errorf("ParseMask: %#x %q %v", m, m, err)
	}
	for _, bad := range []string{"", "24", "3-1", "x", "0-99"} {
		if _, err := tpm.ParseMask(bad); err == nil {
			t.Errorf("ParseMask(%q) accepted", bad)
		}
	}
	if m, _ := tpm.ParseMask("basic"); m != tpm.MaskBasic {
		t.Errorf("basic: %v", m)
	}
	if m, err := tpm.MaskOf(0, 23); err != nil || m != 0x800001 {
		t.Errorf("MaskOf: %#x %v", m, err)
	}
	if _, err := tpm.MaskOf(24); err == nil {
		t.Error("MaskOf(24) accepted")
	}
}

func TestGoldenValuesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "golden.json")
	basic, _ := softPCRs.Select(tpm.MaskBasic)
	if err := tpm.WriteGoldenValues(path, basic); err != nil {
		t.Fatal(err)
	}
	g, err := tpm.LoadGoldenValues(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.PCRs) != 12 || !bytes.Equal(g.PCRs[11], softPCRs[11]) {
		t.Fatalf("round trip: %v", g.PCRs)
	}
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte(`"hashAlg": "SHA256"`)) {
		t.Errorf("file:\n%s", data)
	}
	for _, bad := range []string{
		`{"hashAlg":"SHA1","pcrs":{"0":"` + strings.Repeat("00", 32) + `"}}`,
		`{"hashAlg":"SHA256","pcrs":{"0":"00"}}`,
		`{"hashAlg":"SHA256","pcrs":{"24":"` + strings.Repeat("00", 32) + `"}}`,
		`{"hashAlg":"SHA256","pcrs":{"x":"` + strings.Repeat("00", 32) + `"}}`,
		`{"hashAlg":"SHA256","pcrs":{}}`,
		`{"hashAlg":"SHA256","pcrs":{"0":"` + strings.Repeat("00", 32) + `"},"extra":1}`,
		`not json`,
	} {
		if _, err := tpm.ParseGoldenValues([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestGoldenValuesClaim(t *testing.T) {
	claim, err := tpm.GoldenValuesClaim(softPCRs)
	if err != nil {
		t.Fatal(err)
	}
	// Through JSON, as a DAT's claims arrive.
	raw, _ := json.Marshal(map[string]any{tpm.ClaimGoldenValues: claim})
	var claims map[string]any
	json.Unmarshal(raw, &claims)
	g, err := tpm.GoldenValuesFromClaim(claims[tpm.ClaimGoldenValues])
	if err != nil {
		t.Fatal(err)
	}
	for i := range tpm.NumPCRs {
		if !bytes.Equal(g.PCRs[i], softPCRs[i]) {
			t.Fatalf("PCR %d", i)
		}
	}
	urlSafe := make([]any, tpm.NumPCRs)
	for i := range urlSafe {
		urlSafe[i] = base64.RawURLEncoding.EncodeToString(softPCRs[i])
	}
	if _, err := tpm.GoldenValuesFromClaim(urlSafe); err != nil {
		t.Errorf("URL-safe base64: %v", err)
	}
	for name, bad := range map[string]any{
		"missing":    nil,
		"23 values":  claim[:23],
		"not a list": "abc",
		"not string": append(append([]any{}, urlSafe[:23]...), 5),
		"bad base64": append(append([]any{}, urlSafe[:23]...), "!!"),
	} {
		if _, err := tpm.GoldenValuesFromClaim(bad); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	basic, _ := softPCRs.Select(tpm.MaskBasic)
	if _, err := tpm.GoldenValuesClaim(basic); err == nil {
		t.Error("claim from 12 PCRs accepted")
	}
}

func softVerifier(t testing.TB, mod func(*tpm.VerifierConfig)) *tpm.Verifier {
	t.Helper()
	cfg := tpm.VerifierConfig{Roots: testPKI.CA.Pool(), Golden: &tpm.GoldenValues{PCRs: softPCRs}, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	v, err := tpm.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCheckResponse covers the verifier's checks one by one on quotes made
// in software (no TPM needed).
func TestCheckResponse(t *testing.T) {
	vcert := testPKI.Server.Cert
	ecCert, rsaCert := softCert(t, softECKey), softCert(t, softRSAKey)
	spki, _ := x509.MarshalPKIXPublicKey(softECKey.Public())
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		cert []byte
		vmod func(*tpm.VerifierConfig)
		mod  func(t *testing.T, r *tpmpb.TpmResponse)
		peer *dat.Identity
		want tpm.Reason // "" = accepted
	}{
		{name: "ecdsa", key: softECKey, cert: ecCert},
		{name: "rsassa", key: softRSAKey, cert: rsaCert},
		{name: "advanced", key: softECKey, cert: ecCert, vmod: func(c *tpm.VerifierConfig) {
			c.AttestationType, c.PCRMask = tpmpb.IdsAttestationType_ADVANCED, 0x810001
		}},
		{name: "pinned bare key", key: softECKey, cert: spki, vmod: func(c *tpm.VerifierConfig) {
			c.Roots, c.PinnedKeys = nil, []crypto.PublicKey{softECKey.Public()}
		}},
		{name: "pinned key in a foreign certificate", key: softECKey, cert: func() []byte {
			der, _ := tpm.IssueAKCertificate(testPKI.ForeignCA.Cert, testPKI.ForeignCA.Key, softECKey.Public(), pkix.Name{CommonName: "x"}, time.Hour)
			return der
		}(), vmod: func(c *tpm.VerifierConfig) { c.PinnedKeys = []crypto.PublicKey{softECKey.Public()} }},
		{name: "quoted as TPM2B_ATTEST", key: softECKey, cert: ecCert, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Quoted = append(binary.BigEndian.AppendUint16(nil, uint16(len(r.Quoted))), r.Quoted...)
		}},
		{name: "DAT golden values", key: softECKey, cert: ecCert,
			vmod: func(c *tpm.VerifierConfig) { c.Golden, c.GoldenFromDAT = nil, true },
			peer: func() *dat.Identity {
				claim, _ := tpm.GoldenValuesClaim(softPCRs)
				return &dat.Identity{Claims: map[string]any{tpm.ClaimGoldenValues: claim}}
			}()},

		{name: "no DAT", key: softECKey, cert: ecCert, want: tpm.ReasonGoldenValues,
			vmod: func(c *tpm.VerifierConfig) { c.Golden, c.GoldenFromDAT = nil, true }},
		{name: "golden values from both sources, DAT differs", key: softECKey, cert: ecCert, want: tpm.ReasonPCRMismatch,
			vmod: func(c *tpm.VerifierConfig) { c.GoldenFromDAT = true },
			peer: func() *dat.Identity {
				g := tpm.PCRValues{}
				for i, v := range softPCRs {
					g[i] = v
				}
				g[0] = make([]byte, 32)
				claim, _ := tpm.GoldenValuesClaim(g)
				return &dat.Identity{Claims: map[string]any{tpm.ClaimGoldenValues: claim}}
			}()},
		{name: "hash_alg SHA1", key: softECKey, cert: ecCert, want: tpm.ReasonHashAlgorithm, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			s := "SHA1"
			r.HashAlg = &s
		}},
		{name: "expired AK certificate", key: softECKey, cert: ecCert, want: tpm.ReasonAKUntrusted,
			vmod: func(c *tpm.VerifierConfig) { c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } }},
		{name: "certificate garbage", key: softECKey, cert: []byte("garbage"), want: tpm.ReasonAKUntrusted},
		{name: "no certificate", key: softECKey, cert: nil, want: tpm.ReasonAKUntrusted},
		{name: "AK certificate for another key", key: softECKey, cert: rsaCert, want: tpm.ReasonSignature},
		{name: "not a quote", key: softECKey, cert: ecCert, want: tpm.ReasonQuoteMalformed, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Quoted[5] = 0x17 // TPM_ST_ATTEST_CERTIFY
		}},
		{name: "not TPM-generated", key: softECKey, cert: ecCert, want: tpm.ReasonQuoteMalformed, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Quoted[0] = 0
		}},
		{name: "trailing bytes after the quote", key: softECKey, cert: ecCert, want: tpm.ReasonQuoteMalformed, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Quoted = append(r.Quoted, 0)
		}},
		{name: "trailing bytes after the signature", key: softECKey, cert: ecCert, want: tpm.ReasonSignature, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Signature = append(r.Signature, 0)
		}},
		{name: "signature over other bytes", key: softECKey, cert: ecCert, want: tpm.ReasonSignature, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Signature = softSign(t, softECKey, []byte("other"))
		}},
		{name: "HMAC signature", key: softECKey, cert: ecCert, want: tpm.ReasonSignature, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.Signature = tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgHMAC, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgHMAC,
				&tpm2.TPMTHA{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)})})
		}},
		{name: "PCR reported twice", key: softECKey, cert: ecCert, want: tpm.ReasonPCRSelection, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.PcrValues[1] = r.PcrValues[0]
		}},
		{name: "PCR missing", key: softECKey, cert: ecCert, want: tpm.ReasonPCRSelection, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.PcrValues = r.PcrValues[1:]
		}},
		{name: "PCR value of SHA-1 size", key: softECKey, cert: ecCert, want: tpm.ReasonPCRSelection, mod: func(t *testing.T, r *tpmpb.TpmResponse) {
			r.PcrValues[0].Value = make([]byte, 20)
		}},
		{name: "golden values lack a PCR", key: softECKey, cert: ecCert, want: tpm.ReasonGoldenValues,
			vmod: func(c *tpm.VerifierConfig) { c.Golden, c.GoldenFromDAT = nil, true },
			peer: &dat.Identity{Claims: map[string]any{tpm.ClaimGoldenValues: []any{"AA=="}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := softVerifier(t, tc.vmod)
			ch, err := v.Challenge()
			if err != nil {
				t.Fatal(err)
			}
			r := softResponse(t, tc.key, tc.cert, ch, vcert)
			if tc.mod != nil {
				tc.mod(t, r)
			}
			err = v.CheckResponse(ch, r, vcert, tc.peer)
			if got := tpm.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want == "" {
				// Through the wire encoding too.
				b, err := tpm.EncodeTpmMessage(r)
				if err != nil {
					t.Fatal(err)
				}
				m, err := tpm.DecodeTpmMessage(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.CheckResponse(ch, m.GetRatResponse(), vcert, tc.peer); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestDecodeTpmMessage(t *testing.T) {
	basic := tpmpb.IdsAttestationType_BASIC
	ok := true
	for _, m := range []proto.Message{
		&tpmpb.TpmChallenge{Atype: &basic, Nonce: make([]byte, 20)},
		&tpmpb.TpmResult{Result: &ok},
	} {
		b, err := tpm.EncodeTpmMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.DecodeTpmMessage(b); err != nil {
			t.Errorf("%T: %v", m, err)
		}
	}
	if _, err := tpm.EncodeTpmMessage(&tpmpb.Pcr{}); err == nil {
		t.Error("wrapped a Pcr")
	}
	long := make([]byte, 65)
	for name, b := range map[string][]byte{
		"empty message":    {},
		"no nonce":         mustMarshal(t, &tpmpb.TpmMessage{Message: &tpmpb.TpmMessage_RatChallenge{RatChallenge: &tpmpb.TpmChallenge{Atype: &basic}}}),
		"no result":        mustMarshal(t, &tpmpb.TpmMessage{Message: &tpmpb.TpmMessage_RatResult{RatResult: &tpmpb.TpmResult{}}}),
		"long nonce":       mustMarshal(t, &tpmpb.TpmMessage{Message: &tpmpb.TpmMessage_RatChallenge{RatChallenge: &tpmpb.TpmChallenge{Atype: &basic, Nonce: long}}}),
		"truncated":        {0x0a, 0x05, 0x08},
		"oversized":        make([]byte, 2<<20),
		"response missing": mustMarshal(t, &tpmpb.TpmMessage{Message: &tpmpb.TpmMessage_RatResponse{RatResponse: &tpmpb.TpmResponse{Atype: &basic}}}),
	} {
		if _, err := tpm.DecodeTpmMessage(b); tpm.ReasonOf(err) != tpm.ReasonMalformed {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifierConfig(t *testing.T) {
	g := &tpm.GoldenValues{PCRs: softPCRs}
	basic, _ := softPCRs.Select(tpm.MaskBasic)
	for name, cfg := range map[string]tpm.VerifierConfig{
		"no AK trust":             {Golden: g},
		"no golden values":        {Roots: testPKI.CA.Pool()},
		"ADVANCED without a mask": {Roots: testPKI.CA.Pool(), Golden: g, AttestationType: tpmpb.IdsAttestationType_ADVANCED},
		"golden values lack PCRs": {Roots: testPKI.CA.Pool(), Golden: &tpm.GoldenValues{PCRs: basic}, AttestationType: tpmpb.IdsAttestationType_ALL},
		"short nonce":             {Roots: testPKI.CA.Pool(), Golden: g, NonceSize: 4},
		"weak pinned key":         {PinnedKeys: []crypto.PublicKey{"not a key"}, Golden: g},
	} {
		if _, err := tpm.NewVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestProvisioning: a persistent AK, its certificate request, a
// certificate issued from it that a prover uses, loading and evicting.
func TestProvisioning(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		for _, alg := range []tpm.KeyAlgorithm{tpm.RSA2048, tpm.ECCP256} {
			t.Run(alg.String(), func(t *testing.T) {
				ctx := testCtx(t)
				tp := tpm.New(be.open(t))
				ak, err := tpm.CreateAK(ctx, tp, tpm.AKOptions{Algorithm: alg, Persist: true})
				if err != nil {
					t.Fatal(err)
				}
				if !ak.Persistent() || ak.Handle() != tpm.DefaultAKHandle {
					t.Fatalf("handle %#x", ak.Handle())
				}
				if _, err := tpm.CreateAK(ctx, tp, tpm.AKOptions{Algorithm: alg, Persist: true}); err == nil {
					t.Fatal("overwrote a persistent AK without Replace")
				}
				again, err := tpm.CreateAK(ctx, tp, tpm.AKOptions{Algorithm: alg, Persist: true, Replace: true})
				if err != nil {
					t.Fatal(err)
				}
				loaded, err := tpm.LoadAK(ctx, tp, 0)
				if err != nil {
					t.Fatal(err)
				}
				pub := loaded.Public().(interface{ Equal(crypto.PublicKey) bool })
				if !pub.Equal(ak.Public()) || !pub.Equal(again.Public()) || !bytes.Equal(loaded.Name(), ak.Name()) {
					t.Fatal("a primary AK is not reproducible")
				}
				if pa, err := tpm2.Unmarshal[tpm2.TPMTPublic](loaded.PublicArea()); err != nil || !pa.ObjectAttributes.Restricted {
					t.Fatalf("public area: %v", err)
				}
				pemKey, err := loaded.PublicKeyPEM()
				if err != nil || !bytes.HasPrefix(pemKey, []byte("-----BEGIN PUBLIC KEY-----")) {
					t.Fatalf("PEM: %v\n%s", err, pemKey)
				}

				csr, err := tpm.CertificateRequest(ctx, loaded, pkix.Name{CommonName: "connector AK"})
				if err != nil {
					t.Fatal(err)
				}
				key, subject, err := tpm.ParseCertificateRequest(csr)
				if err != nil {
					t.Fatal(err)
				}
				if subject.CommonName != "connector AK" || !pub.Equal(key) {
					t.Fatalf("CSR for %v", subject)
				}
				if _, err := loaded.Signer(ctx).Sign(nil, make([]byte, 32), crypto.SHA256); err == nil {
					t.Fatal("the AK signed an external digest")
				}
				cert, err := tpm.IssueAKCertificate(testPKI.CA.Cert, testPKI.CA.Key, key, subject, 0)
				if err != nil {
					t.Fatal(err)
				}
				p, err := tpm.NewProver(tpm.ProverConfig{AK: loaded, Certificate: cert})
				if err != nil {
					t.Fatal(err)
				}
				pcrs, err := tp.ReadPCRs(ctx, tpm.MaskAll)
				if err != nil {
					t.Fatal(err)
				}
				v, err := tpm.NewVerifier(tpm.VerifierConfig{Roots: testPKI.CA.Pool(), Golden: &tpm.GoldenValues{PCRs: pcrs}})
				if err != nil {
					t.Fatal(err)
				}
				ch, _ := v.Challenge()
				resp, err := p.Respond(ctx, ch, testPKI.Server.Cert)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.CheckResponse(ch, resp, testPKI.Server.Cert, nil); err != nil {
					t.Fatal(err)
				}

				if err := tpm.EvictAK(ctx, tp, 0, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := tpm.LoadAK(ctx, tp, 0); err == nil {
					t.Fatal("loaded an evicted AK")
				}
				if err := tp.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := tp.ReadPCRs(ctx, tpm.MaskBasic); !errors.Is(err, tpm.ErrTPMClosed) {
					t.Fatalf("closed TPM: %v", err)
				}
			})
		}
	})
}

func TestNewProver(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		r := newRig(t, be, tpm.ECCP256)
		if _, err := tpm.NewProver(tpm.ProverConfig{AK: r.ak, Certificate: softCert(t, softECKey)}); err == nil {
			t.Error("accepted a certificate for another key")
		}
		if _, err := tpm.NewProver(tpm.ProverConfig{}); err == nil {
			t.Error("accepted no AK")
		}
		p := r.prover(t, nil)
		ctx := testCtx(t)
		basic, adv := tpmpb.IdsAttestationType_BASIC, tpmpb.IdsAttestationType_ADVANCED
		zero, high := uint32(0), uint32(1<<24)
		for name, ch := range map[string]*tpmpb.TpmChallenge{
			"short nonce":        {Atype: &basic, Nonce: make([]byte, 7)},
			"advanced, no mask":  {Atype: &adv, Nonce: make([]byte, 20), PcrIndices: &zero},
			"advanced, PCR 24":   {Atype: &adv, Nonce: make([]byte, 20), PcrIndices: &high},
			"advanced, absent":   {Atype: &adv, Nonce: make([]byte, 20)},
			"unknown atype (42)": {Atype: tpmpb.IdsAttestationType(42).Enum(), Nonce: make([]byte, 20)},
		} {
			if _, err := p.Respond(ctx, ch, testPKI.Server.Cert); tpm.ReasonOf(err) != tpm.ReasonChallenge {
				t.Errorf("%s: %v", name, err)
			}
		}
		if r.count.quotes.Load() != 0 {
			t.Error("quoted for a bad challenge")
		}
	})
}

// TestTPMWaitHonoursContext: a run waiting for a busy TPM gives up when its
// context ends.
func TestTPMWaitHonoursContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		r := newRig(t, be, tpm.ECCP256)
		sl := &slow{entered: make(chan struct{}, 1)}
		tp := r.newTPM(func(tr transport.TPM) transport.TPM { sl.inner = tr; return sl })
		release := sl.hold()
		defer release()
		busy := make(chan error, 1)
		go func() { _, err := tp.ReadPCRs(context.Background(), tpm.MaskBasic); busy <- err }()
		<-sl.entered
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := tp.ReadPCRs(ctx, tpm.MaskBasic); !errors.Is(err, context.Canceled) {
			t.Fatalf("waiting run: %v", err)
		}
		release()
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
	})
}

// TestSwtpmFraming: the swtpm transport reads a response that arrives in
// pieces (a stream socket may split it anywhere), refuses a bad size, and
// redials after a broken connection.
func TestSwtpmFraming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A fake TPM: answers TPM2_Startup with RC_SUCCESS, then each command
	// with a 4000-byte response written in 1-byte pieces; a command starting
	// with 0xee gets a response announcing 1 MiB.
	served := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					hdr := make([]byte, 10)
					if _, err := io.ReadFull(c, hdr); err != nil {
						return
					}
					if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint32(hdr[2:6])-10)); err != nil {
						return
					}
					var rsp []byte
					switch {
					case hdr[0] == 0xee:
						rsp = binary.BigEndian.AppendUint32([]byte{0x80, 0x01}, 1<<20)
						rsp = append(rsp, 0, 0, 0, 0)
					case binary.BigEndian.Uint32(hdr[6:]) == uint32(tpm2.TPMCCStartup):
						rsp = []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}
					default:
						rsp = make([]byte, 4000)
						copy(rsp, []byte{0x80, 0x01})
						binary.BigEndian.PutUint32(rsp[2:], 4000)
					}
					for _, b := range rsp {
						if _, err := c.Write([]byte{b}); err != nil {
							return
						}
					}
					served <- struct{}{}
				}
			}()
		}
	}()
	tr, err := tpm.DialSwtpm(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	<-served
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7e, 0, 0}
	rsp, err := tr.Send(cmd)
	if err != nil || len(rsp) != 4000 {
		t.Fatalf("split response: %d bytes, %v", len(rsp), err)
	}
	bad := append([]byte{0xee}, cmd[1:]...)
	if _, err := tr.Send(bad); err == nil {
		t.Fatal("accepted a 1 MiB response size")
	}
	if rsp, err := tr.Send(cmd); err != nil || len(rsp) != 4000 {
		t.Fatalf("after redial: %d bytes, %v", len(rsp), err)
	}
}

// TestAKCertificateCacheExpiry: a verified AK certificate is remembered
// only while its chain is valid.
func TestAKCertificateCacheExpiry(t *testing.T) {
	now := time.Now()
	v := softVerifier(t, func(c *tpm.VerifierConfig) { c.Now = func() time.Time { return now } })
	cert := softCert(t, softECKey) // valid for one hour
	ch, _ := v.Challenge()
	resp := softResponse(t, softECKey, cert, ch, testPKI.Server.Cert)
	if err := v.CheckResponse(ch, resp, testPKI.Server.Cert, nil); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := v.CheckResponse(ch, resp, testPKI.Server.Cert, nil); tpm.ReasonOf(err) != tpm.ReasonAKUntrusted {
		t.Fatalf("expired, cached certificate: %v", err)
	}
}

func TestOpenSpecAndPEM(t *testing.T) {
	if _, err := tpm.Open("tcp:1.2.3.4"); err == nil {
		t.Error("accepted an unknown TPM spec")
	}
	if _, err := tpm.Open("/nonexistent/tpm"); err == nil {
		t.Error("opened a missing device")
	}
	inst := startSwtpm(t)
	tp, err := tpm.Open("swtpm:" + inst.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, err := tpm.CreateAK(testCtx(t), tp, tpm.AKOptions{Algorithm: tpm.ECCP256})
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	pemKey, err := ak.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ParsePublicKeyPEM(pemKey)
	if err != nil || !key.(interface{ Equal(crypto.PublicKey) bool }).Equal(ak.Public()) {
		t.Fatalf("PEM round trip: %v", err)
	}
	if _, err := tpm.ParsePublicKeyPEM([]byte("nope")); err == nil {
		t.Error("parsed garbage")
	}
}
