package idsmsg

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Namespaces of the IDS Information Model.
const (
	NSCore = "https://w3id.org/idsa/core/" // prefix "ids"
	NSCode = "https://w3id.org/idsa/code/" // prefix "idsc"

	// RemoteContext is the published IDS JSON-LD context; messages that use
	// it write their keys without the "ids:" prefix.
	RemoteContext = "https://w3id.org/idsa/contexts/context.jsonld"

	nsDCT     = "http://purl.org/dc/terms/"
	nsXSD     = "http://www.w3.org/2001/XMLSchema#"
	autogen   = "https://w3id.org/idsa/autogen/"
	xsdDTS    = nsXSD + "dateTimeStamp"
	xsdDT     = nsXSD + "dateTime"
	maxIRILen = 8192
)

// ModelVersion is the Information Model version the sidecar writes into
// ids:modelVersion when a message has none (the version of the Java
// infomodel library idscp2-jvm 0.19 and the Trusted Connector ship).
const ModelVersion = "4.2.7"

// Message is an IDS Information Model message header (JSON-LD).
//
// IRIs are kept as full IRIs except Type ("ids:ArtifactRequestMessage") and
// RejectionReason ("idsc:NOT_FOUND"), which are in compact form whenever
// they lie in the ids: or idsc: namespace.
type Message struct {
	Type               string // compact form "ids:ArtifactRequestMessage"
	ID                 string // "@id"
	ModelVersion       string
	Issued             time.Time
	IssuerConnector    string
	SenderAgent        string
	RecipientConnector []string
	RecipientAgent     []string
	CorrelationMessage string
	SecurityToken      string // the DAT (ids:securityToken → ids:tokenValue)
	TransferContract   string
	RejectionReason    string // compact form "idsc:NOT_AUTHORIZED" (RejectionMessage only)

	// Extra holds every other property of the message node, value kept
	// verbatim. Keys are as in the input, except that a key naming a term
	// of the ids: namespace is normalised to its "ids:" compact form
	// ("requestedElement" and "https://w3id.org/idsa/core/requestedElement"
	// both become "ids:requestedElement"), so callers need to look in one
	// place only and Marshal writes valid JSON-LD.
	Extra map[string]json.RawMessage

	// context holds prefix definitions of the input @context other than
	// ids and idsc, re-emitted by Marshal so that Extra keys and values
	// using them keep their meaning.
	context []kv
}

// ParseError says which field of a message, multipart body or extra header
// is wrong and why.
type ParseError struct {
	Field  string // e.g. "issued", "securityToken", "header", "boundary", "CamelHttpPath"
	Reason string
}

func (e *ParseError) Error() string { return "idsmsg: " + e.Field + ": " + e.Reason }

