package idsmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func sortedKeys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func compactJSON(v json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return "INVALID:" + string(v)
	}
	return b.String()
}

// sameMessage compares every exported field (Issued as an instant, Extra
// semantically when withExtra) and returns a description of the first
// difference.
func sameMessage(got, want *Message, withExtra bool) string {
	type f struct {
		name      string
		got, want any
	}
	fields := []f{
		{"Type", got.Type, want.Type},
		{"ID", got.ID, want.ID},
		{"ModelVersion", got.ModelVersion, want.ModelVersion},
		{"IssuerConnector", got.IssuerConnector, want.IssuerConnector},
		{"SenderAgent", got.SenderAgent, want.SenderAgent},
		{"RecipientConnector", fmt.Sprint(got.RecipientConnector), fmt.Sprint(want.RecipientConnector)},
		{"RecipientAgent", fmt.Sprint(got.RecipientAgent), fmt.Sprint(want.RecipientAgent)},
		{"CorrelationMessage", got.CorrelationMessage, want.CorrelationMessage},
		{"SecurityToken", got.SecurityToken, want.SecurityToken},
		{"TransferContract", got.TransferContract, want.TransferContract},
		{"RejectionReason", got.RejectionReason, want.RejectionReason},
	}
	for _, x := range fields {
		if x.got != x.want {
			return fmt.Sprintf("%s = %q, want %q", x.name, x.got, x.want)
		}
	}
	if !got.Issued.Equal(want.Issued) {
		return fmt.Sprintf("Issued = %v, want %v", got.Issued, want.Issued)
	}
	if withExtra {
		if len(got.Extra) != len(want.Extra) {
			return fmt.Sprintf("Extra keys = %v, want %v", sortedKeys(got.Extra), sortedKeys(want.Extra))
		}
		for k, v := range want.Extra {
			if compactJSON(got.Extra[k]) != compactJSON(v) {
				return fmt.Sprintf("Extra[%q] = %s, want %s", k, got.Extra[k], v)
			}
		}
	}
	return ""
}

// roundTrip checks Parse(Marshal(m)) == m, every field and Extra, and that
// Marshal is deterministic and idempotent.
func roundTrip(t *testing.T, m *Message) []byte {
	t.Helper()
	out, err := m.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
	}
	if d := sameMessage(back, m, true); d != "" {
		t.Errorf("round trip: %s\n%s", d, out)
	}
	again, err := back.Marshal()
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("Marshal is not stable:\n%s\n%s", out, again)
	}
	return out
}

