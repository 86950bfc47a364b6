package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

var (
	pkiOnce sync.Once
	pkiB    *testpki.Bundle
	pkiKey  []byte
	pkiErr  error
)

// writePKI writes a test PKI into dir/pki: testpki's files plus
// issuer-key.pem (a DAT signing key for daps.mode local).
func writePKI(t testing.TB, dir string) {
	t.Helper()
	pkiOnce.Do(func() {
		if pkiB, pkiErr = testpki.NewBundle(); pkiErr != nil {
			return
		}
		var k *ecdsa.PrivateKey
		if k, pkiErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); pkiErr != nil {
			return
		}
		var der []byte
		der, pkiErr = x509.MarshalPKCS8PrivateKey(k)
		pkiKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	if err := pkiB.WriteFiles(filepath.Join(dir, "pki")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pki", "issuer-key.pem"), pkiKey, 0o600); err != nil {
		t.Fatal(err)
	}
	// The issuer's public key, as a pinned TPM key in tests.
	k, err := ParsePrivateKeyPEM(pkiKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pki", "issuer-pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func pkiDir(t testing.TB) string {
	dir := t.TempDir()
	writePKI(t, dir)
	return dir
}

// sections of a small valid configuration; tests replace some of them.
var baseSections = []struct{ key, body string }{
	{"identity", "  cert: pki/server.pem\n  key: pki/server-key.pem\n  ca: pki/ca.pem\n"},
	{"daps", "  mode: local\n  issuer: test\n  keyFile: pki/issuer-key.pem\n"},
	{"attestation", ""},
	{"idscp2", ""},
	{"ingress", "  routes:\n    - name: svc\n      backend: http://127.0.0.1:8080\n"},
	{"peers", "  - name: provider\n    address: localhost:29292\n"},
	{"egress", "  - listen: 127.0.0.1:8081\n    peer: provider\n"},
	{"limits", ""},
	{"admin", ""},
	{"shutdown", ""},
	{"log", ""},
}

// doc builds a configuration from baseSections with some sections replaced
// (a value "-" drops the section).
func doc(repl map[string]string) string {
	var b strings.Builder
	for _, s := range baseSections {
		body := s.body
		if r, ok := repl[s.key]; ok {
			body = r
		}
		if body == "-" || body == "" {
			continue
		}
		b.WriteString(s.key + ":\n" + body)
	}
	return b.String()
}

func mustParse(t *testing.T, data, dir string) *Config {
	t.Helper()
	c, err := Parse([]byte(data), dir)
	if err != nil {
		t.Fatalf("Parse:\n%v\n--- config:\n%s", err, data)
	}
	return c
}

func TestExample(t *testing.T) {
	dir := pkiDir(t)
	c := mustParse(t, string(Example()), dir)
	if c.DAPS.Mode != DAPSModeLocal || c.Ingress == nil || len(c.Ingress.Routes) != 2 || len(c.Egress) != 1 {
		t.Fatalf("unexpected example config: %+v", c)
	}
	// The example writes out every default; it must equal what a file
	// without those keys gets.
	minimal := mustParse(t, doc(map[string]string{
		"ingress": "  routes:\n" +
			"    - name: catalog\n      backend: http://127.0.0.1:8080/catalog\n      mode: multipart\n" +
			"      match:\n        messageTypes: [ids:DescriptionRequestMessage, ids:QueryMessage]\n" +
			"    - name: api\n      backend: http://127.0.0.1:8080\n" +
			"      allow:\n        minSecurityProfile: idsc:BASE_SECURITY_PROFILE\n",
		"daps":  "  mode: local\n  issuer: closed-test-dataspace\n  keyFile: pki/issuer-key.pem\n",
		"peers": "  - name: provider\n    address: provider.example.org:29292\n",
	}), dir)
	// Empty lists written out in the example decode as empty, not nil.
	normalize := func(c *Config) {
		for i := range c.Ingress.Routes {
			r := &c.Ingress.Routes[i]
			for _, l := range []*[]string{&r.Match.Peers, &r.Match.MessageTypes, &r.Allow.Subjects, &r.Allow.Connectors, &r.Allow.Suites} {
				if len(*l) == 0 {
					*l = nil
				}
			}
		}
	}
	normalize(c)
	normalize(minimal)
	if !reflect.DeepEqual(c, minimal) {
		t.Errorf("example differs from defaults:\nexample: %+v\ndefaults: %+v", c, minimal)
	}
}

func TestDefaults(t *testing.T) {
	dir := pkiDir(t)
	c := mustParse(t, doc(nil), dir)
	checks := []struct {
		name      string
		got, want any
	}{
		{"identity.connectorId", c.Identity.ConnectorID, ""},
		{"daps.lifetime", c.DAPS.Lifetime, Duration(time.Hour)},
		{"daps.renewalThreshold", c.DAPS.RenewalThreshold, 0.666},
		{"daps.securityProfile", c.DAPS.SecurityProfile, "idsc:BASE_SECURITY_PROFILE"},
		{"daps.timeout", c.DAPS.Timeout, Duration(0)},
		{"attestation.supportedSuites", c.Attestation.SupportedSuites, []string{"Dummy2"}},
		{"attestation.expectedSuites", c.Attestation.ExpectedSuites, []string{"Dummy2"}},
		{"attestation.interval", c.Attestation.Interval, Duration(time.Hour)},
		{"idscp2.handshakeTimeout", c.IDSCP2.HandshakeTimeout, Duration(20 * time.Second)},
		{"idscp2.ackTimeout", c.IDSCP2.AckTimeout, Duration(200 * time.Millisecond)},
		{"idscp2.maxFrameSize", c.IDSCP2.MaxFrameSize, ByteSize(16 << 20)},
		{"idscp2.certExpiryWindow", c.IDSCP2.CertExpiryWindow, Duration(24 * time.Hour)},
		{"idscp2.frameTimeout", c.IDSCP2.FrameTimeout, Duration(30 * time.Second)},
		{"idscp2.writeTimeout", c.IDSCP2.WriteTimeout, Duration(30 * time.Second)},
		{"ingress.listen", c.Ingress.Listen, "0.0.0.0:29292"},
		{"ingress.transports", c.Ingress.Transports, []string{"tcp"}},
		{"ingress.verifyClientAddress", c.Ingress.VerifyClientAddress, false},
		{"ingress.maxConcurrentRequests", c.Ingress.MaxConcurrentRequests, 256},
		{"route.mode", c.Ingress.Routes[0].Mode, "http"},
		{"route.timeout", c.Ingress.Routes[0].Timeout, Duration(30 * time.Second)},
		{"route.maxBodyBytes", c.Ingress.Routes[0].MaxBodyBytes, ByteSize(16<<20 - 64<<10)},
		{"route.allow empty", c.Ingress.Routes[0].Allow.IsEmpty(), true},
		{"peer.serverName", c.Peers[0].ServerName, "localhost"},
		{"peer.transport", c.Peers[0].Transport, "tcp"},
		{"peer.poolSize", c.Peers[0].PoolSize, 2},
		{"peer.dialTimeout", c.Peers[0].DialTimeout, Duration(10 * time.Second)},
		{"egress.mode", c.Egress[0].Mode, "auto"},
		{"egress.messageType", c.Egress[0].MessageType, "ids:RequestMessage"},
		{"egress.timeout", c.Egress[0].Timeout, Duration(30 * time.Second)},
		{"egress.maxBodyBytes", c.Egress[0].MaxBodyBytes, ByteSize(16<<20 - 64<<10)},
		{"limits.maxBodyBytes", c.Limits.MaxBodyBytes, ByteSize(16<<20 - 64<<10)},
		{"limits.maxConcurrentPerPeer", c.Limits.MaxConcurrentPerPeer, 64},
		{"limits.maxQueuePerPeer", c.Limits.MaxQueuePerPeer, 256},
		{"limits.retryAfter", c.Limits.RetryAfter, Duration(time.Second)},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090"},
		{"admin.pprof", c.Admin.Pprof, false},
		{"shutdown.drainTimeout", c.Shutdown.DrainTimeout, Duration(30 * time.Second)},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	// daps mode defaults
	c = mustParse(t, doc(map[string]string{"daps": "  mode: daps\n  url: https://daps.example.org/auth\n"}), dir)
	if c.DAPS.Timeout != DefaultDAPSTimeout || c.DAPS.RenewalThreshold != 0.666 || c.DAPS.Lifetime != 0 {
		t.Errorf("daps defaults: %+v", c.DAPS)
	}
	// Limits follow idscp2.maxFrameSize.
	c = mustParse(t, doc(map[string]string{"idscp2": "  maxFrameSize: 64MiB\n"}), dir)
	if want := ByteSize(64<<20 - 64<<10); c.Limits.MaxBodyBytes != want || c.Egress[0].MaxBodyBytes != want {
		t.Errorf("maxBodyBytes with 64MiB frames = %v / %v, want %v", c.Limits.MaxBodyBytes, c.Egress[0].MaxBodyBytes, want)
	}
	// Per-listener body limits follow limits.maxBodyBytes.
	c = mustParse(t, doc(map[string]string{"limits": "  maxBodyBytes: 1MiB\n"}), dir)
	if c.Egress[0].MaxBodyBytes != MiB || c.Ingress.Routes[0].MaxBodyBytes != MiB {
		t.Errorf("body limits do not follow limits.maxBodyBytes: %v %v", c.Egress[0].MaxBodyBytes, c.Ingress.Routes[0].MaxBodyBytes)
	}
	// Bare ports.
	c = mustParse(t, doc(map[string]string{
		"egress":  "  - listen: \"8081\"\n    peer: provider\n",
		"admin":   "  listen: 9099\n",
		"ingress": "  listen: 29293\n  routes:\n    - name: a\n      backend: http://127.0.0.1:1\n",
	}), dir)
	if c.Egress[0].Listen != "127.0.0.1:8081" || c.Admin.Listen != "127.0.0.1:9099" || c.Ingress.Listen != "0.0.0.0:29293" {
		t.Errorf("bare ports: egress %q admin %q ingress %q", c.Egress[0].Listen, c.Admin.Listen, c.Ingress.Listen)
	}
	// Egress only.
	c = mustParse(t, doc(map[string]string{"ingress": "-"}), dir)
	if c.Ingress != nil {
		t.Errorf("ingress = %+v, want nil", c.Ingress)
	}
}

func TestAdminListen(t *testing.T) {
	dir := pkiDir(t)
	for _, tc := range []struct{ admin, want string }{
		{"-", DefaultAdminListen},                          // section absent
		{"  pprof: true\n", DefaultAdminListen},            // key absent
		{"  listen: \"\"\n", ""},                           // explicitly disabled
		{"  listen:\n  pprof: true\n", DefaultAdminListen}, // null: the default
		{"  listen: 127.0.0.1:9191\n", "127.0.0.1:9191"},
		{"  listen: 0.0.0.0:9191\n", "0.0.0.0:9191"}, // metrics may be exposed
	} {
		c := mustParse(t, doc(map[string]string{"admin": tc.admin}), dir)
		if c.Admin.Listen != tc.want {
			t.Errorf("admin %q: listen = %q, want %q", tc.admin, c.Admin.Listen, tc.want)
		}
	}
}

// copyExample copies an example file into dir and loads it from there.
func loadExample(t *testing.T, name string) *Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "two-peers", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := pkiDir(t)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load %s:\n%v", name, err)
	}
	return c
}

func TestTwoPeerExamples(t *testing.T) {
	cons := loadExample(t, "consumer.yaml")
	prov := loadExample(t, "provider.yaml")

	if cons.Ingress != nil || len(cons.Egress) != 1 || len(cons.Peers) != 1 {
		t.Fatalf("consumer: ingress %v, egress %d, peers %d", cons.Ingress, len(cons.Egress), len(cons.Peers))
	}
	e := cons.Egress[0]
	if e.Listen != "127.0.0.1:8081" || e.Peer != "provider" || e.Mode != ModeAuto || e.MessageType != DefaultMessageType {
		t.Errorf("consumer egress = %+v", e)
	}
	p := cons.Peer("provider")
	if p == nil || p.Address != "localhost:29292" || p.ServerName != "localhost" || p.Transport != TransportTCP || p.PoolSize != 2 {
		t.Errorf("consumer peer = %+v", p)
	}
	if cons.DAPS.Mode != DAPSModeLocal || cons.DAPS.SecurityProfile != "idsc:TRUST_SECURITY_PROFILE" {
		t.Errorf("consumer daps = %+v", cons.DAPS)
	}

	if prov.Ingress == nil || len(prov.Ingress.Routes) != 1 || len(prov.Egress) != 0 {
		t.Fatalf("provider: ingress %+v, egress %d", prov.Ingress, len(prov.Egress))
	}
	if prov.Ingress.Listen != "0.0.0.0:29292" {
		t.Errorf("provider listen = %q", prov.Ingress.Listen)
	}
	r := prov.Ingress.Routes[0]
	if r.Backend != "http://127.0.0.1:8080" || r.Mode != ModeHTTP || r.Allow.MinSecurityProfile != "idsc:TRUST_SECURITY_PROFILE" {
		t.Errorf("provider route = %+v", r)
	}
	// The consumer's claimed profile satisfies the provider's route.
	if cons.DAPS.Issuer != prov.DAPS.Issuer {
		t.Errorf("issuers differ: %q vs %q", cons.DAPS.Issuer, prov.DAPS.Issuer)
	}
	if cons.Admin.Listen == prov.Admin.Listen {
		t.Errorf("both examples use admin listener %s", cons.Admin.Listen)
	}
	// Both share the same issuer key file (resolved per file).
	if filepath.Base(cons.DAPS.KeyFile) != "issuer-key.pem" || !filepath.IsAbs(cons.DAPS.KeyFile) {
		t.Errorf("consumer keyFile = %q", cons.DAPS.KeyFile)
	}
}

func TestUnknownKey(t *testing.T) {
	dir := pkiDir(t)
	data := doc(map[string]string{
		"peers": "  - name: provider\n    address: localhost:29292\n    poolsize: 4\n",
	})
	_, err := Parse([]byte(data), dir)
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	line := 1 + slices.Index(strings.Split(data, "\n"), "    poolsize: 4")
	errs := Errors(err)
	if len(errs) != 1 {
		t.Fatalf("want 1 error, got %d:\n%v", len(errs), err)
	}
	fe := errs[0]
	if fe.Line != line || fe.Path != "peers[0].poolsize" {
		t.Errorf("error at line %d path %q, want line %d path peers[0].poolsize", fe.Line, fe.Path, line)
	}
	for _, want := range []string{`unknown key "poolsize"`, `did you mean "poolSize"?`, "line "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	// Top level, no close match: the known keys are listed.
	_, err = Parse([]byte(doc(nil)+"frobnicate: 1\n"), dir)
	if err == nil || !strings.Contains(err.Error(), `unknown key "frobnicate" at the top level (known keys: admin, attestation,`) {
		t.Errorf("top-level unknown key: %v", err)
	}

	// Several unknown keys, nested: all are reported with their lines.
	data = doc(map[string]string{
		"ingress": "  routes:\n    - name: a\n      backend: http://127.0.0.1:1\n      allow:\n        subject: [x]\n      matches: {}\n",
		"log":     "  levle: debug\n",
	})
	_, err = Parse([]byte(data), dir)
	got := []string{}
	for _, fe := range Errors(err) {
		got = append(got, fe.Path)
		if fe.Line == 0 {
			t.Errorf("no line in %v", fe)
		}
	}
	want := []string{"ingress.routes[0].allow.subject", "ingress.routes[0].matches", "log.levle"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unknown keys reported at %v, want %v\n%v", got, want, err)
	}

	// The same through Load: the file name is in front.
	path := filepath.Join(dir, "bad.yaml")
	writeFile(t, path, data)
	_, err = Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Errorf("Load error does not start with the file name: %v", err)
	}
}

func TestSyntaxAndTypeErrors(t *testing.T) {
	dir := pkiDir(t)
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"empty", "", []string{"the configuration is empty"}},
		{"comments only", "# nothing\n", []string{"the configuration is empty"}},
		{"null", "~\n", []string{"the configuration is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"line 1: the configuration must be a mapping"}},
		{"syntax", "identity:\n  cert: [\n", []string{"line "}},
		{"tabs", "identity:\n\tcert: x\n", []string{"line 2"}},
		{"two documents", doc(nil) + "---\nlog: {}\n", []string{"more than one YAML document"}},
		{"duplicate key", doc(nil) + "egress: []\n", []string{`egress: mapping key "egress" already defined at line`}},
		{"int for string list", doc(map[string]string{"attestation": "  supportedSuites: 3\n"}),
			[]string{"attestation.supportedSuites: cannot unmarshal"}},
		{"string for int", doc(map[string]string{"limits": "  maxQueuePerPeer: lots\n"}),
			[]string{"limits.maxQueuePerPeer: cannot unmarshal !!str `lots` into int"}},
		{"bad duration", doc(map[string]string{"idscp2": "  ackTimeout: 200\n  frameTimeout: soon\n"}),
			[]string{`idscp2.ackTimeout: invalid duration "200": a unit is required`, `idscp2.frameTimeout: invalid duration "soon"`}},
		{"bad size", doc(map[string]string{"idscp2": "  maxFrameSize: 16MB/s\n", "limits": "  maxBodyBytes: -1\n"}),
			[]string{`idscp2.maxFrameSize: invalid size "16MB/s": unknown unit`, `limits.maxBodyBytes: invalid size "-1"`}},
		{"mapping for duration", doc(map[string]string{"shutdown": "  drainTimeout: {s: 1}\n"}),
			[]string{"shutdown.drainTimeout: want a duration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data), dir)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidation(t *testing.T) {
	dir := pkiDir(t)
	writeFile(t, filepath.Join(dir, "garbage.pem"), "not pem")
	writeFile(t, filepath.Join(dir, "golden.json"), `{"hashAlg":"SHA256","pcrs":{}}`)

	tpmVerify := "  expectedSuites: [TPM]\n  tpm:\n    roots: pki/ca.pem\n    goldenValues: golden.json\n"
	for _, tc := range []struct {
		name string
		repl map[string]string
		want []string // substrings, each must appear
	}{
		// identity
		{"identity missing", map[string]string{"identity": "  connectorId: urn:x\n"},
			[]string{"identity.cert: required", "identity.key: required", "identity.ca: required"}},
		{"identity files missing", map[string]string{"identity": "  cert: nope.pem\n  key: nope-key.pem\n  ca: nope-ca.pem\n"},
			[]string{"identity.cert: stat " + filepath.Join(dir, "nope.pem") + ": no such file", "identity.key: stat", "identity.ca: stat"}},
		{"key does not match cert", map[string]string{"identity": "  cert: pki/server.pem\n  key: pki/client-key.pem\n  ca: pki/ca.pem\n"},
			[]string{"identity.key: " + filepath.Join(dir, "pki", "client-key.pem") + " does not go with", "private key does not match public key"}},
		{"cert not PEM", map[string]string{"identity": "  cert: garbage.pem\n  key: pki/server-key.pem\n  ca: garbage.pem\n"},
			[]string{"identity.cert: " + filepath.Join(dir, "garbage.pem") + ": no PEM CERTIFICATE found", "identity.ca: " + filepath.Join(dir, "garbage.pem") + ": no PEM CERTIFICATE found"}},
		{"expired cert", map[string]string{"identity": "  cert: pki/expired.pem\n  key: pki/expired-key.pem\n  ca: pki/ca.pem\n"},
			[]string{"identity.cert: " + filepath.Join(dir, "pki", "expired.pem") + ": the certificate expired at"}},
		{"directory as file", map[string]string{"identity": "  cert: pki\n  key: pki/server-key.pem\n  ca: pki/ca.pem\n"},
			[]string{"identity.cert: " + filepath.Join(dir, "pki") + " is not a regular file"}},
		{"bad URIs", map[string]string{"identity": baseSections[0].body + "  connectorId: not a uri\n  senderAgent: /relative\n"},
			[]string{`identity.connectorId: "not a uri" is not an absolute URI`, `identity.senderAgent: "/relative" is not an absolute URI`}},

		// daps
		{"daps mode missing", map[string]string{"daps": "  issuer: x\n"}, []string{"daps.mode: required"}},
		{"daps mode unknown", map[string]string{"daps": "  mode: omejdn\n"}, []string{`daps.mode: unknown mode "omejdn"`}},
		{"daps mode daps", map[string]string{"daps": "  mode: daps\n  url: ftp://daps\n  keyFile: pki/issuer-key.pem\n  caFile: garbage.pem\n  renewalThreshold: 1.5\n  minSecurityProfile: idsc:GOLD\n  timeout: -1s\n"},
			[]string{`daps.url: "ftp://daps" is not an absolute http(s) URL`, "daps.keyFile: only used with daps.mode local",
				"daps.caFile: " + filepath.Join(dir, "garbage.pem") + ": no PEM CERTIFICATE", "daps.renewalThreshold: 1.5 is not in (0,1]",
				`daps.minSecurityProfile: unknown security profile "idsc:GOLD"`, "daps.timeout: must be a positive duration, got -1s"}},
		{"daps url required", map[string]string{"daps": "  mode: daps\n"}, []string{"daps.url: required with daps.mode daps"}},
		{"daps url query", map[string]string{"daps": "  mode: daps\n  url: https://d/auth?x=1\n"}, []string{"must not have a query"}},
		{"daps local", map[string]string{"daps": "  mode: local\n  url: https://daps\n  securityProfile: gold\n  lifetime: -1h\n"},
			[]string{"daps.url: only used with daps.mode daps", "daps.issuer: required with daps.mode local", "daps.keyFile: required with daps.mode local",
				`daps.securityProfile: unknown security profile "gold"`, "daps.lifetime: must be a positive duration"}},
		{"daps local bad key", map[string]string{"daps": "  mode: local\n  issuer: x\n  keyFile: pki/ca.pem\n"},
			[]string{"daps.keyFile: " + filepath.Join(dir, "pki", "ca.pem") + ": no PEM private key found"}},
		{"daps local missing key", map[string]string{"daps": "  mode: local\n  issuer: x\n  keyFile: gone.pem\n"},
			[]string{"daps.keyFile: stat " + filepath.Join(dir, "gone.pem") + ": no such file"}},
		{"daps null extras", map[string]string{"daps": "  mode: null\n  issuer: x\n  minSecurityProfile: idsc:BASE_SECURITY_PROFILE\n  lifetime: 1h\n"},
			[]string{"daps.issuer: not used with daps.mode null", "daps.minSecurityProfile: not used with daps.mode null", "daps.lifetime: only used with daps.mode local"}},
		{"null mode and identity rules", map[string]string{"daps": "  mode: null\n",
			"ingress": "  routes:\n    - name: a\n      backend: http://127.0.0.1:1\n      match: {peers: [A:B]}\n      allow: {subjects: [A:B], minSecurityProfile: idsc:BASE_SECURITY_PROFILE}\n"},
			[]string{"ingress.routes[0].match.peers: can never hold with daps.mode null", "ingress.routes[0].allow.subjects: can never hold",
				"ingress.routes[0].allow.minSecurityProfile: can never hold"}},

		// attestation
		{"unknown suites", map[string]string{"attestation": "  supportedSuites: [Dummy2, TPM2, Dummy2]\n  expectedSuites: [dummy2]\n  interval: -5m\n"},
			[]string{`attestation.supportedSuites[1]: unknown attestation suite "TPM2" (known: Dummy2, Dummy, NullRa, TPM)`,
				`attestation.supportedSuites[2]: suite "Dummy2" is listed twice`, `attestation.expectedSuites[0]: unknown attestation suite "dummy2"`,
				"attestation.interval: must be a positive duration"}},
		{"tpm section required", map[string]string{"attestation": "  supportedSuites: [TPM]\n  expectedSuites: [TPM, Dummy2]\n"},
			[]string{"attestation.tpm: required: suite TPM is in attestation.supportedSuites and attestation.expectedSuites"}},
		{"tpm prover", map[string]string{"attestation": "  supportedSuites: [TPM]\n  tpm:\n    device: /nonexistent/tpm\n    address: 127.0.0.1:2321\n    akHandle: 0x1234\n    akCert: garbage.pem\n    goldenValues: golden.json\n"},
			[]string{"attestation.tpm.address: set either device or address", "attestation.tpm.akHandle: 0x1234 is not a persistent handle",
				"attestation.tpm.akCert: " + filepath.Join(dir, "garbage.pem") + ": no PEM CERTIFICATE", "attestation.tpm.goldenValues: only used when TPM is in attestation.expectedSuites"}},
		{"tpm device missing", map[string]string{"attestation": "  supportedSuites: [TPM]\n  tpm:\n    device: /nonexistent/tpm\n"},
			[]string{"attestation.tpm.device: stat /nonexistent/tpm: no such file"}},
		{"tpm swtpm address", map[string]string{"attestation": "  supportedSuites: [TPM]\n  tpm:\n    address: 127.0.0.1\n"},
			[]string{`attestation.tpm.address: "127.0.0.1" is not host:port`}},
		{"tpm verifier needs", map[string]string{"attestation": "  expectedSuites: [TPM]\n  tpm:\n    address: 127.0.0.1:2321\n    attestationType: SOME\n"},
			[]string{"attestation.tpm.address: only used when TPM is in attestation.supportedSuites", "attestation.tpm.roots: required to verify TPM peers",
				"attestation.tpm.goldenValues: required to verify TPM peers", `attestation.tpm.attestationType: unknown type "SOME"`}},
		{"tpm verifier files", map[string]string{"attestation": "  expectedSuites: [TPM]\n  tpm:\n    roots: garbage.pem\n    pinnedKeys: [pki/issuer-pub.pem, pki/ca.pem]\n    goldenValues: nope.json\n    attestationType: ALL\n    pcrMask: 0-7\n"},
			[]string{"attestation.tpm.roots: " + filepath.Join(dir, "garbage.pem") + ": no PEM CERTIFICATE", "attestation.tpm.pinnedKeys[1]: " + filepath.Join(dir, "pki", "ca.pem") + ": no PEM PUBLIC KEY",
				"attestation.tpm.goldenValues: stat " + filepath.Join(dir, "nope.json"), "attestation.tpm.pcrMask: only used with attestationType ADVANCED"}},
		{"tpm advanced mask", map[string]string{"attestation": "  expectedSuites: [TPM]\n  tpm:\n    roots: pki/ca.pem\n    goldenValuesFromDat: true\n    attestationType: ADVANCED\n    pcrMask: 0-7,24\n"},
			[]string{`attestation.tpm.pcrMask: bad PCR list "0-7,24": "24" is outside PCRs 0-23`}},
		{"tpm advanced mask required", map[string]string{"attestation": "  expectedSuites: [TPM]\n  tpm:\n    pinnedKeys: [pki/issuer-pub.pem]\n    goldenValuesFromDat: true\n    attestationType: ADVANCED\n"},
			[]string{"attestation.tpm.pcrMask: required with attestationType ADVANCED"}},

		// idscp2 and limits
		{"idscp2 values", map[string]string{"idscp2": "  handshakeTimeout: -1s\n  maxFrameSize: 64KiB\n"},
			[]string{"idscp2.handshakeTimeout: must be a positive duration", "idscp2.maxFrameSize: 64KiB is not in (128KiB, 2GiB)"}},
		{"frame too large", map[string]string{"idscp2": "  maxFrameSize: 2GiB\n"}, []string{"idscp2.maxFrameSize: 2GiB is not in"}},
		{"body does not fit frame", map[string]string{"limits": "  maxBodyBytes: 16MiB\n  maxConcurrentPerPeer: -1\n  maxQueuePerPeer: -2\n  retryAfter: -1s\n"},
			[]string{"limits.maxBodyBytes: 16MiB does not fit in a frame: it must be at most idscp2.maxFrameSize (16MiB) minus 64KiB for the IDS header, i.e. 16320KiB",
				"limits.maxConcurrentPerPeer: must be at least 1, got -1", "limits.maxQueuePerPeer: must be at least 1, got -2", "limits.retryAfter: must be a positive duration"}},
		{"egress and route body limits", map[string]string{
			"egress":  "  - listen: 127.0.0.1:8081\n    peer: provider\n    maxBodyBytes: 17MiB\n",
			"ingress": "  routes:\n    - name: a\n      backend: http://127.0.0.1:1\n      maxBodyBytes: 1GiB\n"},
			[]string{"egress[0].maxBodyBytes: 17MiB does not fit", "ingress.routes[0].maxBodyBytes: 1GiB does not fit"}},

		// ingress
		{"ingress values", map[string]string{"ingress": "  listen: \"0.0.0.0:99999\"\n  transports: [tcp, udp, tcp]\n  maxConcurrentRequests: -1\n"},
			[]string{`ingress.listen: "0.0.0.0:99999": port "99999" is not a number in 0-65535`, `ingress.transports[1]: unknown transport "udp" (use tcp or quic)`,
				`ingress.transports[2]: transport "tcp" is listed twice`, "ingress.maxConcurrentRequests: must be at least 1", "ingress.routes: at least one route is required"}},
		{"ingress listen not host:port", map[string]string{"ingress": "  listen: localhost\n  routes: [{name: a, backend: \"http://h:1\"}]\n"},
			[]string{`ingress.listen: "localhost" is not host:port`}},
		{"routes", map[string]string{"ingress": `  routes:
    - name: Bad_Name
      backend: ftp://x
      mode: auto
      timeout: -5s
    - backend: "http://[::1"
    - name: dup
      backend: http://127.0.0.1:1
      backendCA: pki/ca.pem
    - name: dup
      backend: https://127.0.0.1:1
      backendCA: missing-ca.pem
      match:
        messageTypes: [RequestMessage, "ids:QueryMessage", "https://w3id.org/idsa/core/LogMessage"]
        pathPrefix: api
        peers: [""]
      allow:
        subjects: [" "]
        connectors: ["urn:ids:connector:1", "not a uri", ""]
        minSecurityProfile: TRUSTED
        suites: [TPM, Dummy, Foo]
`},
			[]string{`ingress.routes[0].name: "Bad_Name" is not a valid route name`, `ingress.routes[0].backend: "ftp://x" is not an absolute http:// or https:// URL`,
				`ingress.routes[0].mode: unknown value "auto" (use http, multipart)`, "ingress.routes[0].timeout: must be a positive duration",
				"ingress.routes[1].name: required", "ingress.routes[1].backend: parse",
				"ingress.routes[2].backendCA: only used with an https:// backend",
				`ingress.routes[3].name: duplicate route name "dup" (also ingress.routes[2])`,
				"ingress.routes[3].backendCA: stat " + filepath.Join(dir, "missing-ca.pem"),
				`ingress.routes[3].match.messageTypes[0]: "RequestMessage" is not a compact IDS message type`,
				`ingress.routes[3].match.messageTypes[2]: "https://w3id.org/idsa/core/LogMessage" is not a compact`,
				`ingress.routes[3].match.pathPrefix: "api" must start with /`, "ingress.routes[3].match.peers[0]: empty value",
				"ingress.routes[3].allow.subjects[0]: empty value", `ingress.routes[3].allow.connectors[1]: "not a uri" is not an absolute URI`,
				"ingress.routes[3].allow.connectors[2]: empty connector URI", `ingress.routes[3].allow.minSecurityProfile: unknown security profile "TRUSTED"`,
				`ingress.routes[3].allow.suites[0]: suite "TPM" is not in attestation.expectedSuites`,
				`ingress.routes[3].allow.suites[1]: suite "Dummy" is not in attestation.expectedSuites`,
				`ingress.routes[3].allow.suites[2]: unknown attestation suite "Foo"`,
				`ingress.routes[3]: unreachable: ingress.routes[0] ("Bad_Name") has no match conditions`}},

		// peers
		{"peers", map[string]string{"peers": `  - name: provider
    address: localhost
    transport: udp
    poolSize: -1
    dialTimeout: -1s
  - name: provider
    address: ":29292"
  - name: UPPER
    address: "h:0"
  - address: "x y:1"
    serverName: "a b"
`},
			[]string{`peers[0].address: "localhost" is not host:port`, `peers[0].transport: unknown transport "udp"`, "peers[0].poolSize: must be at least 1",
				"peers[0].dialTimeout: must be a positive duration", `peers[1].name: duplicate peer name "provider" (also peers[0])`,
				`peers[1].address: ":29292" has no host`, `peers[2].name: "UPPER" is not a valid peer name`, `peers[2].address: "h:0": port 0 cannot be dialled`,
				"peers[3].name: required", `peers[3].address: "x y:1": "x y" is neither an IP address nor a host name`, `peers[3].serverName: "a b" is not a host name`}},

		// egress
		{"egress", map[string]string{"egress": `  - listen: 0.0.0.0:8081
    peer: provider
  - listen: ":8082"
    peer: consumer
    mode: soap
    messageType: RequestMessage
    timeout: -1s
  - listen: 192.0.2.1:8083
    peer: provider
  - listen: 192.0.2.1:8084
    allowNonLoopback: true
    peer: provider
  - peer: provider
  - listen: "[::1]:8085"
  - listen: localhost:8086
    peer: provider
`},
			[]string{`egress[0].listen: "0.0.0.0:8081" listens on all interfaces: anyone who can reach it can send requests as this connector; use 127.0.0.1 or set allowNonLoopback: true`,
				`egress[1].listen: ":8082" listens on all interfaces`, `egress[1].peer: "consumer" is not a defined peer`,
				`egress[1].mode: unknown value "soap" (use auto, http, multipart)`, `egress[1].messageType: "RequestMessage" is not a compact IDS message type`,
				"egress[1].timeout: must be a positive duration", `egress[2].listen: "192.0.2.1:8083" is not a loopback address`,
				"egress[4].listen: required", "egress[5].peer: required"}},
		{"listen conflicts", map[string]string{
			"ingress": "  listen: 0.0.0.0:8081\n  transports: [tcp, quic]\n  routes: [{name: a, backend: \"http://h:1\"}]\n",
			"egress":  "  - listen: 127.0.0.1:8081\n    peer: provider\n  - listen: localhost:8082\n    peer: provider\n  - listen: 127.0.0.1:8082\n    peer: provider\n  - listen: 127.0.0.1:0\n    peer: provider\n  - listen: 127.0.0.1:0\n    peer: provider\n",
			"admin":   "  listen: \"[::1]:8082\"\n"},
			[]string{`egress[0].listen: port 8081 on "127.0.0.1" is already used by ingress.listen`,
				`egress[2].listen: port 8082 on "127.0.0.1" is already used by egress[1].listen`}},
		{"admin listen and quic port", map[string]string{
			"ingress": "  listen: 127.0.0.1:9090\n  transports: [quic]\n  routes: [{name: a, backend: \"http://h:1\"}]\n",
			"admin":   "  listen: nohost\n"},
			[]string{`admin.listen: "nohost" is not host:port`}},

		// misc
		{"nothing to do", map[string]string{"ingress": "-", "egress": "-"}, []string{"nothing to do: configure ingress, egress or both"}},
		{"shutdown and log", map[string]string{"shutdown": "  drainTimeout: -1s\n", "log": "  level: verbose\n  format: xml\n"},
			[]string{"shutdown.drainTimeout: must be a positive duration", `log.level: unknown value "verbose" (use debug, info, warn, error)`, `log.format: unknown value "xml" (use text, json)`}},
		{"tpm verifier ok but route suites", map[string]string{"attestation": tpmVerify,
			"ingress": "  routes: [{name: a, backend: \"http://h:1\", allow: {suites: [Dummy2]}}]\n"},
			[]string{`ingress.routes[0].allow.suites[0]: suite "Dummy2" is not in attestation.expectedSuites`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := doc(tc.repl)
			_, err := Parse([]byte(data), dir)
			if err == nil {
				t.Fatalf("accepted:\n%s", data)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("error:\n%v", err)
			}
			// Every problem in a value written in the file names its line.
			for _, fe := range Errors(err) {
				if fe.Path != "" && fe.Line == 0 {
					t.Errorf("no line for %v", fe)
				}
			}
		})
	}
}

// TestValidTPM checks that complete TPM sections are accepted.
func TestValidTPM(t *testing.T) {
	dir := pkiDir(t)
	writeFile(t, filepath.Join(dir, "golden.json"), `{"hashAlg":"SHA256","pcrs":{}}`)
	c := mustParse(t, doc(map[string]string{"attestation": `  supportedSuites: [TPM, Dummy2]
  expectedSuites: [TPM]
  tpm:
    address: 127.0.0.1:2321
    akCert: pki/client.pem
    roots: pki/ca.pem
    goldenValues: golden.json
    attestationType: ADVANCED
    pcrMask: "0-7,10"
`, "ingress": "  routes: [{name: a, backend: \"http://h:1\", allow: {suites: [TPM]}}]\n"}), dir)
	tp := c.Attestation.TPM
	if tp.AKHandle != DefaultAKHandle || tp.Device != "" || tp.GoldenValues != filepath.Join(dir, "golden.json") {
		t.Errorf("tpm = %+v", tp)
	}
	c = mustParse(t, doc(map[string]string{"attestation": "  supportedSuites: [TPM]\n  tpm:\n    device: /dev/null\n    akHandle: 0x81000001\n"}), dir)
	if c.Attestation.TPM.AKHandle != 0x81000001 || c.Attestation.TPM.AttestationType != "" {
		t.Errorf("tpm = %+v", c.Attestation.TPM)
	}
	c = mustParse(t, doc(map[string]string{"attestation": "  expectedSuites: [TPM]\n  tpm:\n    pinnedKeys: [pki/issuer-pub.pem]\n    goldenValuesFromDat: true\n"}), dir)
	if c.Attestation.TPM.AttestationType != TPMBasic {
		t.Errorf("attestationType default = %q", c.Attestation.TPM.AttestationType)
	}
}

func TestMultipleErrorsJoined(t *testing.T) {
	dir := pkiDir(t)
	data := doc(map[string]string{
		"daps":   "  mode: nul\n",
		"egress": "  - listen: 127.0.0.1:8081\n    peer: provider\n  - listen: 127.0.0.1:8082\n    peer: provider2\n",
		"log":    "  level: loud\n",
		"limits": "  retryAfter: -1s\n",
	})
	_, err := Parse([]byte(data), dir)
	if err == nil {
		t.Fatal("accepted")
	}
	if _, ok := err.(interface{ Unwrap() []error }); !ok {
		t.Fatalf("error %T is not an errors.Join", err)
	}
	errs := Errors(err)
	var paths []string
	for _, fe := range errs {
		paths = append(paths, fe.Path)
		var target *FieldError
		if !errors.As(err, &target) {
			t.Error("errors.As finds no *FieldError")
		}
	}
	want := []string{"daps.mode", "limits.retryAfter", "egress[1].peer", "log.level"}
	slices.Sort(paths)
	slices.Sort(want)
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %v, want %v\n%v", paths, want, err)
	}
	if !strings.Contains(err.Error(), `egress[1].peer: "provider2" is not a defined peer`) {
		t.Errorf("error lacks the egress problem:\n%v", err)
	}
	// Sorted by line.
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Errorf("errors not sorted by line: %v", err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("%d lines of error text, want %d", n, len(want))
	}
}

func TestRelativePaths(t *testing.T) {
	root := t.TempDir()
	cfgDir := filepath.Join(root, "etc", "sidecar")
	writePKI(t, cfgDir)
	path := filepath.Join(cfgDir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(doc(map[string]string{
		"identity": "  cert: pki/server.pem\n  key: ./pki/server-key.pem\n  ca: " + filepath.Join(cfgDir, "pki", "ca.pem") + "\n",
	})), 0o644); err != nil {
		t.Fatal(err)
	}
	// Load from another working directory, through a relative path.
	t.Chdir(root)
	c, err := Load(filepath.Join("etc", "sidecar", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{
		"identity.cert": c.Identity.Cert, "identity.key": c.Identity.Key, "identity.ca": c.Identity.CA, "daps.keyFile": c.DAPS.KeyFile,
	} {
		if !filepath.IsAbs(got) || !strings.HasPrefix(got, cfgDir) {
			t.Errorf("%s = %q, want an absolute path under %s", name, got, cfgDir)
		}
	}
	if c.Identity.Key != filepath.Join(cfgDir, "pki", "server-key.pem") {
		t.Errorf("identity.key = %q", c.Identity.Key)
	}

	// Parse with baseDir "" leaves paths relative to the working directory.
	t.Chdir(cfgDir)
	c, err = Parse([]byte(doc(nil)), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.Cert != "pki/server.pem" {
		t.Errorf("identity.cert = %q, want it unchanged", c.Identity.Cert)
	}

	// A missing file is named by its resolved path.
	_, err = Load(filepath.Join(cfgDir, "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"200ms", 200 * time.Millisecond, ""},
		{"1h", time.Hour, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5s", 1500 * time.Millisecond, ""},
		{"-1s", -time.Second, ""},
		{"0", 0, ""},
		{" 30s ", 30 * time.Second, ""},
		{"30", 0, `invalid duration "30": a unit is required, e.g. "30s"`},
		{"1.5", 0, "a unit is required"},
		{"1d", 0, `invalid duration "1d"`},
		{"", 0, "invalid duration"},
		{"soon", 0, "invalid duration"},
	} {
		got, err := ParseDuration(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseDuration(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.D() != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
	}
	// In YAML, plain and quoted scalars, anchors and aliases.
	var v struct {
		A, B, C, D Duration
	}
	dec := "a: 30s\nb: \"200ms\"\nc: &x 1m\nd: *x\n"
	if err := yamlUnmarshal(dec, &v); err != nil {
		t.Fatal(err)
	}
	if v.A.D() != 30*time.Second || v.B.D() != 200*time.Millisecond || v.C.D() != time.Minute || v.D.D() != time.Minute {
		t.Errorf("decoded %+v", v)
	}
	if s := Duration(90 * time.Second).String(); s != "1m30s" {
		t.Errorf("String = %q", s)
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		err  string
	}{
		{"16MiB", 16 << 20, ""},
		{"64KiB", 64 << 10, ""},
		{"1048576", 1 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"16 MiB", 16 << 20, ""},
		{"16mib", 16 << 20, ""},
		{"10MB", 10e6, ""},
		{"1kB", 1000, ""},
		{"512B", 512, ""},
		{"0", 0, ""},
		{"1.5MiB", 0, `unknown unit ".5MiB"`},
		{"16M", 0, `unknown unit "M"`},
		{"-1", 0, "want a whole number"},
		{"MiB", 0, "want a whole number"},
		{"", 0, "want a whole number"},
		{"99999999999999999999", 0, "too large"},
		{"9000000TiB", 0, "too large"},
	} {
		got, err := ParseByteSize(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseByteSize(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
	}
	for b, want := range map[ByteSize]string{16 << 20: "16MiB", 16<<20 - 64<<10: "16320KiB", 1000: "1000", 0: "0", 3 << 30: "3GiB"} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
		if back, err := ParseByteSize(want); err != nil || back != b {
			t.Errorf("round trip of %q = %v, %v", want, back, err)
		}
	}
	var v struct{ A, B ByteSize }
	if err := yamlUnmarshal("a: 1048576\nb: 16MiB\n", &v); err != nil {
		t.Fatal(err)
	}
	if v.A != MiB || v.B != 16*MiB {
		t.Errorf("decoded %+v", v)
	}
	// Not decimal: refused rather than guessed.
	if err := yamlUnmarshal("a: 0x100\n", &v); err == nil || !strings.Contains(err.Error(), `line 1: invalid size "0x100"`) {
		t.Errorf("0x100: %v", err)
	}
	if err := yamlUnmarshal("a: [1]\n", &v); err == nil || !strings.Contains(err.Error(), "want a size") {
		t.Errorf("list as size: %v", err)
	}
}

func TestRestartRequired(t *testing.T) {
	dir := pkiDir(t)
	old := mustParse(t, doc(nil), dir)
	same := mustParse(t, doc(map[string]string{
		"limits":  "  maxBodyBytes: 1MiB\n  retryAfter: 5s\n",
		"ingress": "  routes:\n    - name: other\n      backend: http://127.0.0.1:9999\n      allow: {minSecurityProfile: idsc:TRUST_SECURITY_PROFILE}\n",
		"egress":  "  - listen: 127.0.0.1:8081\n    peer: provider\n    timeout: 5s\n",
		"log":     "  level: debug\n",
	}), dir)
	if got := RestartRequired(old, same); len(got) != 0 {
		t.Errorf("live-reloadable changes reported as needing a restart: %v", got)
	}
	// Pool settings are fixed when the pool is built.
	pools := mustParse(t, doc(map[string]string{
		"peers":  "  - name: provider\n    address: localhost:29292\n    dialTimeout: 1s\n",
		"limits": "  maxConcurrentPerPeer: 8\n",
	}), dir)
	if got, want := RestartRequired(old, pools), []string{"peers", "limits.maxConcurrentPerPeer"}; !reflect.DeepEqual(got, want) {
		t.Errorf("RestartRequired for pool settings = %v, want %v", got, want)
	}
	next := mustParse(t, doc(map[string]string{
		"ingress": "  listen: 0.0.0.0:29293\n  routes:\n    - name: svc\n      backend: http://127.0.0.1:8080\n",
		"egress":  "  - listen: 127.0.0.1:8082\n    peer: provider\n",
		"peers":   "  - name: provider\n    address: 127.0.0.1:29292\n",
		"admin":   "  listen: \"\"\n",
		"idscp2":  "  ackTimeout: 1s\n",
		"daps":    "  mode: null\n",
		"log":     "  format: json\n",
	}), dir)
	want := []string{"daps", "idscp2", "ingress.listen", "peers", "egress", "admin", "log.format"}
	if got := RestartRequired(old, next); !reflect.DeepEqual(got, want) {
		t.Errorf("RestartRequired = %v, want %v", got, want)
	}
	noIngress := mustParse(t, doc(map[string]string{"ingress": "-"}), dir)
	if got := RestartRequired(old, noIngress); !reflect.DeepEqual(got, []string{"ingress"}) {
		t.Errorf("RestartRequired without ingress = %v", got)
	}
}

func TestLoadPrivateKey(t *testing.T) {
	dir := pkiDir(t)
	if _, err := LoadPrivateKey(filepath.Join(dir, "pki", "issuer-key.pem")); err != nil {
		t.Error(err)
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, "pki", "server-key.pem")); err != nil {
		t.Error(err)
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, "pki", "ca.pem")); err == nil {
		t.Error("a certificate was accepted as a key")
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func yamlUnmarshal(data string, v any) error { return yaml.Unmarshal([]byte(data), v) }

// Decoding problems and validation problems are reported in one run, and a
// value that could not be decoded is not reported again by validation.
func TestDecodeAndValidationErrorsTogether(t *testing.T) {
	dir := pkiDir(t)
	data := `identity:
  cert: pki/server.pem
  key: pki/client-key.pem
  ca: pki/ca.pem
  conectorId: urn:x
daps:
  mode: null
peers:
  - name: provider
    address: localhost:29292
    poolSize: many
egress:
  - listen: 0.0.0.0:8081
    peer: provder
    timeout: 30
limits:
  maxBodyBytes: 16MiB
`
	path := filepath.Join(dir, "sidecar.yaml")
	writeFile(t, path, data)
	_, err := Load(path)
	want := []string{
		path + ":3: identity.key: ",
		path + `:5: identity.conectorId: unknown key "conectorId" in identity (did you mean "connectorId"?)`,
		path + ":11: peers[0].poolSize: cannot unmarshal !!str `many` into int",
		path + `:13: egress[0].listen: "0.0.0.0:8081" listens on all interfaces`,
		path + `:14: egress[0].peer: "provder" is not a defined peer`,
		path + `:15: egress[0].timeout: invalid duration "30"`,
		path + ":17: limits.maxBodyBytes: 16MiB does not fit in a frame",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestAnchorsAndNullMode(t *testing.T) {
	dir := pkiDir(t)
	data := `identity: {cert: pki/server.pem, key: pki/server-key.pem, ca: pki/ca.pem}
daps: {mode: null}
x-peer-defaults: &peer
  transport: tcp
  poolSize: 4
  dialTimeout: 3s
peers:
  - <<: *peer
    name: a
    address: a.example:29292
  - <<: *peer
    name: b
    address: b.example:29292
    poolSize: 1
egress:
  - {listen: 8081, peer: a}
  - {listen: 8082, peer: b}
`
	c := mustParse(t, data, dir)
	if c.DAPS.Mode != DAPSModeNull {
		t.Errorf("daps.mode = %q, want null", c.DAPS.Mode)
	}
	if a, b := c.Peer("a"), c.Peer("b"); a.PoolSize != 4 || a.DialTimeout.D() != 3*time.Second || b.PoolSize != 1 || b.DialTimeout.D() != 3*time.Second {
		t.Errorf("merged peers: %+v %+v", a, b)
	}
	// `mode: ~` and an empty mode are absent, not null.
	for _, m := range []string{"~", `""`, ""} {
		_, err := Parse([]byte(strings.Replace(data, "{mode: null}", "{mode: "+m+"}", 1)), dir)
		if err == nil || !strings.Contains(err.Error(), "daps.mode: required") {
			t.Errorf("mode %q: %v", m, err)
		}
	}
	// An unknown key inside an anchor is reported where it is written.
	bad := strings.Replace(data, "  dialTimeout: 3s", "  dialTimeOut: 3s", 1)
	_, err := Parse([]byte(bad), dir)
	if err == nil || !strings.Contains(err.Error(), `line 6: peers[0].dialTimeOut: unknown key "dialTimeOut" in peers[0] (did you mean "dialTimeout"?)`) {
		t.Errorf("unknown key in an anchor: %v", err)
	}
}

// FuzzParse: no input makes Parse panic or hang, and a configuration it
// accepts is complete (defaults filled in).
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	writePKI(f, dir)
	f.Add(Example())
	f.Add([]byte(doc(nil)))
	for _, name := range []string{"consumer.yaml", "provider.yaml"} {
		if data, err := os.ReadFile(filepath.Join("..", "..", "examples", "two-peers", name)); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("identity: {<<: [*x]}\n"))
	f.Add([]byte("x-a: &a {mode: null}\ndaps: *a\nidscp2: {maxFrameSize: 1GiB, ackTimeout: 1ns}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, dir)
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatalf("error without FieldError: %v", err)
			}
			return
		}
		if c.Log.Level == "" || c.IDSCP2.MaxFrameSize == 0 || c.Limits.MaxBodyBytes == 0 || len(c.Attestation.ExpectedSuites) == 0 {
			t.Fatalf("accepted config lacks defaults: %+v", c)
		}
	})
}

// keyPaths lists every key of the configuration as documented, e.g.
// "ingress.routes[].allow.subjects".
func keyPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		p := prefix + name
		out = append(out, p)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, keyPaths(ft, p+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyPaths(ft.Elem(), p+"[].")...)
		}
	}
	return out
}

// TestDocumented: docs/config.md documents every key (as `path` in a
// table) and the embedded example mentions every key.
func TestDocumented(t *testing.T) {
	md, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	ex := string(Example())
	for _, p := range keyPaths(reflect.TypeFor[Config](), "") {
		if !strings.Contains(string(md), "| `"+p+"` |") {
			t.Errorf("docs/config.md has no table row for `%s`", p)
		}
		leaf := p[strings.LastIndexAny(p, ".]")+1:]
		if !strings.Contains(ex, leaf+":") {
			t.Errorf("Example() does not mention %s", p)
		}
	}
}

// The minimal file in docs/config.md is valid.
func TestDocsMinimalExample(t *testing.T) {
	md, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(md), "## A minimal file\n\n```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no minimal example in docs/config.md")
	}
	c := mustParse(t, block, pkiDir(t))
	if c.Ingress.Listen != DefaultIngressListen || c.Attestation.SupportedSuites[0] != SuiteDummy2 || c.Admin.Listen != DefaultAdminListen {
		t.Errorf("minimal example: %+v", c)
	}
}
