package sidecar_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/idsmsg"
)

// e2eSeeds are the IDS-G multipart examples of the seed documents
// (../shared/seeds/002_17f559b15cf99807.txt), as copied into
// idsmsg/testdata, with the Content-Type each was sent with.
var e2eSeeds = []struct {
	file, contentType string
	answerType        string
	extraKey          string // a property of the request the sidecars must keep
}{
	{"ids-g_description-request.multipart", "multipart/form-data; boundary=--msg-boundary", "ids:DescriptionResponseMessage", "ids:requestedElement"},
	{"ids-g_description-request-token.multipart", "multipart/form-data; boundary=--msg-boundary", "ids:DescriptionResponseMessage", "ids:requestedElement"},
	{"ids-g_connector-update.multipart", "multipart/form-data; boundary=msgpart", "ids:MessageProcessedNotificationMessage", "ids:affectedConnector"},
	{"ids-g_query-sparql.multipart", "multipart/form-data; boundary=msgpart", "ids:ResultMessage", "ids:queryLanguage"},
	{"ids-g_clearinghouse-log.multipart", "multipart/form-data; boundary=X-TEST-REQUEST-BOUNDARY", "ids:MessageProcessedNotificationMessage", ""},
}

// e2eSeedMultipart sends each seed example through the egress at url: the
// provider routes it (route ids-components, multipart mode) to the
// backend's /ids; the answer must correlate with the request's @id and
// carry the provider's DAT, and the backend must have got the request's
// header, payload and the consumer's DAT (not the example's token).
func e2eSeedMultipart(t *testing.T, env *e2eEnv, c *http.Client, url string) {
	providerConnector := config.DefaultConnectorIDPrefix + dat.ConnectorID(env.leaf(t, "server"))
	consumerConnector := config.DefaultConnectorIDPrefix + dat.ConnectorID(env.leaf(t, "client"))
	for _, seed := range e2eSeeds {
		t.Run(strings.TrimSuffix(seed.file, ".multipart"), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("idsmsg", "testdata", seed.file))
			if err != nil {
				t.Fatal(err)
			}
			want, err := idsmsg.ReadMultipart(seed.contentType, bytes.NewReader(raw), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			wantHeader, err := idsmsg.Parse(want.Header)
			if err != nil {
				t.Fatal(err)
			}
			before := 0
			if s := env.be.getIDS(wantHeader.ID); s != nil {
				before = s.Count
			}

			r := e2eMust(t, c, "POST", url+"/", raw, "Content-Type: "+seed.contentType)
			if r.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %q", r.Status, e2eClip(r.Body))
			}
			ans, mp := e2eAnswer(t, r)
			if ans.Type != seed.answerType {
				t.Errorf("answer type %s, want %s", ans.Type, seed.answerType)
			}
			if ans.CorrelationMessage != wantHeader.ID {
				t.Errorf("answer correlationMessage %q, want the request's @id %q", ans.CorrelationMessage, wantHeader.ID)
			}
			if ans.SecurityToken == e2eBogusToken || ans.SecurityToken == "" {
				t.Errorf("answer securityToken %q is not the provider sidecar's DAT", ans.SecurityToken)
			} else {
				id := env.verifyDAT(t, ans.SecurityToken, "server")
				if id.Subject != env.subject(t, "server") || id.ReferringConnector != "https://provider.demo.local/" {
					t.Errorf("answer DAT is for %q (%s), want the provider", id.Subject, id.ReferringConnector)
				}
			}
			if ans.IssuerConnector != providerConnector {
				t.Errorf("answer issuerConnector %q, want the provider sidecar's %q", ans.IssuerConnector, providerConnector)
			}
			wantPayload, wantType := want.Payload, want.PayloadType
			if seed.answerType == "ids:DescriptionResponseMessage" {
				wantPayload, wantType = []byte(e2eSelfDescription), "application/ld+json"
			}
			if !bytes.Equal(mp.Payload, wantPayload) || mp.PayloadType != wantType {
				t.Errorf("answer payload %q (%s), want %q (%s)", e2eClip(mp.Payload), mp.PayloadType, e2eClip(wantPayload), wantType)
			}

			got := env.be.getIDS(wantHeader.ID)
			if got == nil {
				t.Fatalf("the backend's /ids saw no message %s", wantHeader.ID)
			}
			if got.Count != before+1 {
				t.Errorf("the backend received the message %d times, want once", got.Count-before)
			}
			if got.Header.Type != wantHeader.Type {
				t.Errorf("backend got type %s, want %s", got.Header.Type, wantHeader.Type)
			}
			if !bytes.Equal(got.Payload, want.Payload) || got.PayloadType != want.PayloadType {
				t.Errorf("backend got payload %q (%s), want %q (%s)", e2eClip(got.Payload), got.PayloadType, e2eClip(want.Payload), want.PayloadType)
			}
			if seed.extraKey != "" {
				if _, ok := got.Header.Extra[seed.extraKey]; !ok {
					t.Errorf("backend header lost %s: %s", seed.extraKey, got.RawHeader)
				}
			}
			if got.Header.SecurityToken == wantHeader.SecurityToken || got.Header.SecurityToken == "" {
				t.Errorf("backend got securityToken %.40q…, want the consumer sidecar's DAT instead of the client's", got.Header.SecurityToken)
			} else if id := env.verifyDAT(t, got.Header.SecurityToken, "client"); id.Subject != env.subject(t, "client") {
				t.Errorf("backend got a DAT for %q, want the consumer's", id.Subject)
			}
			if got.Header.IssuerConnector != consumerConnector {
				t.Errorf("backend got issuerConnector %q, want the consumer sidecar's %q", got.Header.IssuerConnector, consumerConnector)
			}
			for k, v := range map[string]string{
				"X-IDS-Peer-Subject": env.subject(t, "client"), "X-IDS-Message-Type": wantHeader.Type,
				"X-IDS-Peer-Connector": "https://consumer.demo.local/",
			} {
				if got.HTTPHeader.Get(k) != v {
					t.Errorf("backend HTTP header %s = %q, want %q", k, got.HTTPHeader.Get(k), v)
				}
			}
		})
	}
}