func TestParseInfomodelGraph(t *testing.T) {
	// InformationModel examples/CONNECTOR_UPDATE_MESSAGE.jsonld: @graph,
	// dct:issued with a compact xsd: type, the token as a node reference,
	// recipientConnector as a single object, extra context prefixes.
	m, err := Parse(readTestdata(t, "infomodel_connector-update.jsonld"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Message{
		Type:               "ids:ConnectorUpdateMessage",
		ID:                 "https://aastat.gov.de/message/inter1",
		ModelVersion:       "4.1.0",
		Issued:             mustTime("2020-06-08T12:10:13Z"),
		IssuerConnector:    "https://aastat.gov.de/connector/conn2/",
		SenderAgent:        "https://astaat.gov.de/connector/senderAgent",
		RecipientConnector: []string{"https://aastat.gov.de/broker/broker1/"},
		SecurityToken:      "Some token goes here",
		Extra:              map[string]json.RawMessage{"ids:affectedConnector": json.RawMessage(`{"@id":"https://aastat.gov.de/connector/conn2/"}`)},
	}
	if d := sameMessage(m, want, true); d != "" {
		t.Error(d)
	}
	out := roundTrip(t, m)
	// The extra prefixes of the input context are kept.
	if !bytes.Contains(out, []byte(`"dct":"http://purl.org/dc/terms/"`)) {
		t.Errorf("context prefixes lost: %s", out)
	}
}

func TestParseRejectionExample(t *testing.T) {
	// ecosystem.md §4.4: the constructed RejectionMessage header.
	m, err := Parse(readTestdata(t, "ecosystem_rejection.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Message{
		Type:               "ids:RejectionMessage",
		ID:                 "https://w3id.org/idsa/autogen/rejectionMessage/5b1f0c52-0f1e-4b5e-9a53-7d1f4f6f2c11",
		ModelVersion:       "4.2.7",
		Issued:             mustTime("2024-06-10T08:00:00Z"),
		IssuerConnector:    "https://connector-b.example.org/",
		SenderAgent:        "https://connector-b.example.org/",
		RecipientConnector: []string{"https://connector-a.example.org/"},
		CorrelationMessage: "https://w3id.org/idsa/autogen/artifactRequestMessage/0f6d...",
		SecurityToken:      "eyJ...",
		RejectionReason:    NotAuthenticated,
	}
	if d := sameMessage(m, want, true); d != "" {
		t.Error(d)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if StatusForRejection(m.RejectionReason) != 401 {
		t.Error("NOT_AUTHENTICATED is not 401")
	}
	roundTrip(t, m)
}

// The same ArtifactRequestMessage written in every style Parse accepts.
func TestParseStyles(t *testing.T) {
	want := &Message{
		Type:               "ids:ArtifactRequestMessage",
		ID:                 "https://w3id.org/idsa/autogen/artifactRequestMessage/6f1c2b9e-3c3e-4f0e-9d43-1a2b3c4d5e6f",
		ModelVersion:       "4.2.7",
		Issued:             mustTime("2024-06-10T10:00:00.123+02:00"),
		IssuerConnector:    "https://connector-a.example.org/",
		SenderAgent:        "https://connector-a.example.org/agent",
		RecipientConnector: []string{"https://connector-b.example.org/"},
		RecipientAgent:     []string{"https://connector-b.example.org/agent", "https://connector-b.example.org/agent2"},
		CorrelationMessage: "https://w3id.org/idsa/autogen/descriptionResponseMessage/1",
		SecurityToken:      "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
		TransferContract:   "https://connector-b.example.org/contract/7",
		Extra: map[string]json.RawMessage{
			"ids:requestedArtifact": json.RawMessage(`{"@id":"https://connector-b.example.org/artifact/1"}`),
			"ids:contentVersion":    json.RawMessage(`"1.0"`),
		},
	}
	styles := map[string]string{
		"java serializer (ids: prefixes)": `{
		  "@context" : { "ids" : "https://w3id.org/idsa/core/", "idsc" : "https://w3id.org/idsa/code/" },
		  "@type" : "ids:ArtifactRequestMessage",
		  "@id" : "https://w3id.org/idsa/autogen/artifactRequestMessage/6f1c2b9e-3c3e-4f0e-9d43-1a2b3c4d5e6f",
		  "ids:modelVersion" : "4.2.7",
		  "ids:issued" : { "@value" : "2024-06-10T10:00:00.123+02:00", "@type" : "http://www.w3.org/2001/XMLSchema#dateTimeStamp" },
		  "ids:issuerConnector" : { "@id" : "https://connector-a.example.org/" },
		  "ids:senderAgent" : { "@id" : "https://connector-a.example.org/agent" },
		  "ids:recipientConnector" : [ { "@id" : "https://connector-b.example.org/" } ],
		  "ids:recipientAgent" : [ { "@id" : "https://connector-b.example.org/agent" }, { "@id" : "https://connector-b.example.org/agent2" } ],
		  "ids:correlationMessage" : { "@id" : "https://w3id.org/idsa/autogen/descriptionResponseMessage/1" },
		  "ids:securityToken" : { "@type" : "ids:DynamicAttributeToken", "@id" : "https://w3id.org/idsa/autogen/dynamicAttributeToken/1",
		      "ids:tokenFormat" : { "@id" : "idsc:JWT" }, "ids:tokenValue" : "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" },
		  "ids:transferContract" : { "@id" : "https://connector-b.example.org/contract/7" },
		  "ids:requestedArtifact" : { "@id" : "https://connector-b.example.org/artifact/1" },
		  "ids:contentVersion" : "1.0"
		}`,
		"remote context, unprefixed keys, plain strings": `{
		  "@context" : "https://w3id.org/idsa/contexts/context.jsonld",
		  "@type" : "ArtifactRequestMessage",
		  "@id" : "https://w3id.org/idsa/autogen/artifactRequestMessage/6f1c2b9e-3c3e-4f0e-9d43-1a2b3c4d5e6f",
		  "modelVersion" : "4.2.7",
		  "issued" : "2024-06-10T10:00:00.123+02:00",
		  "issuerConnector" : "https://connector-a.example.org/",
		  "senderAgent" : "https://connector-a.example.org/agent",
		  "recipientConnector" : "https://connector-b.example.org/",
		  "recipientAgent" : [ "https://connector-b.example.org/agent", { "@id" : "https://connector-b.example.org/agent2" } ],
		  "correlationMessage" : [ { "@id" : "https://w3id.org/idsa/autogen/descriptionResponseMessage/1" } ],
		  "securityToken" : { "@type" : "DynamicAttributeToken", "tokenFormat" : "https://w3id.org/idsa/code/JWT",
		      "tokenValue" : { "@value" : "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" } },
		  "transferContract" : "https://connector-b.example.org/contract/7",
		  "requestedArtifact" : { "@id" : "https://connector-b.example.org/artifact/1" },
		  "contentVersion" : "1.0"
		}`,
		"full IRIs, no context, dct:issued": `{
		  "@type" : "https://w3id.org/idsa/core/ArtifactRequestMessage",
		  "@id" : "https://w3id.org/idsa/autogen/artifactRequestMessage/6f1c2b9e-3c3e-4f0e-9d43-1a2b3c4d5e6f",
		  "https://w3id.org/idsa/core/modelVersion" : { "@value" : "4.2.7" },
		  "http://purl.org/dc/terms/issued" : { "@value" : "2024-06-10T08:00:00.123Z", "@type" : "xsd:dateTimeStamp" },
		  "https://w3id.org/idsa/core/issuerConnector" : { "@id" : "https://connector-a.example.org/" },
		  "https://w3id.org/idsa/core/senderAgent" : { "@id" : "https://connector-a.example.org/agent" },
		  "https://w3id.org/idsa/core/recipientConnector" : { "@id" : "https://connector-b.example.org/" },
		  "https://w3id.org/idsa/core/recipientAgent" : [ { "@id" : "https://connector-b.example.org/agent" }, { "@id" : "https://connector-b.example.org/agent2" } ],
		  "https://w3id.org/idsa/core/correlationMessage" : { "@id" : "https://w3id.org/idsa/autogen/descriptionResponseMessage/1" },
		  "https://w3id.org/idsa/core/securityToken" : { "https://w3id.org/idsa/core/tokenValue" : "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" },
		  "https://w3id.org/idsa/core/transferContract" : { "@id" : "https://connector-b.example.org/contract/7" },
		  "https://w3id.org/idsa/core/requestedArtifact" : { "@id" : "https://connector-b.example.org/artifact/1" },
		  "https://w3id.org/idsa/core/contentVersion" : "1.0"
		}`,
		"context array, own prefix names": `{
		  "@context" : [ "https://w3id.org/idsa/contexts/context.jsonld", { "core" : "https://w3id.org/idsa/core/", "a" : "https://connector-a.example.org/" } ],
		  "@type" : "core:ArtifactRequestMessage",
		  "@id" : "https://w3id.org/idsa/autogen/artifactRequestMessage/6f1c2b9e-3c3e-4f0e-9d43-1a2b3c4d5e6f",
		  "core:modelVersion" : "4.2.7",
		  "core:issued" : { "@value" : "2024-06-10T10:00:00.123+02:00", "@type" : "xsd:dateTime" },
		  "core:issuerConnector" : { "@id" : "a:" },
		  "core:senderAgent" : { "@id" : "a:agent" },
		  "recipientConnector" : [ "https://connector-b.example.org/" ],
		  "ids:recipientAgent" : [ "https://connector-b.example.org/agent", "https://connector-b.example.org/agent2" ],
		  "correlationMessage" : "https://w3id.org/idsa/autogen/descriptionResponseMessage/1",
		  "ids:securityToken" : { "core:tokenValue" : "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" },
		  "transferContract" : "https://connector-b.example.org/contract/7",
		  "core:requestedArtifact" : { "@id" : "https://connector-b.example.org/artifact/1" },
		  "contentVersion" : "1.0"
		}`,
	}
	for name, doc := range styles {
		t.Run(name, func(t *testing.T) {
			m, err := Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if d := sameMessage(m, want, true); d != "" {
				t.Error(d)
			}
			roundTrip(t, m)
		})
	}
}

func TestParseKeepsUnknownKeys(t *testing.T) {
	doc := `{"@context":{"ids":"https://w3id.org/idsa/core/","idsc":"https://w3id.org/idsa/code/","ex":"https://example.org/ns#"},
	  "@type":"ids:QueryMessage",
	  "ids:queryLanguage":{"@id":"idsc:SPARQL"},
	  "ex:note":{"@value":"x","@language":"en"},
	  "https://example.org/other":[1,2,{"a":null}],
	  "dct:title":"t",
	  "@reverse":{}}`
	m, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"@reverse", "ex:note", "http://purl.org/dc/terms/title", "https://example.org/other", "ids:queryLanguage"}
	if got := sortedKeys(m.Extra); !slices.Equal(got, wantKeys) {
		t.Errorf("Extra keys = %v, want %v", got, wantKeys)
	}
	out := roundTrip(t, m)
	if !bytes.Contains(out, []byte(`"ex":"https://example.org/ns#"`)) {
		t.Errorf("prefix ex not re-emitted: %s", out)
	}
}

func TestParseErrors(t *testing.T) {
	ctx := `"@context":{"ids":"https://w3id.org/idsa/core/","idsc":"https://w3id.org/idsa/code/"},`
	typ := `"@type":"ids:RequestMessage"`
	cases := []struct {
		name, doc, field string
	}{
		{"empty", ``, "header"},
		{"not JSON", `<ids:Message/>`, "header"},
		{"array", `[{"@type":"ids:RequestMessage"}]`, "header"},
		{"trailing data", `{` + typ + `} {}`, "header"},
		{"duplicate key", `{` + typ + `,` + typ + `}`, "header"},
		{"invalid UTF-8", "{\"@type\":\"ids:Request\xffMessage\"}", "header"},
		{"missing @type", `{` + ctx + `"@id":"https://x/1"}`, "@type"},
		{"@type a number", `{"@type":1}`, "@type"},
		{"@type two values", `{"@type":["ids:A","ids:B"]}`, "@type"},
		{"@id not an IRI", `{` + typ + `,"@id":"not an iri"}`, "@id"},
		{"@id relative", `{` + typ + `,"@id":"msg/1"}`, "@id"},
		{"bad @context", `{"@context":5,` + typ + `}`, "@context"},
		{"issued not a date", `{` + typ + `,"ids:issued":{"@value":"yesterday"}}`, "issued"},
		{"issued without zone", `{` + typ + `,"ids:issued":"2024-06-10T10:00:00"}`, "issued"},
		{"issued wrong @type", `{` + typ + `,"ids:issued":{"@value":"2024-06-10T10:00:00Z","@type":"xsd:string"}}`, "issued"},
		{"issued with a one-digit hour", `{` + typ + `,"ids:issued":"2024-06-10T8:00:00Z"}`, "issued"},
		{"issued before year 0 in UTC", `{` + typ + `,"ids:issued":"0000-01-01T00:30:00+01:00"}`, "issued"},
		{"issued @value spelled in another case", `{` + typ + `,"ids:issued":{"@vAlue":"2024-06-10T08:00:00Z"}}`, "issued"},
		{"issuerConnector @id spelled in another case", `{` + typ + `,"ids:issuerConnector":{"@ID":"https://a/"}}`, "issuerConnector"},
		{"issued a number", `{` + typ + `,"ids:issued":1718000000}`, "issued"},
		{"issued and dct:issued", `{` + typ + `,"ids:issued":"2024-06-10T10:00:00Z","dct:issued":"2024-06-10T10:00:00Z"}`, "issued"},
		{"issued unprefixed and prefixed", `{` + typ + `,"issued":"2024-06-10T10:00:00Z","ids:issued":"2024-06-10T10:00:00Z"}`, "issued"},
		{"modelVersion an object without @value", `{` + typ + `,"ids:modelVersion":{"v":"4"}}`, "modelVersion"},
		{"modelVersion with a newline", `{` + typ + `,"ids:modelVersion":"4\n2"}`, "modelVersion"},
		{"issuerConnector a number", `{` + typ + `,"ids:issuerConnector":42}`, "issuerConnector"},
		{"issuerConnector without @id", `{` + typ + `,"ids:issuerConnector":{"@value":"https://a/"}}`, "issuerConnector"},
		{"issuerConnector two values", `{` + typ + `,"ids:issuerConnector":[{"@id":"https://a/"},{"@id":"https://b/"}]}`, "issuerConnector"},
		{"issuerConnector with a space", `{` + typ + `,"ids:issuerConnector":{"@id":"https://a/ b"}}`, "issuerConnector"},
		{"senderAgent with CRLF", `{` + typ + `,"ids:senderAgent":"https://a/\r\nX: y"}`, "senderAgent"},
		{"recipientConnector a string list with a bad entry", `{` + typ + `,"ids:recipientConnector":["https://a/",""]}`, "recipientConnector"},
		{"recipientAgent nested array", `{` + typ + `,"ids:recipientAgent":[["https://a/"]]}`, "recipientAgent"},
		{"correlationMessage a bool", `{` + typ + `,"ids:correlationMessage":true}`, "correlationMessage"},
		{"transferContract empty", `{` + typ + `,"ids:transferContract":{"@id":""}}`, "transferContract"},
		{"rejectionReason a number", `{` + typ + `,"ids:rejectionReason":3}`, "rejectionReason"},
		{"securityToken a string", `{` + typ + `,"ids:securityToken":"eyJ"}`, "securityToken"},
		{"securityToken without tokenValue", `{` + typ + `,"ids:securityToken":{"@type":"ids:DynamicAttributeToken"}}`, "securityToken"},
		{"securityToken value a number", `{` + typ + `,"ids:securityToken":{"ids:tokenValue":1}}`, "securityToken"},
		{"securityToken with a newline", `{` + typ + `,"ids:securityToken":{"ids:tokenValue":"a\nb"}}`, "securityToken"},
		{"securityToken dangling reference", `{` + typ + `,"ids:securityToken":{"@id":"_:b0"}}`, "securityToken"},
		{"@graph without message", `{"@graph":[{"@id":"_:a","@type":"ids:DynamicAttributeToken"}]}`, "@graph"},
		{"@graph two messages", `{"@graph":[{"@type":"ids:RequestMessage"},{"@type":"ids:ResponseMessage"}]}`, "@graph"},
		{"@graph not an array", `{"@graph":{"@type":"ids:RequestMessage"}}`, "@graph"},
		{"@graph beside properties", `{"@graph":[{"@type":"ids:RequestMessage"}],"ids:modelVersion":"4"}`, "@graph"},
		{"Extra key twice in two spellings", `{` + typ + `,"requestedElement":"https://a/","ids:requestedElement":"https://a/"}`, "requestedElement"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse([]byte(c.doc))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %+v, %v; want *ParseError", m, err)
			}
			if pe.Field != c.field {
				t.Errorf("Field = %q (%v), want %q", pe.Field, err, c.field)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q does not name %q", err, c.field)
			}
		})
	}
}

func TestMarshalShape(t *testing.T) {
	m := &Message{
		Type:               "ids:ArtifactResponseMessage",
		ID:                 "https://w3id.org/idsa/autogen/artifactResponseMessage/00000000-0000-4000-8000-000000000001",
		ModelVersion:       ModelVersion,
		Issued:             time.Date(2024, 6, 10, 10, 0, 0, 5e6, time.FixedZone("", 2*3600)),
		IssuerConnector:    "https://b.example/",
		SenderAgent:        "https://b.example/agent",
		RecipientConnector: []string{"https://a.example/"},
		RecipientAgent:     []string{"https://a.example/agent"},
		CorrelationMessage: "https://w3id.org/idsa/autogen/artifactRequestMessage/1",
		SecurityToken:      "eyJ.x.y",
		TransferContract:   "https://b.example/contract?a=1&b=<2>",
		Extra:              map[string]json.RawMessage{"ids:contentVersion": json.RawMessage(` "1" `), "requestedArtifact": json.RawMessage(`{"@id" : "https://b/x"}`)},
	}
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"@context":{"ids":"https://w3id.org/idsa/core/","idsc":"https://w3id.org/idsa/code/"},` +
		`"@type":"ids:ArtifactResponseMessage",` +
		`"@id":"https://w3id.org/idsa/autogen/artifactResponseMessage/00000000-0000-4000-8000-000000000001",` +
		`"ids:modelVersion":"4.2.7",` +
		`"ids:issued":{"@value":"2024-06-10T08:00:00.005Z","@type":"http://www.w3.org/2001/XMLSchema#dateTimeStamp"},` +
		`"ids:issuerConnector":{"@id":"https://b.example/"},` +
		`"ids:senderAgent":{"@id":"https://b.example/agent"},` +
		`"ids:recipientConnector":[{"@id":"https://a.example/"}],` +
		`"ids:recipientAgent":[{"@id":"https://a.example/agent"}],` +
		`"ids:correlationMessage":{"@id":"https://w3id.org/idsa/autogen/artifactRequestMessage/1"},` +
		`"ids:transferContract":{"@id":"https://b.example/contract?a=1&b=<2>"},` +
		`"ids:securityToken":{"@type":"ids:DynamicAttributeToken","@id":"` + tokenID(m.ID, m.SecurityToken) + `","ids:tokenFormat":{"@id":"idsc:JWT"},"ids:tokenValue":"eyJ.x.y"},` +
		`"ids:contentVersion":"1",` +
		`"ids:requestedArtifact":{"@id":"https://b/x"}}`
	if string(got) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, want)
	}
	if !regexp.MustCompile(`^https://w3id.org/idsa/autogen/dynamicAttributeToken/[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(tokenID(m.ID, m.SecurityToken)) {
		t.Errorf("token @id %s", tokenID(m.ID, m.SecurityToken))
	}

	// Sub-millisecond precision is kept rather than rounded away.
	m2 := &Message{Type: "ids:Message", Issued: time.Date(2021, 7, 20, 12, 50, 4, 916267339, time.UTC)}
	out, _ := m2.Marshal()
	if !bytes.Contains(out, []byte(`"2021-07-20T12:50:04.916267339Z"`)) {
		t.Errorf("nanoseconds lost: %s", out)
	}

	// Minimal message: only what is set; bare type and reason get prefixes.
	m3 := &Message{Type: "RejectionMessage", RejectionReason: "NOT_FOUND"}
	out, _ = m3.Marshal()
	if string(out) != `{"@context":{"ids":"https://w3id.org/idsa/core/","idsc":"https://w3id.org/idsa/code/"},"@type":"ids:RejectionMessage","ids:rejectionReason":{"@id":"idsc:NOT_FOUND"}}` {
		t.Errorf("minimal: %s", out)
	}
}

