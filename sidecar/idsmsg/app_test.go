package idsmsg

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/proto/applayerpb"
)

// Vectors from ../shared/spec/idscp2.md §8 (hex as printed there), plus
// derived rows.
var appVectors = []struct {
	name string
	hex  string
	msg  AppMessage
}{
	{`AppLayer Generic{header "PING", payload "hi", extra {k:v}}`, "0a120a0450494e47120268691a060a016b120176",
		AppMessage{Header: "PING", Payload: []byte("hi"), Extra: []Header{{"k", "v"}}}},
	{`AppLayer Ids{header "{}"}`, "12040a027b7d",
		AppMessage{IDS: true, Header: "{}"}},
	{`derived: Generic{}`, "0a00", AppMessage{}},
	{`derived: Ids{payload "p", extra {b:1},{a:2}} keeps order`, "1213120170" + "1a060a0162120131" + "1a060a0161120132",
		AppMessage{IDS: true, Payload: []byte("p"), Extra: []Header{{"b", "1"}, {"a", "2"}}}},
	{`derived: Ids{extra {"":""}}`, "12021a00", AppMessage{IDS: true, Extra: []Header{{}}}},
}

func sameApp(a, b *AppMessage) bool {
	return a.IDS == b.IDS && a.Header == b.Header && bytes.Equal(a.Payload, b.Payload) &&
		slices.Equal(a.Extra, b.Extra)
}

func TestAppVectors(t *testing.T) {
	for _, v := range appVectors {
		t.Run(v.name, func(t *testing.T) {
			want, _ := hex.DecodeString(v.hex)
			got, err := EncodeApp(&v.msg)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("EncodeApp = %x, %v; want %x", got, err, want)
			}
			back, err := DecodeApp(want)
			if err != nil || !sameApp(back, &v.msg) {
				t.Errorf("DecodeApp(%x) = %+v, %v; want %+v", want, back, err, v.msg)
			}
		})
	}
}

func TestAppRoundTripLarge(t *testing.T) {
	hdr, _ := (&Message{Type: PlainRequestType, ID: NewID(PlainRequestType)}).Marshal()
	m := &AppMessage{IDS: true, Header: string(hdr), Payload: randomBytes(t, 5<<20+3),
		Extra: []Header{{HdrMethod, "PUT"}, {HdrPath, "/a/b%20c"}, {"Content-Type", "application/octet-stream"}}}
	b, err := EncodeApp(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeApp(b)
	if err != nil || !sameApp(back, m) {
		t.Fatalf("round trip failed: %v", err)
	}
	// The payload aliases the input rather than copying 5 MiB.
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(back.Payload)))
	if p < start || p >= start+uintptr(len(b)) {
		t.Error("payload was copied; DecodeApp documents that it aliases the input")
	}
	// The generated code agrees.
	var pm applayerpb.AppLayerMessage
	if err := proto.Unmarshal(b, &pm); err != nil || !bytes.Equal(pm.GetIdsMessage().GetPayload(), m.Payload) {
		t.Errorf("proto.Unmarshal disagrees: %v", err)
	}
}

func TestDecodeAppErrors(t *testing.T) {
	for name, h := range map[string]string{
		"empty input":                 "",
		"no oneof case, unknown only": "1801",
		"truncated tag":               "80",
		"truncated length":            "12",
		"length past the end":         "1205",
		"inner truncated":             "12020a05",
		"header invalid UTF-8":        "12030a01ff",
		"extra name invalid UTF-8":    "12051a030a01ff",
		"extra value truncated":       "12041a021201",
		"end group at top level":      "0c",
		"field number 0":              "02",
	} {
		b, _ := hex.DecodeString(h)
		if m, err := DecodeApp(b); err == nil {
			t.Errorf("%s (%s): DecodeApp = %+v, want an error", name, h, m)
		}
		var pm applayerpb.AppLayerMessage
		perr := proto.Unmarshal(b, &pm)
		if perr == nil && pm.GetMessage() != nil {
			t.Errorf("%s: proto.Unmarshal accepts %s", name, h)
		}
	}
}

// TestDecodeAppLikeProto checks the proto semantics DecodeApp reproduces
// against the generated code: unknown fields, wrong wire types, a oneof
// case replaced by another, a repeated submessage merged.
func TestDecodeAppLikeProto(t *testing.T) {
	for name, h := range map[string]string{
		"unknown fields everywhere":         "2801" + "120c" + "0a017b" + "3802" + "1a050a016b1800" + "4a00",
		"wrong wire type for a known field": "1001" + "12020801",
		"generic then ids":                  "0a030a0161" + "12030a0162",
		"ids then generic":                  "12030a0162" + "0a03120178",
		"ids twice merges":                  "12080a0161" + "1a030a0178" + "1203120179",
		"group skipped":                     "0b0801" + "0c" + "12020a00",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("%s: bad hex", name)
		}
		checkLikeProto(t, b)
	}
}

// checkLikeProto fails t when DecodeApp and proto.Unmarshal disagree on b.
func checkLikeProto(t testing.TB, b []byte) {
	t.Helper()
	got, err := DecodeApp(b)
	var pm applayerpb.AppLayerMessage
	perr := proto.Unmarshal(b, &pm)
	if perr == nil && pm.GetMessage() == nil {
		perr = errEmpty
	}
	if (err == nil) != (perr == nil) {
		t.Fatalf("%x: DecodeApp err %v, proto.Unmarshal err %v", b, err, perr)
	}
	if err != nil {
		return
	}
	want := &AppMessage{}
	var hdrs []*applayerpb.HeaderEntry
	switch x := pm.GetMessage().(type) {
	case *applayerpb.AppLayerMessage_IdsMessage:
		want.IDS, want.Header, want.Payload, hdrs = true, x.IdsMessage.GetHeader(), x.IdsMessage.GetPayload(), x.IdsMessage.GetExtraHeaders()
	case *applayerpb.AppLayerMessage_GenericMessage:
		want.Header, want.Payload, hdrs = x.GenericMessage.GetHeader(), x.GenericMessage.GetPayload(), x.GenericMessage.GetExtraHeaders()
	}
	for _, e := range hdrs {
		want.Extra = append(want.Extra, Header{e.GetName(), e.GetValue()})
	}
	if !sameApp(got, want) {
		t.Fatalf("%x: DecodeApp = %+v, proto.Unmarshal = %+v", b, got, want)
	}
}

var errEmpty = errors.New("AppLayerMessage without a oneof case")

func TestEncodeAppErrors(t *testing.T) {
	if _, err := EncodeApp(nil); err == nil {
		t.Error("nil accepted")
	}
	if _, err := EncodeApp(&AppMessage{IDS: true, Header: "\xff"}); err == nil {
		t.Error("invalid UTF-8 header accepted")
	}
	if _, err := EncodeApp(&AppMessage{Extra: []Header{{"k", "\xff"}}}); err == nil {
		t.Error("invalid UTF-8 extra header accepted")
	}
}

func TestLookup(t *testing.T) {
	extra := []Header{{"camelhttpmethod", "GET"}, {HdrMethod, "POST"}}
	if v, ok := Lookup(extra, HdrMethod); !ok || v != "GET" {
		t.Errorf("Lookup = %q %v", v, ok)
	}
	if _, ok := Lookup(extra, HdrPath); ok {
		t.Error("Lookup found a missing header")
	}
}
