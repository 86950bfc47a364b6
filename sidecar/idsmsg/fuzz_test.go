package idsmsg

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"mime"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts survives
// Marshal → Parse unchanged, with a stable Marshal.
func FuzzParse(f *testing.F) {
	for _, ex := range seedExamples {
		mp, err := ReadMultipart(ex.contentType, bytes.NewReader(readTestdata(f, ex.file)), 1<<20)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mp.Header)
	}
	f.Add(readTestdata(f, "infomodel_connector-update.jsonld"))
	f.Add(readTestdata(f, "ecosystem_rejection.json"))
	f.Add([]byte(`{"@context":[{"x":"https://w3id.org/idsa/core/"}],"@type":"x:A","x:b":{"@id":"x:c"},"@graph":[]}`))
	f.Add([]byte(`{"@type":["ids:M"],"ids:issued":[{"@value":"2024-01-01T00:00:00.000000001+14:00"}]}`))
	f.Fuzz(func(t *testing.T, header []byte) {
		m, err := Parse(header)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed message: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("Marshal wrote invalid JSON: %s", out)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if d := sameMessage(back, m, true); d != "" {
			t.Fatalf("round trip: %s\nin:  %s\nout: %s", d, header, out)
		}
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("Marshal not stable:\n%s\n%s", out, again)
		}
	})
}

// FuzzReadMultipart: ReadMultipart never panics, only accepts a JSON
// header, and what it accepts survives WriteMultipart → ReadMultipart.
func FuzzReadMultipart(f *testing.F) {
	for _, ex := range seedExamples {
		_, params, _ := mime.ParseMediaType(ex.contentType)
		f.Add(params["boundary"], readTestdata(f, ex.file), false)
	}
	f.Add("zz", []byte("--zz\r\nContent-Disposition: form-data; name=header\r\nContent-Transfer-Encoding: base64\r\n\r\ne30=\r\n--zz\r\n\r\n\r\n--zz--"), true)
	f.Add("b", []byte("--b\n\n{}\n--b\nContent-Transfer-Encoding: quoted-printable\n\na=3D\n--b--"), true)
	f.Fuzz(func(t *testing.T, boundary string, body []byte, mixed bool) {
		ct := "multipart/form-data"
		if mixed {
			ct = "multipart/mixed"
		}
		ct = mime.FormatMediaType(ct, map[string]string{"boundary": boundary})
		if ct == "" {
			return
		}
		mp, err := ReadMultipart(ct, bytes.NewReader(body), 1<<20)
		if err != nil {
			return
		}
		if !json.Valid(mp.Header) {
			t.Fatalf("accepted a header that is not JSON: %q", mp.Header)
		}
		var buf bytes.Buffer
		ct2, err := WriteMultipart(&buf, mp)
		if err != nil {
			if _, _, perr := mime.ParseMediaType(mp.PayloadType); perr != nil || mp.PayloadType == "" {
				return // a payload type we refuse to write
			}
			t.Fatalf("WriteMultipart: %v", err)
		}
		back, err := ReadMultipart(ct2, &buf, 0)
		if err != nil {
			t.Fatalf("ReadMultipart(WriteMultipart()): %v", err)
		}
		if !bytes.Equal(back.Header, mp.Header) || !bytes.Equal(back.Payload, mp.Payload) || (back.Payload == nil) != (mp.Payload == nil) {
			t.Fatalf("round trip changed the message")
		}
	})
}

// FuzzDecodeApp: DecodeApp never panics, agrees with proto.Unmarshal on
// every input, and what it decodes re-encodes to an equal message.
func FuzzDecodeApp(f *testing.F) {
	for _, v := range appVectors {
		b, _ := hex.DecodeString(v.hex)
		f.Add(b)
	}
	for _, h := range []string{"2801120c0a017b38021a050a016b18004a00", "0a030a016112030a0162", "12080a01611a030a01781203120179", "0b08010c12020a00"} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkLikeProto(t, b)
		m, err := DecodeApp(b)
		if err != nil {
			return
		}
		enc, err := EncodeApp(m)
		if err != nil {
			t.Fatalf("EncodeApp of a decoded message: %v", err)
		}
		back, err := DecodeApp(enc)
		if err != nil || !sameApp(back, m) {
			t.Fatalf("re-encode round trip: %v", err)
		}
	})
}
