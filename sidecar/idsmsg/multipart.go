package idsmsg

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
)

// Multipart is an IDS-G multipart message: the JSON-LD IDS header and an
// optional payload.
type Multipart struct {
	Header      []byte // the "header" part, verbatim
	Payload     []byte // the "payload" part; nil when there is none, non-nil (maybe empty) when there is one
	PayloadType string // the payload part's Content-Type, verbatim ("" if it has none)
}

// ErrTooLarge is returned, unwrapped, when a multipart body exceeds the
// limit given to ReadMultipart. It is not a *ParseError, so a caller can
// answer 413 rather than 400.
var ErrTooLarge = errors.New("idsmsg: multipart body exceeds the size limit")

// Part names of the IDS-G multipart binding.
const (
	PartHeader  = "header"
	PartPayload = "payload"
)

const maxBoundary = 70 // RFC 2046 §5.1.1

// ReadMultipart reads an IDS multipart body (multipart/form-data or
// multipart/mixed) of at most maxBytes bytes (maxBytes <= 0: no limit). It
// reads the whole body into memory; Header and Payload are slices of that
// buffer.
//
// Parts are found by their Content-Disposition name ("header", "payload");
// parts without a name (multipart/mixed) are taken in order, header first.
// A part with any other name, a second header or payload part, or a header
// part that is not a JSON object is an error. Content-Transfer-Encoding
// base64 and quoted-printable are decoded. Errors are *ParseError naming
// what is wrong ("Content-Type", "boundary", "header", "payload",
// "Content-Disposition", "Content-Transfer-Encoding", "multipart"),
// ErrTooLarge, or the body's read error.
//
// Three deviations from RFC 2046 are accepted because the IDS-G examples
// (seed documents) contain them: a part whose headers are not followed by
// a blank line (the body starts at the first line that is not a header
// field), a body that ends without the close delimiter (the last part runs
// to the end, less one final line break), and a boundary parameter written
// with the leading "--" of the delimiter line ("boundary=--msg-boundary"
// while the lines read "--msg-boundary"), which is retried without it.
// Lines may end in CRLF or LF.
func ReadMultipart(contentType string, body io.Reader, maxBytes int64) (*Multipart, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, perr("Content-Type", "%q: %v", contentType, err)
	}
	if mt != "multipart/form-data" && mt != "multipart/mixed" {
		return nil, perr("Content-Type", "%q is not multipart/form-data or multipart/mixed", mt)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, perr("boundary", "Content-Type has no boundary parameter")
	}
	if len(boundary) > maxBoundary {
		return nil, perr("boundary", "longer than %d characters", maxBoundary)
	}
	data, err := readLimited(body, maxBytes)
	if err != nil {
		return nil, err
	}
	parts, err := splitParts(data, boundary)
	if err == errNoDelimiter && strings.HasPrefix(boundary, "--") && len(boundary) > 2 {
		parts, err = splitParts(data, boundary[2:])
	}
	if err == errNoDelimiter {
		return nil, perr("boundary", "the body has no delimiter line for boundary %q", boundary)
	}
	if err != nil {
		return nil, err
	}
	return assemble(parts)
}

func readLimited(r io.Reader, max int64) ([]byte, error) {
	if r == nil {
		return nil, perr("multipart", "no body")
	}
	if max <= 0 {
		return io.ReadAll(r)
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, ErrTooLarge
	}
	return data, nil
}

var errNoDelimiter = errors.New("no delimiter")

// splitParts returns the raw parts (headers and body) between the
// delimiter lines of data.
func splitParts(data []byte, boundary string) ([][]byte, error) {
	dash := []byte("--" + boundary)
	_, next, closing, ok := nextDelimiter(data, 0, dash)
	if !ok {
		return nil, errNoDelimiter
	}
	var parts [][]byte
	for !closing {
		if len(parts) >= 16 {
			return nil, perr("multipart", "too many parts")
		}
		begin := next
		s, n, c, found := nextDelimiter(data, begin, dash)
		if !found { // no close delimiter: the part runs to the end
			part := data[begin:]
			if bytes.HasSuffix(part, []byte("\r\n")) {
				part = part[:len(part)-2]
			} else if bytes.HasSuffix(part, []byte("\n")) {
				part = part[:len(part)-1]
			}
			parts = append(parts, part)
			break
		}
		end := s
		if end > begin && data[end-1] == '\n' { // the line break belongs to the delimiter
			end--
			if end > begin && data[end-1] == '\r' {
				end--
			}
		}
		parts = append(parts, data[begin:end])
		next, closing = n, c
	}
	return parts, nil
}