func perr(field, format string, args ...any) *ParseError {
	return &ParseError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

type kv struct {
	k string
	v json.RawMessage
}

// The managed properties, by local name in the ids: namespace.
const (
	fModelVersion       = "modelVersion"
	fIssued             = "issued"
	fIssuerConnector    = "issuerConnector"
	fSenderAgent        = "senderAgent"
	fRecipientConnector = "recipientConnector"
	fRecipientAgent     = "recipientAgent"
	fCorrelationMessage = "correlationMessage"
	fSecurityToken      = "securityToken"
	fTransferContract   = "transferContract"
	fRejectionReason    = "rejectionReason"
)

var managed = map[string]bool{
	fModelVersion: true, fIssued: true, fIssuerConnector: true, fSenderAgent: true,
	fRecipientConnector: true, fRecipientAgent: true, fCorrelationMessage: true,
	fSecurityToken: true, fTransferContract: true, fRejectionReason: true,
}

// Parse reads an IDS message header.
//
// It accepts both @context styles in use — the remote IDS context URL with
// unprefixed keys, and {"ids": ..., "idsc": ...} with "ids:"-prefixed keys
// (what the Java infomodel serializer emits) — as well as full-IRI keys,
// mixtures of these, arrays of contexts, other prefixes the context defines,
// dct:issued for ids:issued, and a top-level @graph with one message node
// whose securityToken may be a reference to another node of the graph.
// Values may be plain strings, {"@id": ...} or {"@value": ...}; a
// single-element array is accepted where one value is expected.
//
// Only @type is mandatory here, because a local IDS-aware client may leave
// the fields the sidecar fills in (Self.Stamp) empty; use Validate for the
// Information Model's mandatory properties. Errors are *ParseError naming
// the field. The caller enforces a size limit.
func Parse(header []byte) (*Message, error) {
	if !utf8.Valid(header) {
		return nil, perr("header", "not valid UTF-8")
	}
	top, err := decodeObject(header)
	if err != nil {
		return nil, perr("header", "not a JSON object: %v", err)
	}
	c := newContext()
	node := top
	if raw, ok := lookup(top, "@context"); ok {
		if err := c.add(raw, 0); err != nil {
			return nil, err
		}
	}
	var graph map[string][]kv
	if raw, ok := lookup(top, "@graph"); ok {
		for _, p := range top {
			if p.k != "@context" && p.k != "@graph" {
				return nil, perr("@graph", "unexpected top-level key %q beside @graph", p.k)
			}
		}
		node, graph, err = c.messageNode(raw)
		if err != nil {
			return nil, err
		}
	}
	m := &Message{context: c.keep}
	seen := map[string]string{} // normalised key → input key
	for _, p := range node {
		key := p.k
		switch key {
		case "@context", "@graph":
			if graph != nil && key == "@context" {
				return nil, perr("@context", "a node inside @graph has its own @context")
			}
			continue
		case "@type":
			if m.Type, err = c.typeValue(p.v); err != nil {
				return nil, err
			}
			continue
		case "@id":
			if m.ID, err = c.iriValue("@id", p.v); err != nil {
				return nil, err
			}
			continue
		}
		norm, local := c.normKey(key)
		if norm == "" {
			return nil, perr(key, "the key expands to an empty IRI")
		}
		if prev, dup := seen[norm]; dup {
			return nil, perr(fieldName(norm, local), "given more than once (%q and %q)", prev, key)
		}
		seen[norm] = key
		if !managed[local] {
			if m.Extra == nil {
				m.Extra = map[string]json.RawMessage{}
			}
			m.Extra[norm] = p.v
			continue
		}
		if isNull(p.v) {
			continue
		}
		switch local {
		case fModelVersion:
			m.ModelVersion, err = c.stringValue(local, p.v)
		case fIssued:
			m.Issued, err = c.timeValue(local, p.v)
		case fIssuerConnector:
			m.IssuerConnector, err = c.iriValue(local, p.v)
		case fSenderAgent:
			m.SenderAgent, err = c.iriValue(local, p.v)
		case fRecipientConnector:
			m.RecipientConnector, err = c.iriValues(local, p.v)
		case fRecipientAgent:
			m.RecipientAgent, err = c.iriValues(local, p.v)
		case fCorrelationMessage:
			m.CorrelationMessage, err = c.iriValue(local, p.v)
		case fTransferContract:
			m.TransferContract, err = c.iriValue(local, p.v)
		case fRejectionReason:
			var r string
			if r, err = c.iriValue(local, p.v); err == nil {
				m.RejectionReason = compactIRI(r)
			}
		case fSecurityToken:
			m.SecurityToken, err = c.tokenValue(p.v, graph)
		}
		if err != nil {
			return nil, err
		}
	}
	if m.Type == "" {
		return nil, perr("@type", "missing")
	}
	return m, nil
}

// fieldName is the name a ParseError uses for a property: the local name
// for ids: terms ("issued"), the key otherwise.
func fieldName(norm, local string) string {
	if local != "" {
		return local
	}
	return norm
}

// Validate checks the properties the Information Model makes mandatory for
// every message (IM v4.2.0 MessageShape: modelVersion, issued,
// issuerConnector, senderAgent, securityToken) plus @id, and
// ids:rejectionReason on an ids:RejectionMessage. It returns a *ParseError
// naming the first missing field.
func (m *Message) Validate() error {
	switch {
	case m.Type == "":
		return perr("@type", "missing")
	case m.ID == "":
		return perr("@id", "missing")
	case m.ModelVersion == "":
		return perr(fModelVersion, "missing")
	case m.Issued.IsZero():
		return perr(fIssued, "missing")
	case m.IssuerConnector == "":
		return perr(fIssuerConnector, "missing")
	case m.SenderAgent == "":
		return perr(fSenderAgent, "missing")
	case m.SecurityToken == "":
		return perr(fSecurityToken, "missing")
	case m.Type == "ids:RejectionMessage" && m.RejectionReason == "":
		return perr(fRejectionReason, "missing on a RejectionMessage")
	}
	return nil
}

// ---- JSON helpers ----

// decodeObject decodes one JSON object into its members in input order,
// refusing duplicate keys and trailing data. The input is validated in one
// pass by json.Valid; members are then split by a small scanner, which is
// several times cheaper than a json.Decoder token loop (headers are parsed
// on every request). Values alias one private copy of b.
func decodeObject(b []byte) ([]kv, error) {
	if !json.Valid(b) {
		var v any // for the standard library's description of the error
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return nil, errors.New("invalid JSON")
	}
	return splitObject(bytes.Clone(b))
}

// splitObject is decodeObject for a value inside an object decodeObject
// already validated: no second validation pass, no copy.
func splitObject(b []byte) ([]kv, error) {
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, fmt.Errorf("found %s", describeValue(b[i]))
	}
	i = skipSpace(b, i+1)
	var out []kv
	for b[i] != '}' {
		kEnd := scanString(b, i)
		var k string
		if bytes.IndexByte(b[i:kEnd], '\\') < 0 {
			k = string(b[i+1 : kEnd-1])
		} else if err := json.Unmarshal(b[i:kEnd], &k); err != nil {
			return nil, err
		}
		for _, p := range out {
			if p.k == k {
				return nil, fmt.Errorf("key %q given more than once", k)
			}
		}
		i = skipSpace(b, kEnd)
		i = skipSpace(b, i+1) // ':'
		vEnd := scanValue(b, i)
		out = append(out, kv{k, json.RawMessage(b[i:vEnd:vEnd])})
		i = skipSpace(b, vEnd)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return out, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the JSON string starting at b[i].
func scanString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// scanValue returns the index after the (valid) JSON value starting at b[i].
func scanValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = scanString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[j])) {
		j++
	}
	return j
}

