package idsmsg

import (
	"bytes"
	"io"
	"testing"
)

func BenchmarkParseMarshal(b *testing.B) {
	hdr := readTestdata(b, "ecosystem_rejection.json")
	b.ReportAllocs()
	for b.Loop() {
		m, err := Parse(hdr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppLayer1MiB(b *testing.B) {
	m := &AppMessage{IDS: true, Header: string(readTestdata(b, "ecosystem_rejection.json")),
		Payload: make([]byte, 1<<20), Extra: []Header{{HdrStatus, "200"}, {"Content-Type", "application/octet-stream"}}}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		enc, err := EncodeApp(m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeApp(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMultipart1MiB(b *testing.B) {
	mp := &Multipart{Header: readTestdata(b, "ecosystem_rejection.json"), Payload: make([]byte, 1<<20)}
	var buf bytes.Buffer
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		ct, err := WriteMultipart(&buf, mp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ReadMultipart(ct, io.NopCloser(&buf), 2<<20); err != nil {
			b.Fatal(err)
		}
	}
}