// nextDelimiter finds the next delimiter line at or after from: dash at the
// start of a line, followed by "--" (the close delimiter) or by optional
// linear whitespace and the end of the line. It returns the delimiter's
// offset, the offset just after its line, and whether it closes the body.
func nextDelimiter(data []byte, from int, dash []byte) (start, next int, closing, ok bool) {
	nlDash := append([]byte{'\n'}, dash...)
	for i := from; i <= len(data)-len(dash); {
		at := -1
		if i == 0 && bytes.HasPrefix(data, dash) {
			at = 0
		} else {
			// The line break before the delimiter may be the last byte
			// before from (an empty part).
			s := max(i-1, 0)
			j := bytes.Index(data[s:], nlDash)
			if j < 0 {
				return 0, 0, false, false
			}
			at = s + j + 1
		}
		rest := data[at+len(dash):]
		if bytes.HasPrefix(rest, []byte("--")) {
			return at, len(data), true, true
		}
		k := 0
		for k < len(rest) && (rest[k] == ' ' || rest[k] == '\t') {
			k++
		}
		switch {
		case k == len(rest): // a delimiter at the very end closes the body too
			return at, len(data), true, true
		case rest[k] == '\n':
			return at, at + len(dash) + k + 1, false, true
		case rest[k] == '\r' && k+1 < len(rest) && rest[k+1] == '\n':
			return at, at + len(dash) + k + 2, false, true
		}
		i = at + 1 // the boundary is only a prefix of this line
	}
	return 0, 0, false, false
}

type rawPart struct {
	hdr  textproto.MIMEHeader
	body []byte
	name string
}

// parsePart splits a part into its header fields and body.
func parsePart(raw []byte) (rawPart, error) {
	p := rawPart{hdr: textproto.MIMEHeader{}}
	var last string
	i := 0
	for i < len(raw) {
		eol := bytes.IndexByte(raw[i:], '\n')
		next := len(raw)
		line := raw[i:]
		if eol >= 0 {
			line, next = raw[i:i+eol], i+eol+1
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 { // the blank line ending the part's header
			p.body = raw[next:]
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && last != "" { // folded
			vs := p.hdr[last]
			vs[len(vs)-1] += " " + string(bytes.TrimSpace(line))
			i = next
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Not a header field: the blank line is missing and the body
			// starts here (as in the IDS-G Clearing House examples).
			p.body = raw[i:]
			break
		}
		last = textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
		p.hdr.Add(last, string(bytes.TrimSpace(line[colon+1:])))
		i = next
	}
	if p.body == nil {
		p.body = []byte{}
	}
	if cd := p.hdr.Get("Content-Disposition"); cd != "" {
		_, params, err := mime.ParseMediaType(cd)
		if err != nil {
			return p, perr("Content-Disposition", "%q: %v", cd, err)
		}
		p.name = params["name"]
	}
	switch cte := strings.ToLower(p.hdr.Get("Content-Transfer-Encoding")); cte {
	case "", "7bit", "8bit", "binary":
	case "base64":
		dec, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, newlineStripper{bytes.NewReader(p.body)}))
		if err != nil {
			return p, perr("Content-Transfer-Encoding", "part %q: bad base64: %v", p.name, err)
		}
		p.body = dec
	case "quoted-printable":
		dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(p.body)))
		if err != nil {
			return p, perr("Content-Transfer-Encoding", "part %q: bad quoted-printable: %v", p.name, err)
		}
		p.body = dec
	default:
		return p, perr("Content-Transfer-Encoding", "part %q: unsupported encoding %q", p.name, cte)
	}
	return p, nil
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return len(b) > 0
}

