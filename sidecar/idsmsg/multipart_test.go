package idsmsg

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// seedExamples are the multipart examples of the IDS-G page in
// ../shared/seeds/002_17f559b15cf99807.txt, copied into testdata (see
// testdata/README.md), with what the header and payload must come out as.
var seedExamples = []struct {
	file        string
	contentType string // as given in (or next to) the listing
	want        Message
	extraKeys   []string
	payloadType string
	payload     string // exact; "" with payloadNil false means an empty payload
	payloadNil  bool
	payloadHas  []string // prefix and suffix when the payload is long
}{
	{
		// §2 first listing; the text says "multipart/form-data; boundary=--msg-boundary".
		file:        "ids-g_description-request.multipart",
		contentType: "multipart/form-data; boundary=--msg-boundary",
		want: Message{
			Type:            "ids:DescriptionRequestMessage",
			ID:              "https://w3id.org/idsa/autogen/selfDescriptionRequest/b0731661-7df1-43e5-bb75-50f0709f31c9",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2019-12-21T13:32:33.073+02:00"),
			IssuerConnector: "http://example.org#connector",
		},
		extraKeys:  []string{"ids:requestedElement"},
		payloadNil: true,
	},
	{
		// §2 second listing (with a DAT).
		file:        "ids-g_description-request-token.multipart",
		contentType: "multipart/form-data; boundary=--msg-boundary",
		want: Message{
			Type:            "ids:DescriptionRequestMessage",
			ID:              "https://w3id.org/idsa/autogen/selfDescriptionRequest/b0731661-7df1-43e5-bb75-50f0709f31c9",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2019-12-21T13:32:33.073+02:00"),
			IssuerConnector: "http://example.org#connector",
			SecurityToken:   "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlZmF1bHQifQ.eyJ...",
		},
		extraKeys:  []string{"ids:requestedElement"},
		payloadNil: true,
	},
	{
		// §2 third listing; the text gives a Content-Type with
		// ";charset=UTF-8" and another boundary than the listing uses.
		file:        "ids-g_description-response.multipart",
		contentType: "multipart/form-data; boundary=msgpart;charset=UTF-8",
		want: Message{
			Type:               "ids:DescriptionResponseMessage",
			ID:                 "https://w3id.org/idsa/autogen/selfDescriptionResponse/851e3218-2bb7-45f9-8795-7f99c1f19680",
			ModelVersion:       "4.1.0",
			Issued:             mustTime("2019-12-21T13:11:14.596+02:00"),
			IssuerConnector:    "https://broker.ids.isst.fraunhofer.de/",
			CorrelationMessage: "https://w3id.org/idsa/autogen/selfDescriptionRequest/b0731661-7df1-43e5-bb75-50f0709f31c9",
		},
		payloadType: "application/ld+json",
		payloadHas:  []string{"{\n  \"@context\" : \"https://w3id.org/idsa/contexts/context.jsonld\",\n  \"@type\" : \"ids:Broker\",", "  \"@id\" : \"https://broker.ids.isst.fraunhofer.de/\"\n}"},
	},
	{
		// §4.1.5 Listing 1: ConnectorUpdateMessage (no close delimiter).
		file:        "ids-g_connector-update.multipart",
		contentType: "multipart/form-data; boundary=msgpart",
		want: Message{
			Type:            "ids:ConnectorUpdateMessage",
			ID:              "https://w3id.org/idsa/autogen/1119667d-ea7b-4f3b-8a74-8cecaab1fa41",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2020-06-23T17:16:02.723+02:00"),
			IssuerConnector: "https://test.connector.de/",
			SenderAgent:     "http://example.org",
			SecurityToken:   "eyJ0eXAiOiJKV1QiLCJraWQiOiJkZWZhdWx0IiwiYWxnIjoiUlMyNTYifQ...",
		},
		extraKeys:   []string{"ids:affectedConnector"},
		payloadType: "application/json",
		payload:     "<Self-description in JSON-LD>",
	},
	{
		// §4.1.6: ConnectorUnavailableMessage, prefixed and unprefixed keys mixed.
		file:        "ids-g_connector-unavailable.multipart",
		contentType: "multipart/form-data; boundary=msgpart",
		want: Message{
			Type:            "ids:ConnectorUnavailableMessage",
			ID:              "http://industrialdataspace.org/connectorUnavailableMessage/1a421b8c-3407-44a8-aeb9-253f145c869a",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2019-10-25T15:35:34.589+02:00"),
			IssuerConnector: "https://test.connector.de/",
			SecurityToken:   "eyJhbGciOiJSUzI1NiIsInR5cCI...",
		},
		payloadNil: true,
	},
	{
		// §4.1.8: QueryMessage with a SPARQL payload.
		file:        "ids-g_query-sparql.multipart",
		contentType: "multipart/form-data; boundary=msgpart",
		want: Message{
			Type:            "ids:QueryMessage",
			ID:              "https://w3id.org/idsa/autogen/queryMessage/dbb77622-7508-4630-9830-aa07b196eebc",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2020-06-23T16:10:57.781+02:00"),
			IssuerConnector: "https://test.connector.de/",
			SenderAgent:     "http://example.org",
			SecurityToken:   "eyJ0eXAiOiJKV1QiLCJraWQiOiJkZWZhdWx0IiwiYWxnIjoiUlMyNTYifQ...",
		},
		extraKeys:   []string{"ids:queryLanguage", "ids:queryScope"},
		payloadType: "text/plain",
		payload: "PREFIX ids: <https://w3id.org/idsa/core/>\n" +
			"SELECT ?connectorUri ?version WHERE {\n" +
			"  ?connectorUri a ids:BaseConnector;\n" +
			"  ids:inboundModelVersion ?version .\n" +
			"}",
	},
	{
		// §4.2.3: Clearing House LogMessage request; Content-Type from the
		// listing's HTTP header. No blank line after the part headers.
		file:        "ids-g_clearinghouse-log.multipart",
		contentType: "multipart/form-data; boundary=X-TEST-REQUEST-BOUNDARY",
		want: Message{
			Type:            "ids:LogMessage",
			ID:              "https://w3id.org/idsa/autogen/logMessage/c6c15a90-7799-4aa1-ac21-9323b87a7xv9",
			ModelVersion:    "4.1.0",
			Issued:          mustTime("2020-12-14T08:57:57.057+01:00"),
			IssuerConnector: "https://companyA.com/connector/59a68243-dd96-4c8d-88a9-0f0e03e13b1b",
			SenderAgent:     "http://example.org",
			SecurityToken:   "eyJ0eXAiOiJKV1QiLCJraWQiOiJkZWZhdWx0IiwiYWxnIjoi.....",
		},
		payloadType: "application/json",
		payloadHas:  []string{"{\n  \"@context\" : \"https://w3id.org/idsa/contexts/context.jsonld\",\n  \"@type\" : \"ids:ConnectorUpdateMessage\",", "    \"tokenValue\" : \"eyJhbGciOiJSUzI1NiIsInR5cCI...\"\n}"},
	},
	{
		// §4.2.4: Clearing House ResultMessage response.
		file:        "ids-g_clearinghouse-result.multipart",
		contentType: "multipart/form-data; boundary=336749cd-8331-46b4-b75d-d9d2ae80e3ac",
		want: Message{
			Type:               "ids:ResultMessage",
			ID:                 "https://w3id.org/idsa/autogen/ResultMessage/cfe8bd4f-c8b5-42e4-aaae-1f594fa80719",
			ModelVersion:       "4.1.0",
			Issued:             mustTime("2021-07-20T12:50:04.916Z"),
			IssuerConnector:    "https://clearinghouse.aisec.fraunhofer.de/",
			SenderAgent:        "https://clearinghouse.aisec.fraunhofer.de",
			RecipientConnector: []string{"https://broker.ids.isst.fraunhofer.de/"},
			RecipientAgent:     []string{"http://example.org"},
			CorrelationMessage: "https://w3id.org/idsa/autogen/logMessage/c6c15a90-7799-4aa1-ac21-9323b87a7xv9",
			SecurityToken:      "eyJ0eXAiOiJKV1QiLCJraWQiOi...",
		},
		payloadType: "application/json",
		payloadHas:  []string{"[\n  {\n    \"@context\": {", "    \"payload_type\": \"\\\"text/plain\\\"\"\n  }\n]"},
	},
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSeedExamples(t *testing.T) {
	for _, ex := range seedExamples {
		t.Run(ex.file, func(t *testing.T) {
			body := readTestdata(t, ex.file)
			mp, err := ReadMultipart(ex.contentType, bytes.NewReader(body), 1<<20)
			if err != nil {
				t.Fatalf("ReadMultipart: %v", err)
			}
			switch {
			case ex.payloadNil:
				if mp.Payload != nil {
					t.Errorf("payload = %q, want none", mp.Payload)
				}
			case ex.payloadHas != nil:
				if !bytes.HasPrefix(mp.Payload, []byte(ex.payloadHas[0])) || !bytes.HasSuffix(mp.Payload, []byte(ex.payloadHas[1])) {
					t.Errorf("payload = %q, want %q ... %q", mp.Payload, ex.payloadHas[0], ex.payloadHas[1])
				}
			default:
				if string(mp.Payload) != ex.payload {
					t.Errorf("payload = %q, want %q", mp.Payload, ex.payload)
				}
			}
			if mp.PayloadType != ex.payloadType {
				t.Errorf("payload type = %q, want %q", mp.PayloadType, ex.payloadType)
			}
			m, err := Parse(mp.Header)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, mp.Header)
			}
			if err := sameMessage(m, &ex.want, false); err != "" {
				t.Error(err)
			}
			if got := sortedKeys(m.Extra); strings.Join(got, ",") != strings.Join(ex.extraKeys, ",") {
				t.Errorf("Extra keys = %v, want %v", got, ex.extraKeys)
			}
			roundTrip(t, m)

			// Through the sidecar's own writer and back.
			var buf bytes.Buffer
			ct, err := WriteMultipart(&buf, mp)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ReadMultipart(ct, &buf, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Header, mp.Header) || !bytes.Equal(back.Payload, mp.Payload) || (back.Payload == nil) != (mp.Payload == nil) {
				t.Errorf("WriteMultipart/ReadMultipart changed the message")
			}
		})
	}
}