func describeValue(c byte) string {
	switch c {
	case '[':
		return `"["`
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "bool"
	}
	return "float64"
}

func lookup(obj []kv, key string) (json.RawMessage, bool) {
	for _, p := range obj {
		if p.k == key {
			return p.v, true
		}
	}
	return nil, false
}

// stringMember returns the string member key of a JSON object. Keys
// are compared exactly: JSON-LD keywords are case-sensitive (unlike
// encoding/json's struct matching).
func stringMember(obj []kv, key string) (string, bool, error) {
	raw, ok := lookup(obj, key)
	if !ok {
		return "", false, nil
	}
	var s string
	if firstByte(raw) != '"' || json.Unmarshal(raw, &s) != nil {
		return "", true, fmt.Errorf("%s is not a string", key)
	}
	return s, true, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func firstByte(v json.RawMessage) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// ---- JSON-LD context handling (the part of JSON-LD IDS messages use) ----

type ldContext struct {
	prefixes map[string]string // prefix → IRI
	terms    map[string]string // term → IRI (object term definitions)
	vocab    string
	keep     []kv // prefix definitions other than ids/idsc, for Marshal
}

func newContext() *ldContext {
	return &ldContext{
		prefixes: map[string]string{"ids": NSCore, "idsc": NSCode, "dct": nsDCT, "xsd": nsXSD},
		terms:    map[string]string{},
	}
}

func (c *ldContext) add(raw json.RawMessage, depth int) error {
	if depth > 8 {
		return perr("@context", "nested too deeply")
	}
	switch firstByte(raw) {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return perr("@context", "%v", err)
		}
		// A remote context (the IDS one, or a versioned copy of it). It is
		// not fetched: its terms are the ids: vocabulary, which is how
		// unprefixed keys are read anyway.
		return nil
	case '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(raw, &arr); err != nil {
			return perr("@context", "%v", err)
		}
		for _, e := range arr {
			if err := c.add(e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case '{':
		obj, err := splitObject(raw)
		if err != nil {
			return perr("@context", "%v", err)
		}
		for _, p := range obj {
			switch firstByte(p.v) {
			case '"':
				var iri string
				if err := json.Unmarshal(p.v, &iri); err != nil {
					return perr("@context", "%q: %v", p.k, err)
				}
				switch {
				case p.k == "@vocab":
					c.vocab = c.expand(iri)
				case strings.HasPrefix(p.k, "@"):
				case p.k == "ids" && iri != NSCore, p.k == "idsc" && iri != NSCode:
					// Marshal writes the standard prefixes; a message that
					// rebinds them would change meaning on the way through.
					return perr("@context", "prefix %q must be %s, not %q", p.k, map[string]string{"ids": NSCore, "idsc": NSCode}[p.k], iri)
				default:
					c.prefixes[p.k] = iri
					if p.k != "ids" && p.k != "idsc" {
						c.keep = append(c.keep, p)
					}
				}
			case '{':
				def, err := splitObject(p.v)
				if err != nil {
					return perr("@context", "term %q: %v", p.k, err)
				}
				id, _, err := stringMember(def, "@id")
				if err != nil {
					return perr("@context", "term %q: %v", p.k, err)
				}
				if id != "" {
					c.terms[p.k] = c.expand(id)
				}
			}
		}
		return nil
	case 'n': // null resets the context; keep the defaults
		if isNull(raw) {
			return nil
		}
	}
	return perr("@context", "must be a URL, an object or an array")
}

// expand turns a compact IRI into a full IRI with the known prefixes;
// anything else (full IRIs, blank nodes, relative IRIs) is returned as is.
func (c *ldContext) expand(s string) string {
	if i := strings.IndexByte(s, ':'); i > 0 {
		prefix, rest := s[:i], s[i+1:]
		if strings.HasPrefix(rest, "//") {
			return s
		}
		if iri, ok := c.prefixes[prefix]; ok {
			return iri + rest
		}
	}
	return s
}

// expandTerm expands a key or a @type value: like expand, and an
// unprefixed term is a term of the context or the vocabulary (ids: unless
// the context sets @vocab, which is what the remote IDS context amounts
// to).
func (c *ldContext) expandTerm(s string) string {
	if iri, ok := c.terms[s]; ok {
		return iri
	}
	if strings.HasPrefix(s, "@") {
		return s
	}
	if !strings.Contains(s, ":") {
		if c.vocab != "" {
			return c.vocab + s
		}
		return NSCore + s
	}
	return c.expand(s)
}

// normKey returns the key under which a property is kept and, for a term
// of the ids: namespace (or dct:issued), its local name.
func (c *ldContext) normKey(key string) (norm, local string) {
	if strings.HasPrefix(key, "@") {
		return key, ""
	}
	iri := c.expandTerm(key)
	if iri == nsDCT+"issued" {
		return "ids:issued", fIssued
	}
	if rest, ok := strings.CutPrefix(iri, NSCore); ok && rest != "" {
		return "ids:" + rest, rest
	}
	if i := strings.IndexByte(key, ':'); i > 0 && !strings.HasPrefix(key[i+1:], "//") {
		for _, p := range c.keep {
			if p.k == key[:i] {
				return key, "" // prefix re-emitted by Marshal
			}
		}
	}
	if _, isTerm := c.terms[key]; isTerm || iri != key {
		return iri, ""
	}
	return key, ""
}

func compactIRI(iri string) string {
	if rest, ok := strings.CutPrefix(iri, NSCore); ok && rest != "" {
		return "ids:" + rest
	}
	if rest, ok := strings.CutPrefix(iri, NSCode); ok && rest != "" {
		return "idsc:" + rest
	}
	return iri
}

func (c *ldContext) messageNode(raw json.RawMessage) (node []kv, graph map[string][]kv, err error) {
	var arr []json.RawMessage
	if firstByte(raw) != '[' || json.Unmarshal(raw, &arr) != nil {
		return nil, nil, perr("@graph", "must be an array of nodes")
	}
	graph = map[string][]kv{}
	found := 0
	for i, e := range arr {
		obj, err := splitObject(e)
		if err != nil {
			return nil, nil, perr("@graph", "node %d: %v", i, err)
		}
		if id, ok := lookup(obj, "@id"); ok {
			var s string
			if json.Unmarshal(id, &s) == nil {
				graph[s] = obj
			}
		}
		if t, ok := lookup(obj, "@type"); ok {
			if typ, err := c.typeValue(t); err == nil && strings.HasSuffix(typ, "Message") {
				node = obj
				found++
			}
		}
	}
	if found != 1 {
		return nil, nil, perr("@graph", "want exactly one message node, found %d", found)
	}
	return node, graph, nil
}

// ---- value readers ----

// unwrap returns the single value of v: a one-element array is unwrapped,
// more elements are an error.
func unwrap(field string, v json.RawMessage) (json.RawMessage, error) {
	if firstByte(v) != '[' {
		return v, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(v, &arr); err != nil {
		return nil, perr(field, "%v", err)
	}
	if len(arr) != 1 {
		return nil, perr(field, "expected one value, got %d", len(arr))
	}
	return arr[0], nil
}

// literal reads a plain string or {"@value": string}; typ is the @type of
// a value object, if any.
func (c *ldContext) literal(field string, v json.RawMessage) (s, typ string, err error) {
	v, err = unwrap(field, v)
	if err != nil {
		return "", "", err
	}
	switch firstByte(v) {
	case '"':
		if err := json.Unmarshal(v, &s); err != nil {
			return "", "", perr(field, "%v", err)
		}
		return s, "", nil
	case '{':
		obj, err := splitObject(v)
		if err != nil {
			return "", "", perr(field, "%v", err)
		}
		val, ok, err := stringMember(obj, "@value")
		if err != nil || !ok {
			return "", "", perr(field, "expected a string or {\"@value\": string}")
		}
		typ, _, err := stringMember(obj, "@type")
		if err != nil {
			return "", "", perr(field, "@type: %v", err)
		}
		return val, c.expand(typ), nil
	}
	return "", "", perr(field, "expected a string or {\"@value\": string}")
}

func (c *ldContext) stringValue(field string, v json.RawMessage) (string, error) {
	s, _, err := c.literal(field, v)
	if err == nil && !printable(s) {
		err = perr(field, "contains control characters")
	}
	return s, err
}

func (c *ldContext) timeValue(field string, v json.RawMessage) (time.Time, error) {
	s, typ, err := c.literal(field, v)
	if err != nil {
		return time.Time{}, err
	}
	if typ != "" && typ != xsdDTS && typ != xsdDT {
		return time.Time{}, perr(field, "@type %q is not xsd:dateTimeStamp", typ)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !dateTimeStamp.MatchString(s) || !inRange(t) {
		return time.Time{}, perr(field, "%q is not an xsd:dateTimeStamp (RFC 3339 with time zone, years 0000-9999 in UTC)", s)
	}
	return t, nil
}

// iriValue reads a reference: {"@id": iri}, or a plain string.
func (c *ldContext) iriValue(field string, v json.RawMessage) (string, error) {
	v, err := unwrap(field, v)
	if err != nil {
		return "", err
	}
	var s string
	switch firstByte(v) {
	case '"':
		if err := json.Unmarshal(v, &s); err != nil {
			return "", perr(field, "%v", err)
		}
	case '{':
		obj, err := splitObject(v)
		if err != nil {
			return "", perr(field, "%v", err)
		}
		id, ok, err := stringMember(obj, "@id")
		if err != nil || !ok {
			return "", perr(field, "expected {\"@id\": IRI} or an IRI string")
		}
		s = id
	default:
		return "", perr(field, "expected {\"@id\": IRI} or an IRI string")
	}
	s = c.expand(s)
	if err := checkIRI(s); err != nil {
		return "", perr(field, "%v", err)
	}
	return s, nil
}

func (c *ldContext) iriValues(field string, v json.RawMessage) ([]string, error) {
	if firstByte(v) != '[' {
		s, err := c.iriValue(field, v)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(v, &arr); err != nil {
		return nil, perr(field, "%v", err)
	}
	var out []string
	for _, e := range arr {
		if firstByte(e) == '[' {
			return nil, perr(field, "nested array")
		}
		s, err := c.iriValue(field, e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (c *ldContext) typeValue(v json.RawMessage) (string, error) {
	v, err := unwrap("@type", v)
	if err != nil {
		return "", err
	}
	var s string
	if firstByte(v) != '"' || json.Unmarshal(v, &s) != nil {
		return "", perr("@type", "expected a string")
	}
	if s == "" {
		return "", perr("@type", "empty")
	}
	s = compactIRI(c.expandTerm(s))
	if err := checkIRI(s); err != nil {
		return "", perr("@type", "%v", err)
	}
	return s, nil
}

// tokenValue reads ids:securityToken: an object (or a reference to a
// @graph node) whose ids:tokenValue is the DAT. @type and tokenFormat are
// not checked here; the DAT verifier decides whether the token is any
// good.
func (c *ldContext) tokenValue(v json.RawMessage, graph map[string][]kv) (string, error) {
	v, err := unwrap(fSecurityToken, v)
	if err != nil {
		return "", err
	}
	if firstByte(v) != '{' {
		return "", perr(fSecurityToken, "expected an ids:DynamicAttributeToken object")
	}
	obj, err := splitObject(v)
	if err != nil {
		return "", perr(fSecurityToken, "%v", err)
	}
	if len(obj) == 1 && obj[0].k == "@id" { // a node reference
		var id string
		_ = json.Unmarshal(obj[0].v, &id)
		n, ok := graph[id]
		if !ok {
			return "", perr(fSecurityToken, "refers to node %q, which is not in the message", id)
		}
		obj = n
	}
	for _, p := range obj {
		if _, local := c.normKey(p.k); local == "tokenValue" {
			s, _, err := c.literal(fSecurityToken, p.v)
			if err != nil {
				return "", err
			}
			if !printable(s) {
				return "", perr(fSecurityToken, "tokenValue contains control characters")
			}
			return s, nil
		}
	}
	return "", perr(fSecurityToken, "no ids:tokenValue")
}

// checkIRI accepts an absolute IRI (scheme ":" ...) or a blank node, with
// no whitespace, control characters or characters IRIs exclude.
func checkIRI(s string) error {
	if s == "" {
		return fmt.Errorf("empty IRI")
	}
	if len(s) > maxIRILen {
		return fmt.Errorf("IRI longer than %d bytes", maxIRILen)
	}
	colon := strings.IndexByte(s, ':')
	if colon < 1 {
		return fmt.Errorf("%q is not an absolute IRI", s)
	}
	for i := 0; i < colon; i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || i > 0 && (b >= '0' && b <= '9' || b == '+' || b == '-' || b == '.') || s[:colon] == "_") {
			return fmt.Errorf("%q is not an absolute IRI", s)
		}
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || strings.ContainsRune("<>\"{}|\\^`", r) {
			return fmt.Errorf("IRI %q contains %q", s, r)
		}
	}
	return nil
}

// dateTimeStamp is the lexical form Parse accepts for ids:issued: RFC 3339
// (xsd:dateTimeStamp restricted to four-digit years).
var dateTimeStamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$`)

// inRange reports whether t can be written back as RFC 3339 in UTC.
func inRange(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

func printable(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// ---- Marshal ----

// Marshal writes the message in the shape the Java infomodel serializer
// emits: "@context":{"ids":...,"idsc":...}, "ids:"-prefixed keys,
// {"@id": ...} references, ids:issued as {"@value": RFC 3339 UTC with
// milliseconds, "@type": xsd:dateTimeStamp} (with nanoseconds when the time
// has sub-millisecond precision, so nothing is lost), and the DAT as
// {"@type":"ids:DynamicAttributeToken","@id":...,"ids:tokenFormat":
// {"@id":"idsc:JWT"},"ids:tokenValue":...}. The token's @id is derived from
// the message @id and the token, so the output is deterministic.
//
// Empty fields are left out. Extra members follow the managed ones in key
// order; an Extra key that names a managed property is an error. Prefix
// definitions of a parsed message's @context beyond ids/idsc are kept.
func (m *Message) Marshal() ([]byte, error) {
	if m.Type == "" {
		return nil, perr("@type", "missing")
	}
	var b bytes.Buffer
	b.WriteString(`{"@context":{"ids":"` + NSCore + `","idsc":"` + NSCode + `"`)
	for _, p := range m.context {
		b.WriteByte(',')
		writeString(&b, p.k)
		b.WriteByte(':')
		if err := json.Compact(&b, p.v); err != nil {
			return nil, perr("@context", "%v", err)
		}
	}
	b.WriteString(`},"@type":`)
	writeString(&b, normType(m.Type))
	if m.ID != "" {
		b.WriteString(`,"@id":`)
		writeString(&b, m.ID)
	}
	if m.ModelVersion != "" {
		b.WriteString(`,"ids:modelVersion":`)
		writeString(&b, m.ModelVersion)
	}
	if !m.Issued.IsZero() {
		if !inRange(m.Issued) {
			return nil, perr(fIssued, "year %d cannot be written as xsd:dateTimeStamp", m.Issued.UTC().Year())
		}
		t := m.Issued.UTC()
		layout := "2006-01-02T15:04:05.000Z07:00"
		if t.Nanosecond()%int(time.Millisecond) != 0 {
			layout = time.RFC3339Nano
		}
		b.WriteString(`,"ids:issued":{"@value":`)
		writeString(&b, t.Format(layout))
		b.WriteString(`,"@type":"` + xsdDTS + `"}`)
	}
	ref := func(key, iri string) {
		if iri != "" {
			b.WriteString(`,"ids:` + key + `":{"@id":`)
			writeString(&b, iri)
			b.WriteByte('}')
		}
	}
	refs := func(key string, iris []string) {
		if len(iris) == 0 {
			return
		}
		b.WriteString(`,"ids:` + key + `":[`)
		for i, iri := range iris {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"@id":`)
			writeString(&b, iri)
			b.WriteByte('}')
		}
		b.WriteByte(']')
	}
	ref(fIssuerConnector, m.IssuerConnector)
	ref(fSenderAgent, m.SenderAgent)
	refs(fRecipientConnector, m.RecipientConnector)
	refs(fRecipientAgent, m.RecipientAgent)
	ref(fCorrelationMessage, m.CorrelationMessage)
	ref(fTransferContract, m.TransferContract)
	if m.SecurityToken != "" {
		b.WriteString(`,"ids:securityToken":{"@type":"ids:DynamicAttributeToken","@id":`)
		writeString(&b, tokenID(m.ID, m.SecurityToken))
		b.WriteString(`,"ids:tokenFormat":{"@id":"idsc:JWT"},"ids:tokenValue":`)
		writeString(&b, m.SecurityToken)
		b.WriteByte('}')
	}
	if m.RejectionReason != "" {
		r := m.RejectionReason
		if !strings.Contains(r, ":") {
			r = "idsc:" + r
		}
		ref(fRejectionReason, r)
	}
	keys := make([]string, 0, len(m.Extra))
	for k := range m.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	c := newContext()
	for _, p := range m.context {
		var iri string
		if json.Unmarshal(p.v, &iri) == nil {
			c.prefixes[p.k] = iri
		}
	}
	for _, k := range keys {
		out := k
		if !strings.HasPrefix(k, "@") && !strings.Contains(k, ":") {
			out = "ids:" + k
		}
		if _, local := c.normKey(out); managed[local] || k == "@context" || k == "@type" || k == "@id" || k == "@graph" {
			return nil, perr(k, "Extra key names a field of Message")
		}
		b.WriteByte(',')
		writeString(&b, out)
		b.WriteByte(':')
		if err := json.Compact(&b, m.Extra[k]); err != nil {
			return nil, perr(k, "Extra value is not JSON: %v", err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func normType(t string) string {
	if t != "" && !strings.Contains(t, ":") {
		return "ids:" + t
	}
	return compactIRI(t)
}

func writeString(b *bytes.Buffer, s string) {
	plain := utf8.ValidString(s)
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= ' ' && s[i] != '"' && s[i] != '\\' && s[i] != 0x7f
	}
	if plain && !strings.Contains(s, "\u2028") && !strings.Contains(s, "\u2029") {
		b.WriteByte('"')
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // the newline Encode adds
}

// ---- identifiers ----

// NewID returns a fresh message identifier the way the Java infomodel
// builders make them: "https://w3id.org/idsa/autogen/<lowerCamelType>/<uuid>"
// with a random (version 4) UUID; "ids:ArtifactRequestMessage" gives
// ".../autogen/artifactRequestMessage/...".
func NewID(typ string) string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic("idsmsg: crypto/rand: " + err.Error())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return autogen + lowerCamel(typ) + "/" + formatUUID(u)
}

func lowerCamel(typ string) string {
	if i := strings.LastIndexAny(typ, ":/#"); i >= 0 {
		typ = typ[i+1:]
	}
	if typ == "" {
		return "message"
	}
	return strings.ToLower(typ[:1]) + typ[1:]
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// tokenID is a name-based (version 5 style) UUID IRI for the token node of
// a message, so Marshal is deterministic.
func tokenID(msgID, token string) string {
	h := sha1.New()
	h.Write([]byte(msgID))
	h.Write([]byte{0})
	h.Write([]byte(token))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return autogen + "dynamicAttributeToken/" + formatUUID(u)
}

// ---- building messages ----

// Self describes this sidecar for the fields it fills in.
type Self struct {
	ConnectorID string        // ids:issuerConnector (and ids:senderAgent when SenderAgent is empty)
	SenderAgent string        // ids:senderAgent
	Token       func() string // the current DAT; nil means none (the message then fails Validate)
}

// Stamp fills in what the sidecar vouches for: @id if empty, ids:issued =
// now (millisecond precision, UTC), ids:modelVersion if empty,
// ids:issuerConnector, ids:senderAgent (ConnectorID when SenderAgent is
// empty) and ids:securityToken, which is always replaced by the sidecar's
// own DAT: a client's or peer's token is never passed on.
func (s Self) Stamp(m *Message) {
	if m == nil {
		return
	}
	if m.ID == "" {
		m.ID = NewID(m.Type)
	}
	m.Issued = time.Now().UTC().Truncate(time.Millisecond)
	if m.ModelVersion == "" {
		m.ModelVersion = ModelVersion
	}
	m.IssuerConnector = s.ConnectorID
	m.SenderAgent = s.SenderAgent
	if m.SenderAgent == "" {
		m.SenderAgent = s.ConnectorID
	}
	m.SecurityToken = ""
	if s.Token != nil {
		m.SecurityToken = s.Token()
	}
}

// NewResponse returns a stamped message of type typ answering req:
// ids:correlationMessage = req's @id, ids:recipientConnector =
// [req's issuerConnector], ids:recipientAgent = [req's senderAgent], and
// req's ids:transferContract, if any. req may be nil.
func NewResponse(typ string, req *Message, s Self) *Message {
	m := &Message{Type: normType(typ)}
	if req != nil {
		m.CorrelationMessage = req.ID
		if req.IssuerConnector != "" {
			m.RecipientConnector = []string{req.IssuerConnector}
		}
		if req.SenderAgent != "" {
			m.RecipientAgent = []string{req.SenderAgent}
		}
		m.TransferContract = req.TransferContract
	}
	s.Stamp(m)
	return m
}

// NewRejection returns a stamped ids:RejectionMessage answering req with
// the given reason (compact form, e.g. NotAuthorized). req may be nil when
// the request's header itself could not be parsed; the rejection then has
// no correlationMessage.
func NewRejection(req *Message, reason string, s Self) *Message {
	m := NewResponse("ids:RejectionMessage", req, s)
	m.RejectionReason = reason
	return m
}

// Rejection reasons (codes/RejectionReason.ttl), compact form.
const (
	NotFound                = "idsc:NOT_FOUND"
	NotAuthenticated        = "idsc:NOT_AUTHENTICATED"
	NotAuthorized           = "idsc:NOT_AUTHORIZED"
	TooManyResults          = "idsc:TOO_MANY_RESULTS"
	MalformedMessage        = "idsc:MALFORMED_MESSAGE"
	InternalRecipientError  = "idsc:INTERNAL_RECIPIENT_ERROR"
	MethodNotSupported      = "idsc:METHOD_NOT_SUPPORTED"
	MessageTypeNotSupported = "idsc:MESSAGE_TYPE_NOT_SUPPORTED"
	VersionNotSupported     = "idsc:VERSION_NOT_SUPPORTED"
	BadParameters           = "idsc:BAD_PARAMETERS"
	TemporarilyNotAvailable = "idsc:TEMPORARILY_NOT_AVAILABLE"
)

// StatusForRejection maps a rejection reason to an HTTP status, exactly as
// the IDS-REST reference implementation does (ecosystem.md §4.2, IAIS
// ResponseEntityCreator): NOT_FOUND 404; NOT_AUTHENTICATED and
// NOT_AUTHORIZED 401; METHOD_NOT_SUPPORTED and MESSAGE_TYPE_NOT_SUPPORTED
// 405; BAD_PARAMETERS, MALFORMED_MESSAGE and VERSION_NOT_SUPPORTED 400;
// TOO_MANY_RESULTS 413; TEMPORARILY_NOT_AVAILABLE 503; anything else,
// INTERNAL_RECIPIENT_ERROR included, 500.
//
// It is a pure table: a caller that knows more (a backend that is down is
// a 502 at the egress, a timeout 504, a refused peer 403) decides that
// itself. The reason may be compact ("idsc:NOT_FOUND"), a full IRI or the
// bare code.
func StatusForRejection(reason string) int {
	code := reason
	if i := strings.LastIndexAny(code, ":/"); i >= 0 {
		code = code[i+1:]
	}
	switch code {
	case "NOT_FOUND":
		return 404
	case "NOT_AUTHENTICATED", "NOT_AUTHORIZED":
		return 401
	case "METHOD_NOT_SUPPORTED", "MESSAGE_TYPE_NOT_SUPPORTED":
		return 405
	case "BAD_PARAMETERS", "MALFORMED_MESSAGE", "VERSION_NOT_SUPPORTED":
		return 400
	case "TOO_MANY_RESULTS":
		return 413
	case "TEMPORARILY_NOT_AVAILABLE":
		return 503
	}
	return 500
}