type newlineStripper struct{ r io.Reader }

func (s newlineStripper) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	w := 0
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			p[w] = c
			w++
		}
	}
	return w, err
}

func assemble(raws [][]byte) (*Multipart, error) {
	var header, payload *rawPart
	var unnamed []*rawPart
	for _, raw := range raws {
		p, err := parsePart(raw)
		if err != nil {
			return nil, err
		}
		switch strings.ToLower(p.name) {
		case PartHeader:
			if header != nil {
				return nil, perr("header", "more than one header part")
			}
			header = &p
		case PartPayload:
			if payload != nil {
				return nil, perr("payload", "more than one payload part")
			}
			payload = &p
		case "":
			unnamed = append(unnamed, &p)
		default:
			return nil, perr("multipart", "unexpected part %q (an IDS message has a header and a payload part)", p.name)
		}
	}
	for _, p := range unnamed {
		switch {
		case header == nil:
			header = p
		case payload == nil:
			payload = p
		default:
			return nil, perr("multipart", "more than two parts")
		}
	}
	if header == nil {
		return nil, perr("header", "missing header part")
	}
	if firstByte(header.body) != '{' || !json.Valid(header.body) {
		return nil, perr("header", "header part is not a JSON object")
	}
	mp := &Multipart{Header: header.body}
	if payload != nil {
		mp.Payload = payload.body
		mp.PayloadType = payload.hdr.Get("Content-Type")
	}
	return mp, nil
}

// NewMultipartBoundary returns a random boundary for WriteMultipartBoundary.
func NewMultipartBoundary() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("idsmsg: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// WriteMultipart writes mp as multipart/form-data with a random boundary,
// like the IDS-G examples: a part `Content-Disposition: form-data;
// name="header"` with Content-Type application/ld+json, then, when
// mp.Payload is not nil, a part name="payload" with mp.PayloadType
// (default application/octet-stream). It returns the body's Content-Type.
func WriteMultipart(w io.Writer, mp *Multipart) (contentType string, err error) {
	for {
		b := NewMultipartBoundary()
		if mp == nil || !collides(mp, b) {
			return WriteMultipartBoundary(w, mp, b)
		}
	}
}

// MultipartContentType is the Content-Type WriteMultipartBoundary returns
// for boundary, for callers that must send it before the body.
func MultipartContentType(boundary string) string {
	return mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary})
}

func collides(mp *Multipart, boundary string) bool {
	d := []byte("--" + boundary)
	return bytes.Contains(mp.Header, d) || bytes.Contains(mp.Payload, d)
}

// WriteMultipartBoundary is WriteMultipart with a given boundary (as from
// NewMultipartBoundary), so that the Content-Type can be sent first. It
// fails if the header or payload contains the delimiter.
func WriteMultipartBoundary(w io.Writer, mp *Multipart, boundary string) (contentType string, err error) {
	if mp == nil {
		return "", errors.New("idsmsg: WriteMultipart: nil message")
	}
	pt := mp.PayloadType
	if pt == "" {
		pt = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(pt); err != nil || strings.ContainsAny(pt, "\r\n") {
		return "", perr("payload", "invalid payload Content-Type %q", pt)
	}
	if collides(mp, boundary) {
		return "", perr("boundary", "the message contains the delimiter --%s", boundary)
	}
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return "", perr("boundary", "%v", err)
	}
	pw, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Disposition": {`form-data; name="header"`},
		"Content-Type":        {"application/ld+json"},
	})
	if err != nil {
		return "", err
	}
	if _, err := pw.Write(mp.Header); err != nil {
		return "", err
	}
	if mp.Payload != nil {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Disposition": {`form-data; name="payload"`},
			"Content-Type":        {pt},
		})
		if err != nil {
			return "", err
		}
		if _, err := pw.Write(mp.Payload); err != nil {
			return "", err
		}
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	return MultipartContentType(boundary), nil
}