// TestSeedExamplesMixed sends each seed example as multipart/mixed with
// CRLF line endings: the binding allows both media types.
func TestSeedExamplesMixed(t *testing.T) {
	for _, ex := range seedExamples {
		t.Run(ex.file, func(t *testing.T) {
			_, params, _ := mime.ParseMediaType(ex.contentType)
			body := bytes.ReplaceAll(readTestdata(t, ex.file), []byte("\n"), []byte("\r\n"))
			mp, err := ReadMultipart("multipart/mixed; boundary="+params["boundary"], bytes.NewReader(body), 1<<20)
			if err != nil {
				t.Fatalf("ReadMultipart: %v", err)
			}
			m, err := Parse(mp.Header)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != ex.want.Type || m.ID != ex.want.ID {
				t.Errorf("got %s %s", m.Type, m.ID)
			}
		})
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMultipartRoundTrip(t *testing.T) {
	header := []byte(`{"@context":{"ids":"https://w3id.org/idsa/core/"},"@type":"ids:ArtifactRequestMessage"}`)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tricky := []byte("--\r\n--x\r\n\r\n--boundary\n--\n\r\n") // delimiter-like lines inside the payload
	cases := []struct {
		name    string
		payload []byte
		ptype   string
	}{
		{"no payload", nil, ""},
		{"empty payload", []byte{}, "text/plain"},
		{"all byte values", all, "application/octet-stream"},
		{"delimiter-like lines", tricky, "text/plain; charset=utf-8"},
		{"trailing CRLF kept", []byte("line\r\n"), "text/plain"},
		{"4 MiB random", randomBytes(t, 4<<20+17), "application/octet-stream"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &Multipart{Header: header, Payload: c.payload, PayloadType: c.ptype}
			var buf bytes.Buffer
			ct, err := WriteMultipart(&buf, in)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ct, "multipart/form-data; boundary=") {
				t.Errorf("Content-Type = %q", ct)
			}
			wire := buf.Bytes()

			// The standard library's reader agrees with what we wrote.
			_, params, _ := mime.ParseMediaType(ct)
			mr := multipart.NewReader(bytes.NewReader(wire), params["boundary"])
			p, err := mr.NextPart()
			if err != nil || p.FormName() != "header" || p.Header.Get("Content-Type") != "application/ld+json" {
				t.Fatalf("stdlib: first part %v %v", p, err)
			}
			if b, _ := io.ReadAll(p); !bytes.Equal(b, header) {
				t.Errorf("stdlib: header part %q", b)
			}
			if c.payload != nil {
				p, err = mr.NextPart()
				if err != nil || p.FormName() != "payload" {
					t.Fatalf("stdlib: second part %v", err)
				}
				wantType := c.ptype
				if wantType == "" {
					wantType = "application/octet-stream"
				}
				if p.Header.Get("Content-Type") != wantType {
					t.Errorf("stdlib: payload Content-Type %q", p.Header.Get("Content-Type"))
				}
				if b, _ := io.ReadAll(p); !bytes.Equal(b, c.payload) {
					t.Errorf("stdlib: payload differs")
				}
			}
			if _, err := mr.NextPart(); err != io.EOF {
				t.Errorf("stdlib: want EOF after the parts, got %v", err)
			}

			out, err := ReadMultipart(ct, bytes.NewReader(wire), int64(len(wire)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Header, header) {
				t.Errorf("header %q", out.Header)
			}
			if (out.Payload == nil) != (c.payload == nil) || !bytes.Equal(out.Payload, c.payload) {
				t.Errorf("payload differs (len %d, want %d)", len(out.Payload), len(c.payload))
			}
		})
	}
}

// TestReadMultipartForeign reads bodies written by other producers: the
// standard library's form writer, multipart/mixed with and without part
// names, transfer encodings, preamble and epilogue.
func TestReadMultipartForeign(t *testing.T) {
	header := `{"@type":"ids:QueryMessage"}`
	bin := randomBytes(t, 3<<20)
	cases := []struct {
		name, ct, body string
		header         string
		payload        []byte
		ptype          string
	}{
		{
			name:    "mixed with names, CRLF, preamble and epilogue",
			ct:      `multipart/mixed; boundary="b 1"`,
			body:    "preamble\r\n--b 1\r\nContent-Disposition: form-data; name=\"header\"\r\nContent-Type: application/ld+json\r\n\r\n" + header + "\r\n--b 1 \t\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: text/plain\r\n\r\nSELECT *\r\n--b 1--\r\nepilogue",
			header:  header,
			payload: []byte("SELECT *"),
			ptype:   "text/plain",
		},
		{
			name:    "mixed without names: header first",
			ct:      "multipart/mixed; boundary=zz",
			body:    "--zz\r\nContent-Type: application/json\r\n\r\n" + header + "\r\n--zz\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--zz--",
			header:  header,
			payload: []byte("\x00\x01"),
			ptype:   "application/octet-stream",
		},
		{
			name:    "payload before header, names decide",
			ct:      "multipart/form-data; boundary=zz",
			body:    "--zz\r\nContent-Disposition: form-data; name=payload\r\n\r\np\r\n--zz\r\nContent-Disposition: form-data; name=header\r\n\r\n" + header + "\r\n--zz--\r\n",
			header:  header,
			payload: []byte("p"),
		},
		{
			name:    "base64 and quoted-printable parts",
			ct:      "multipart/form-data; boundary=zz",
			body:    "--zz\r\nContent-Disposition: form-data; name=header\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{\"@type\":\"ids:Query=\r\nMessage\"}\r\n--zz\r\nContent-Disposition: form-data; name=payload\r\nContent-Transfer-Encoding: BASE64\r\n\r\n" + wrap76(base64.StdEncoding.EncodeToString(bin)) + "\r\n--zz--\r\n",
			header:  header,
			payload: bin,
		},
		{
			name:    "folded part header",
			ct:      "multipart/form-data; boundary=zz",
			body:    "--zz\r\nContent-Disposition: form-data;\r\n name=\"header\"\r\n\r\n" + header + "\r\n--zz--",
			header:  header,
			payload: nil,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mp, err := ReadMultipart(c.ct, strings.NewReader(c.body), 8<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(mp.Header) != c.header {
				t.Errorf("header = %q", mp.Header)
			}
			if (mp.Payload == nil) != (c.payload == nil) || !bytes.Equal(mp.Payload, c.payload) {
				t.Errorf("payload = %.40q (len %d), want len %d", mp.Payload, len(mp.Payload), len(c.payload))
			}
			if mp.PayloadType != c.ptype {
				t.Errorf("payload type = %q, want %q", mp.PayloadType, c.ptype)
			}
		})
	}

	// The standard library's form writer.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormField("header")
	fw.Write([]byte(header))
	pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Disposition": {`form-data; name="payload"; filename="x.bin"`}, "Content-Type": {"image/png"}})
	pw.Write(bin)
	mw.Close()
	mp, err := ReadMultipart(mw.FormDataContentType(), &buf, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if string(mp.Header) != header || !bytes.Equal(mp.Payload, bin) || mp.PayloadType != "image/png" {
		t.Errorf("stdlib form: got header %q, payload len %d, type %q", mp.Header, len(mp.Payload), mp.PayloadType)
	}
}

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

func TestReadMultipartErrors(t *testing.T) {
	h := `{"@type":"ids:QueryMessage"}`
	form := "multipart/form-data; boundary=zz"
	part := func(name, body string) string {
		return "--zz\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + body + "\r\n"
	}
	cases := []struct {
		name, ct, body, field string
	}{
		{"unparseable Content-Type", "multipart/form-data; boundary", "", "Content-Type"},
		{"not multipart", "application/json", h, "Content-Type"},
		{"other multipart", "multipart/related; boundary=zz", part("header", h) + "--zz--", "Content-Type"},
		{"no boundary", "multipart/form-data", part("header", h) + "--zz--", "boundary"},
		{"boundary too long", "multipart/form-data; boundary=" + strings.Repeat("b", 71), "", "boundary"},
		{"boundary not in body", "multipart/form-data; boundary=yy", part("header", h) + "--zz--", "boundary"},
		{"boundary only as a prefix", "multipart/form-data; boundary=z", part("header", h) + "--zz--", "boundary"},
		{"empty body", form, "", "boundary"},
		{"missing header part", form, part("payload", "x") + "--zz--", "header"},
		{"no parts", form, "--zz--", "header"},
		{"header not JSON", form, part("header", "<xml/>") + "--zz--", "header"},
		{"header truncated JSON", form, part("header", `{"@type":`) + "--zz--", "header"},
		{"header a JSON array", form, part("header", `[{}]`) + "--zz--", "header"},
		{"two header parts", form, part("header", h) + part("header", h) + "--zz--", "header"},
		{"two payload parts", form, part("header", h) + part("payload", "a") + part("payload", "b") + "--zz--", "payload"},
		{"unexpected part", form, part("header", h) + part("file", "a") + "--zz--", "multipart"},
		{"three unnamed parts", "multipart/mixed; boundary=zz", "--zz\r\n\r\n" + h + "\r\n--zz\r\n\r\na\r\n--zz\r\n\r\nb\r\n--zz--", "multipart"},
		{"bad Content-Disposition", form, "--zz\r\nContent-Disposition: form-data; name=\"header\r\n\r\n" + h + "\r\n--zz--", "Content-Disposition"},
		{"unknown transfer encoding", form, "--zz\r\nContent-Disposition: form-data; name=header\r\nContent-Transfer-Encoding: x-gzip\r\n\r\n" + h + "\r\n--zz--", "Content-Transfer-Encoding"},
		{"bad base64", form, "--zz\r\nContent-Disposition: form-data; name=header\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--zz--", "Content-Transfer-Encoding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadMultipart(c.ct, strings.NewReader(c.body), 1<<20)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *ParseError", err)
			}
			if pe.Field != c.field {
				t.Errorf("Field = %q (%v), want %q", pe.Field, err, c.field)
			}
		})
	}
}

