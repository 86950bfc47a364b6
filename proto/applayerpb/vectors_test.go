package applayerpb_test

// App-layer vectors from the shared spec §8 (/work/shared/spec/idscp2.md),
// hex copied exactly as printed there.

import (
	"bytes"
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/proto"

	ap "github.com/idscp2-sidecar/idscp2-sidecar/proto/applayerpb"
)

var appVectors = []struct {
	name string
	hex  string
	msg  *ap.AppLayerMessage
}{
	{`AppLayer Generic{header "PING", payload "hi", extra {k:v}}`,
		"0a120a0450494e47120268691a060a016b120176",
		&ap.AppLayerMessage{Message: &ap.AppLayerMessage_GenericMessage{GenericMessage: &ap.GenericMessage{
			Header:       "PING",
			Payload:      []byte("hi"),
			ExtraHeaders: []*ap.HeaderEntry{{Name: "k", Value: "v"}},
		}}}},
	{`AppLayer Ids{header "{}"}`,
		"12040a027b7d",
		&ap.AppLayerMessage{Message: &ap.AppLayerMessage_IdsMessage{IdsMessage: &ap.IdsMessage{Header: "{}"}}}},
	// Derived rows (not in the spec table): empty oneof cases and header
	// order, which must follow the repeated field's order.
	{`AppLayer Generic{}`, "0a00",
		&ap.AppLayerMessage{Message: &ap.AppLayerMessage_GenericMessage{GenericMessage: &ap.GenericMessage{}}}},
	{`AppLayer Ids{payload "p", extra {b:1},{a:2}}`,
		"1213120170" + "1a060a0162120131" + "1a060a0161120132",
		&ap.AppLayerMessage{Message: &ap.AppLayerMessage_IdsMessage{IdsMessage: &ap.IdsMessage{
			Payload:      []byte("p"),
			ExtraHeaders: []*ap.HeaderEntry{{Name: "b", Value: "1"}, {Name: "a", Value: "2"}},
		}}}},
}

func TestVectorsAppLayer(t *testing.T) {
	for _, v := range appVectors {
		t.Run(v.name, func(t *testing.T) {
			want, err := hex.DecodeString(v.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := proto.MarshalOptions{Deterministic: true}.Marshal(v.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal(Deterministic) = %x, want %x", got, want)
			}
			if plain, err := proto.Marshal(v.msg); err != nil || !bytes.Equal(plain, want) {
				t.Errorf("proto.Marshal = %x, %v; want %x", plain, err, want)
			}
			back := &ap.AppLayerMessage{}
			if err := proto.Unmarshal(want, back); err != nil {
				t.Fatalf("Unmarshal(%x): %v", want, err)
			}
			if !proto.Equal(back, v.msg) {
				t.Errorf("Unmarshal(%x) = %v, want %v", want, back, v.msg)
			}
			if u := back.ProtoReflect().GetUnknown(); len(u) != 0 {
				t.Errorf("unknown fields %x", u)
			}
		})
	}
}