func TestMarshalErrors(t *testing.T) {
	cases := map[string]*Message{
		"no type":              {},
		"Extra names a field":  {Type: "ids:Message", Extra: map[string]json.RawMessage{"ids:issued": json.RawMessage(`"x"`)}},
		"Extra unprefixed":     {Type: "ids:Message", Extra: map[string]json.RawMessage{"securityToken": json.RawMessage(`"x"`)}},
		"Extra full IRI field": {Type: "ids:Message", Extra: map[string]json.RawMessage{NSCore + "senderAgent": json.RawMessage(`"x"`)}},
		"Extra @type":          {Type: "ids:Message", Extra: map[string]json.RawMessage{"@type": json.RawMessage(`"x"`)}},
		"Extra not JSON":       {Type: "ids:Message", Extra: map[string]json.RawMessage{"ids:x": json.RawMessage(`{`)}},
		"year 10000":           {Type: "ids:Message", Issued: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for name, m := range cases {
		if out, err := m.Marshal(); err == nil {
			t.Errorf("%s: Marshal = %s, want an error", name, out)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^https://w3id\.org/idsa/autogen/([A-Za-z]+)/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for typ, want := range map[string]string{
		"ids:ArtifactRequestMessage":                 "artifactRequestMessage",
		"RejectionMessage":                           "rejectionMessage",
		"https://w3id.org/idsa/core/ResponseMessage": "responseMessage",
		"ids:DynamicAttributeToken":                  "dynamicAttributeToken",
		"":                                           "message",
		"https://w3id.org/idsa/core/RequestMessage#x": "x",
	} {
		id := NewID(typ)
		sub := re.FindStringSubmatch(id)
		if sub == nil || sub[1] != want {
			t.Errorf("NewID(%q) = %s, want .../%s/<uuid4>", typ, id, want)
		}
	}
	if NewID("ids:Message") == NewID("ids:Message") {
		t.Error("NewID repeats")
	}
}

func TestStampAndResponses(t *testing.T) {
	self := Self{ConnectorID: "https://b.example/", SenderAgent: "https://b.example/agent", Token: func() string { return "dat-b" }}
	req, err := Parse(readTestdata(t, "ecosystem_rejection.json")) // any parsed peer message
	if err != nil {
		t.Fatal(err)
	}
	req.Type = "ids:ArtifactRequestMessage"
	req.TransferContract = "https://a.example/contract/1"

	before := time.Now().Add(-time.Millisecond)
	resp := NewResponse("ids:ArtifactResponseMessage", req, self)
	if resp.Type != "ids:ArtifactResponseMessage" ||
		resp.CorrelationMessage != req.ID ||
		!slices.Equal(resp.RecipientConnector, []string{req.IssuerConnector}) ||
		!slices.Equal(resp.RecipientAgent, []string{req.SenderAgent}) ||
		resp.TransferContract != req.TransferContract ||
		resp.IssuerConnector != self.ConnectorID || resp.SenderAgent != self.SenderAgent ||
		resp.SecurityToken != "dat-b" || resp.ModelVersion != ModelVersion ||
		!strings.HasPrefix(resp.ID, "https://w3id.org/idsa/autogen/artifactResponseMessage/") ||
		resp.Issued.Before(before) || resp.Issued.After(time.Now()) || resp.Issued.Location() != time.UTC {
		t.Errorf("NewResponse = %+v", resp)
	}
	if err := resp.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	roundTrip(t, resp)

	// Stamp on a client's message: the client's token and identity are
	// replaced, its @id and model version kept.
	client := &Message{Type: "ids:QueryMessage", ID: "https://client/1", ModelVersion: "4.1.0",
		IssuerConnector: "https://evil/", SenderAgent: "https://evil/", SecurityToken: "stolen"}
	Self{ConnectorID: "https://a.example/", Token: func() string { return "dat-a" }}.Stamp(client)
	if client.ID != "https://client/1" || client.ModelVersion != "4.1.0" ||
		client.IssuerConnector != "https://a.example/" || client.SenderAgent != "https://a.example/" || client.SecurityToken != "dat-a" {
		t.Errorf("Stamp = %+v", client)
	}
	// No token source: the token is cleared, never kept.
	Self{}.Stamp(client)
	if client.SecurityToken != "" {
		t.Error("Stamp kept a foreign token")
	}
	Self{}.Stamp(nil) // no panic

	rej := NewRejection(req, NotAuthorized, self)
	if rej.Type != "ids:RejectionMessage" || rej.RejectionReason != NotAuthorized || rej.CorrelationMessage != req.ID {
		t.Errorf("NewRejection = %+v", rej)
	}
	out := roundTrip(t, rej)
	if !bytes.Contains(out, []byte(`"ids:rejectionReason":{"@id":"idsc:NOT_AUTHORIZED"}`)) {
		t.Errorf("rejection: %s", out)
	}

	// The header could not be parsed: no request to correlate with.
	rej = NewRejection(nil, MalformedMessage, self)
	if rej.CorrelationMessage != "" || rej.RecipientConnector != nil || rej.Validate() != nil {
		t.Errorf("NewRejection(nil) = %+v, %v", rej, rej.Validate())
	}
	roundTrip(t, rej)
}

func TestValidate(t *testing.T) {
	full := func() *Message {
		return NewResponse("ids:ResponseMessage", nil, Self{ConnectorID: "https://a/", Token: func() string { return "t" }})
	}
	if err := full().Validate(); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*Message){
		"@id":             func(m *Message) { m.ID = "" },
		"modelVersion":    func(m *Message) { m.ModelVersion = "" },
		"issued":          func(m *Message) { m.Issued = time.Time{} },
		"issuerConnector": func(m *Message) { m.IssuerConnector = "" },
		"senderAgent":     func(m *Message) { m.SenderAgent = "" },
		"securityToken":   func(m *Message) { m.SecurityToken = "" },
		"rejectionReason": func(m *Message) { m.Type = RejectionType },
	} {
		m := full()
		mutate(m)
		var pe *ParseError
		if err := m.Validate(); !errors.As(err, &pe) || pe.Field != field {
			t.Errorf("%s: Validate = %v", field, err)
		}
	}
}

func TestStatusForRejection(t *testing.T) {
	// ecosystem.md §4.2, the IDS-REST reference mapping, exactly.
	cases := []struct {
		reason string
		status int
	}{
		{NotFound, 404},
		{NotAuthenticated, 401},
		{NotAuthorized, 401},
		{MethodNotSupported, 405},
		{MessageTypeNotSupported, 405},
		{BadParameters, 400},
		{MalformedMessage, 400},
		{VersionNotSupported, 400},
		{TooManyResults, 413},
		{TemporarilyNotAvailable, 503},
		{InternalRecipientError, 500},
		{"idsc:SOMETHING_NEW", 500},
		{"", 500},
		{NSCode + "NOT_FOUND", 404},
		{"NOT_FOUND", 404},
	}
	for _, c := range cases {
		if got := StatusForRejection(c.reason); got != c.status {
			t.Errorf("StatusForRejection(%q) = %d, want %d", c.reason, got, c.status)
		}
	}
	// Every reason of codes/RejectionReason.ttl has a constant.
	all := []string{NotFound, NotAuthenticated, NotAuthorized, TooManyResults, MalformedMessage,
		InternalRecipientError, MethodNotSupported, MessageTypeNotSupported, VersionNotSupported,
		BadParameters, TemporarilyNotAvailable}
	ttl := string(readTestdataShared(t))
	n := strings.Count(ttl, " a ids:RejectionReason")
	if ttl != "" && n != len(all) {
		t.Errorf("RejectionReason.ttl has %d reasons, constants %d", n, len(all))
	}
	for _, r := range all {
		if ttl != "" && !strings.Contains(ttl, r+" a ids:RejectionReason") {
			t.Errorf("%s not in RejectionReason.ttl", r)
		}
	}
}

// readTestdataShared returns codes_RejectionReason.ttl from the shared
// vectors when they are beside the repository (as in CI), else "".
func readTestdataShared(t *testing.T) []byte {
	b, err := readFileUp("shared/vectors/ids-infomodel/codes_RejectionReason.ttl")
	if err != nil {
		t.Logf("shared vectors not found; skipping the ttl cross-check")
		return nil
	}
	return b
}

func readFileUp(rel string) ([]byte, error) {
	dir := ".."
	var err error
	for i := 0; i < 5; i++ {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(dir, rel)); err == nil {
			return b, nil
		}
		dir = filepath.Join(dir, "..")
	}
	return nil, err
}