func TestReadMultipartLimit(t *testing.T) {
	var buf bytes.Buffer
	ct, err := WriteMultipart(&buf, &Multipart{Header: []byte(`{"@type":"ids:Message"}`), Payload: randomBytes(t, 2<<20)})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(buf.Len())
	if _, err := ReadMultipart(ct, bytes.NewReader(buf.Bytes()), n); err != nil {
		t.Errorf("body of exactly the limit: %v", err)
	}
	_, err = ReadMultipart(ct, bytes.NewReader(buf.Bytes()), n-1)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("one byte over the limit: err = %v, want ErrTooLarge", err)
	}
	var pe *ParseError
	if errors.As(err, &pe) {
		t.Errorf("ErrTooLarge must not be a *ParseError (callers map it to 413, not 400)")
	}
	// The limit stops reading: an endless body is not read to the end.
	_, err = ReadMultipart(ct, io.MultiReader(bytes.NewReader(buf.Bytes()), zeros{}), 4<<20)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("endless body: %v", err)
	}
	// A read error is passed on.
	boom := errors.New("boom")
	if _, err := ReadMultipart(ct, io.MultiReader(bytes.NewReader(buf.Bytes()[:100]), errReader{boom}), 4<<20); !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestWriteMultipartErrors(t *testing.T) {
	if _, err := WriteMultipart(io.Discard, nil); err == nil {
		t.Error("nil message accepted")
	}
	for _, pt := range []string{"text/plain\r\nX-Evil: 1", "not a type", "text/"} {
		_, err := WriteMultipart(io.Discard, &Multipart{Header: []byte("{}"), Payload: []byte("x"), PayloadType: pt})
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Field != "payload" {
			t.Errorf("PayloadType %q: err = %v", pt, err)
		}
	}
	_, err := WriteMultipartBoundary(io.Discard, &Multipart{Header: []byte("{}"), Payload: []byte("a\r\n--abc\r\n")}, "abc")
	if err == nil {
		t.Error("payload containing the delimiter accepted")
	}
	// Content-Type first, body second, as an HTTP handler needs.
	b := NewMultipartBoundary()
	var buf bytes.Buffer
	ct, err := WriteMultipartBoundary(&buf, &Multipart{Header: []byte("{}")}, b)
	if err != nil || ct != MultipartContentType(b) {
		t.Errorf("WriteMultipartBoundary: %q %v", ct, err)
	}
}