// e2eMultipartBinary: an IDS multipart payload with every byte value goes
// through both ways intact.
func e2eMultipartBinary(t *testing.T, env *e2eEnv, c *http.Client) {
	h := &idsmsg.Message{Type: "ids:QueryMessage", ID: "https://w3id.org/idsa/autogen/queryMessage/e2e-binary"}
	payload := e2eAllBytes(8)
	body, ct := e2eMultipart(t, h, payload, "application/octet-stream")
	r := e2eMust(t, c, "POST", env.ConsumerURL+"/", body, "Content-Type: "+ct)
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %q", r.Status, e2eClip(r.Body))
	}
	ans, mp := e2eAnswer(t, r)
	if ans.Type != "ids:ResultMessage" || ans.CorrelationMessage != h.ID {
		t.Errorf("answer %s correlating %q, want ids:ResultMessage for %q", ans.Type, ans.CorrelationMessage, h.ID)
	}
	if !bytes.Equal(mp.Payload, payload) || mp.PayloadType != "application/octet-stream" {
		t.Errorf("answer payload of %d bytes (%s) is not the 256 byte values ×8", len(mp.Payload), mp.PayloadType)
	}
	if got := env.be.getIDS(h.ID); got == nil || !bytes.Equal(got.Payload, payload) {
		t.Errorf("the backend did not get the binary payload intact")
	}
}

// e2eCurl drives the egress with the curl binary: a stock HTTP client.
func e2eCurl(t *testing.T, env *e2eEnv) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (exec.LookPath: " + err.Error() + "); install it (CI machines have it) to run this test")
	}
	dir := t.TempDir()
	run := func(name string, args ...string) (status int, contentType string, body []byte) {
		t.Helper()
		hdr, out := filepath.Join(dir, name+".headers"), filepath.Join(dir, name+".body")
		args = append([]string{"--silent", "--show-error", "--noproxy", "*", "--max-time", "30",
			"--dump-header", hdr, "--output", out, "--write-out", "%{http_code}"}, args...)
		cmd := exec.Command(curl, args...)
		cmd.Dir = dir
		code, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("curl %s: %v: %s", strings.Join(args, " "), err, stderr)
		}
		if status, err = strconv.Atoi(strings.TrimSpace(string(code))); err != nil {
			t.Fatalf("curl wrote %q as the status", code)
		}
		h, _ := os.ReadFile(hdr)
		for line := range strings.SplitSeq(string(h), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Type") {
				contentType = strings.TrimSpace(v)
			}
		}
		body, _ = os.ReadFile(out)
		return status, contentType, body
	}

	status, _, body := run("get", "-H", "X-Request-Id: curl-get", env.ConsumerURL+"/whoami?via=curl")
	if status != http.StatusOK || !bytes.Contains(body, []byte("X-IDS-Peer-Subject: "+env.subject(t, "client"))) {
		t.Errorf("curl GET: %d %q", status, body)
	}
	if s := env.be.get("curl-get"); s == nil || !strings.HasPrefix(s.Header.Get("User-Agent"), "curl/") || s.RawQuery != "via=curl" {
		t.Errorf("curl GET: the backend saw %+v", s)
	}

	h := &idsmsg.Message{Type: "ids:QueryMessage", ID: "https://w3id.org/idsa/autogen/queryMessage/e2e-curl"}
	header, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "header.json"), header, 0o600); err != nil {
		t.Fatal(err)
	}
	const query = "SELECT ?s WHERE { ?s a <https://w3id.org/idsa/core/BaseConnector> }"
	status, ct, body := run("multipart", "-F", "header=@header.json;type=application/ld+json", "-F", "payload="+query, env.ConsumerURL+"/")
	if status != http.StatusOK {
		t.Fatalf("curl multipart POST: status %d: %q", status, body)
	}
	ans, mp := e2eAnswer(t, &e2eResult{Status: status, Header: http.Header{"Content-Type": {ct}}, Body: body})
	if ans.Type != "ids:ResultMessage" || ans.CorrelationMessage != h.ID {
		t.Errorf("curl multipart POST: answer %s correlating %q, want ids:ResultMessage for %q", ans.Type, ans.CorrelationMessage, h.ID)
	}
	if string(mp.Payload) != query {
		t.Errorf("curl multipart POST: answer payload %q, want %q", mp.Payload, query)
	}
	if got := env.be.getIDS(h.ID); got == nil || string(got.Payload) != query {
		t.Errorf("curl multipart POST: the backend did not get the query: %+v", got)
	}
}
