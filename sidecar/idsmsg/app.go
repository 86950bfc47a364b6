package idsmsg

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/proto/applayerpb"
)

// AppMessage is what travels in IdscpData.data: the idscp2-jvm application
// layer's AppLayerMessage, either an IdsMessage (IDS true: Header is the
// JSON-LD IDS message) or a GenericMessage (IDS false: Header is free
// text), each with a payload and extraHeaders.
type AppMessage struct {
	IDS     bool
	Header  string
	Payload []byte
	Extra   []Header
}

// Header is one extraHeaders entry (HeaderEntry{name, value}). Names may
// repeat; order is kept.
type Header struct{ Name, Value string }

// Lookup returns the value of the first entry named name (compared
// case-insensitively) and whether there is one.
func Lookup(extra []Header, name string) (string, bool) {
	for _, h := range extra {
		if equalFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// EncodeApp encodes m as an AppLayerMessage, byte for byte what
// idscp2-jvm's protobuf encoder produces (fields in number order, empty
// proto3 fields left out). Strings must be valid UTF-8.
func EncodeApp(m *AppMessage) ([]byte, error) {
	if m == nil {
		return nil, errors.New("idsmsg: EncodeApp: nil message")
	}
	var entries []*applayerpb.HeaderEntry
	if len(m.Extra) > 0 {
		entries = make([]*applayerpb.HeaderEntry, len(m.Extra))
		for i, h := range m.Extra {
			entries[i] = &applayerpb.HeaderEntry{Name: h.Name, Value: h.Value}
		}
	}
	var msg applayerpb.AppLayerMessage
	if m.IDS {
		msg.Message = &applayerpb.AppLayerMessage_IdsMessage{IdsMessage: &applayerpb.IdsMessage{
			Header: m.Header, Payload: m.Payload, ExtraHeaders: entries}}
	} else {
		msg.Message = &applayerpb.AppLayerMessage_GenericMessage{GenericMessage: &applayerpb.GenericMessage{
			Header: m.Header, Payload: m.Payload, ExtraHeaders: entries}}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&msg)
	if err != nil {
		return nil, fmt.Errorf("idsmsg: EncodeApp: %w", err)
	}
	return b, nil
}

// DecodeApp decodes an AppLayerMessage with the semantics of
// proto.Unmarshal (unknown fields skipped, the last oneof case wins,
// repeated submessages merge, strings must be valid UTF-8) but without
// copying the payload: Payload aliases b, so b must not be modified while
// the message is in use. An AppLayerMessage with neither genericMessage
// nor idsMessage set is an error.
func DecodeApp(b []byte) (*AppMessage, error) {
	var m *AppMessage
	var which protowire.Number
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, appErr("AppLayerMessage", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, appErr("AppLayerMessage", protowire.ParseError(n))
			}
			b = b[n:]
			if which != num { // another oneof case replaces the message
				m, which = &AppMessage{IDS: num == 2}, num
			}
			if err := decodeInner(v, m); err != nil {
				return nil, err
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, appErr("AppLayerMessage", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if m == nil {
		return nil, errors.New("idsmsg: DecodeApp: AppLayerMessage has neither genericMessage nor idsMessage")
	}
	return m, nil
}

func appErr(where string, err error) error {
	return fmt.Errorf("idsmsg: DecodeApp: %s: %w", where, err)
}

// consumeTag is protowire.ConsumeTag that also refuses field numbers
// above protowire.MaxValidNumber, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -2 // protowire's code for "invalid field number"
	}
	return num, typ, n
}

// decodeInner merges a GenericMessage/IdsMessage into m.
func decodeInner(b []byte, m *AppMessage) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return appErr("message", protowire.ParseError(n))
		}
		b = b[n:]
		if num >= 1 && num <= 3 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return appErr("message", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				if !utf8.Valid(v) {
					return appErr("header", errors.New("invalid UTF-8"))
				}
				m.Header = string(v)
			case 2:
				m.Payload = v
			case 3:
				h, err := decodeEntry(v)
				if err != nil {
					return err
				}
				m.Extra = append(m.Extra, h)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return appErr("message", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

func decodeEntry(b []byte) (Header, error) {
	var h Header
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return h, appErr("extraHeaders", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, appErr("extraHeaders", protowire.ParseError(n))
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return h, appErr("extraHeaders", errors.New("invalid UTF-8"))
			}
			if num == 1 {
				h.Name = string(v)
			} else {
				h.Value = string(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return h, appErr("extraHeaders", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return h, nil
}

// equalFold is strings.EqualFold for ASCII header names.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
