package idscp2

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// ---------------------------------------------------------------------------
// Helpers (prefixed ft to stay out of the way of other test files).

func ftHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ftFrame prefixes body with its big-endian length.
func ftFrame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// ftPrefix is a bare length prefix (n may be negative).
func ftPrefix(n int32) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(n))
}

// ftParseSpec reads the spec's §10 notation: blank-separated hex bytes,
// "quoted ASCII" and <placeholders>, which take the next fill value.
func ftParseSpec(t testing.TB, s string, fill ...[]byte) []byte {
	t.Helper()
	var out []byte
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		switch s[0] {
		case '"':
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				t.Fatalf("unterminated quote in %q", s)
			}
			out = append(out, s[1:1+end]...)
			s = s[2+end:]
		case '<':
			end := strings.IndexByte(s, '>')
			if end < 0 || len(fill) == 0 {
				t.Fatalf("bad or unfilled placeholder in %q", s)
			}
			out = append(out, fill[0]...)
			fill, s = fill[1:], s[end+1:]
		default:
			if len(s) < 2 {
				t.Fatalf("bad hex in %q", s)
			}
			out = append(out, ftHex(t, s[:2])...)
			s = s[2:]
		}
	}
	if len(fill) != 0 {
		t.Fatalf("%d placeholder values left over", len(fill))
	}
	return out
}

func ftPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8 + 1)
	}
	return p
}

func ftDataMsg(payload []byte, bit bool) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpData{IdscpData: &pb.IdscpData{Data: payload, AlternatingBit: bit}}}
}

func ftAckMsg(bit bool) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpAck{IdscpAck: &pb.IdscpAck{AlternatingBit: bit}}}
}

func ftHello(token string, supported, expected []string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpHello{IdscpHello: &pb.IdscpHello{
		Version:               2,
		DynamicAttributeToken: &pb.IdscpDat{Token: []byte(token)},
		SupportedRaSuite:      supported,
		ExpectedRaSuite:       expected,
	}}}
}

func ftClose(code pb.IdscpClose_CloseCause, msg string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpClose{IdscpClose: &pb.IdscpClose{CauseCode: code, CauseMsg: msg}}}
}

// ftMemConn is an in-memory net.Conn that serves data in chunks of at most
// chunk bytes (0 = as much as asked for). With loop it starts over when
// the data is exhausted (benchmarks). lastErr, if set, is returned together
// with the last bytes (as io.Reader allows). onRead sees every buffer handed
// to Read and the number of bytes served before it.
type ftMemConn struct {
	data     []byte
	off      int
	chunk    int
	loop     bool
	lastErr  error
	onRead   func(p []byte, served int)
	deadline time.Time
	setCalls int
}

func (c *ftMemConn) Read(p []byte) (int, error) {
	if c.onRead != nil {
		c.onRead(p, c.off)
	}
	if c.off >= len(c.data) {
		if !c.loop || len(c.data) == 0 {
			return 0, io.EOF
		}
		c.off = 0
	}
	n := len(p)
	if c.chunk > 0 && n > c.chunk {
		n = c.chunk
	}
	n = copy(p[:n], c.data[c.off:])
	c.off += n
	if c.off == len(c.data) && c.lastErr != nil && !c.loop {
		return n, c.lastErr
	}
	return n, nil
}

// ftTimeoutErr is a net.Error timeout, as a deadline produces.
type ftTimeoutErr struct{}

func (ftTimeoutErr) Error() string   { return "i/o timeout" }
func (ftTimeoutErr) Timeout() bool   { return true }
func (ftTimeoutErr) Temporary() bool { return true }

func (c *ftMemConn) Write(p []byte) (int, error)       { return len(p), nil }
func (c *ftMemConn) Close() error                      { return nil }
func (c *ftMemConn) LocalAddr() net.Addr               { return ftAddr{} }
func (c *ftMemConn) RemoteAddr() net.Addr              { return ftAddr{} }
func (c *ftMemConn) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c *ftMemConn) SetWriteDeadline(time.Time) error  { return nil }
func (c *ftMemConn) SetReadDeadline(t time.Time) error { c.deadline = t; c.setCalls++; return nil }
func (ftAddr) Network() string                         { return "mem" }
func (ftAddr) String() string                          { return "mem" }

type ftAddr struct{}

var ftTransports = []string{"pipe", "tcp"}

// ftConnPair returns the reading and the writing end of a net.Pipe or of a
// loopback TCP connection; both are closed when the test ends.
func ftConnPair(t *testing.T, kind string) (r, w net.Conn) {
	t.Helper()
	switch kind {
	case "pipe":
		r, w = net.Pipe()
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() { c, err := ln.Accept(); ch <- res{c, err} }()
		w, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a := <-ch
		if a.err != nil {
			w.Close()
			t.Fatal(a.err)
		}
		r = a.c
	default:
		t.Fatalf("unknown transport %q", kind)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// ftWrite runs the writer f in a goroutine. When the test ends both
// connections are closed and the goroutine is waited for, so nothing leaks.
func ftWrite(t *testing.T, r, w net.Conn, f func(w net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f(w) }()
	t.Cleanup(func() { r.Close(); w.Close(); wg.Wait() })
}

// ftTotalAlloc is the cumulative number of bytes allocated on the heap
// (runtime.MemStats.TotalAlloc without ReadMemStats' stop-the-world, which
// would dominate a fuzzing run).
func ftTotalAlloc() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// ---------------------------------------------------------------------------
// Vectors (spec §8 and §10) through the framing code.

var ftSection8 = []struct {
	hex string
	msg *pb.IdscpMessage
}{
	{"0a17080212030a01781a0644756d6d7932220644756d6d7932", ftHello("x", []string{"Dummy2"}, []string{"Dummy2"})},
	{"120c120a5573657220636c6f7365", ftClose(pb.IdscpClose_USER_SHUTDOWN, "User close")},
	{"12150801121148616e647368616b652074696d656f7574", ftClose(pb.IdscpClose_TIMEOUT, "Handshake timeout")},
	{"12100803120c4e6f2076616c696420444154", ftClose(pb.IdscpClose_NO_VALID_DAT, "No valid DAT")},
	{"1a00", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDatExpired{IdscpDatExpired: &pb.IdscpDatExpired{}}}},
	{"22030a0178", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDat{IdscpDat: &pb.IdscpDat{Token: []byte("x")}}}},
	{"2a00", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpReRa{IdscpReRa: &pb.IdscpReRa{}}}},
	{"32060a0474657374", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaProver{IdscpRaProver: &pb.IdscpRaProver{Data: []byte("test")}}}},
	{"3a060a0474657374", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaVerifier{IdscpRaVerifier: &pb.IdscpRaVerifier{Data: []byte("test")}}}},
	{"3200", &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaProver{IdscpRaProver: &pb.IdscpRaProver{}}}},
	{"42050a034f4e45", ftDataMsg([]byte("ONE"), false)},
	{"42070a034f4e451001", ftDataMsg([]byte("ONE"), true)},
	{"4a00", ftAckMsg(false)},
	{"4a020801", ftAckMsg(true)},
}

func TestFrameVectorsSection8(t *testing.T) {
	for _, v := range ftSection8 {
		t.Run(v.hex, func(t *testing.T) {
			body := ftHex(t, v.hex)
			got, err := appendFrame(nil, v.msg)
			if err != nil {
				t.Fatal(err)
			}
			if want := ftFrame(body); !bytes.Equal(got, want) {
				t.Errorf("appendFrame = %x, want %x", got, want)
			}
			m, err := decodeMessage(body)
			if err != nil || !proto.Equal(m, v.msg) {
				t.Errorf("decodeMessage = %v, %v; want %v", m, err, v.msg)
			}
			payload, bit, ok := decodeData(body)
			if d := v.msg.GetIdscpData(); d != nil {
				if !ok || !bytes.Equal(payload, d.Data) || bit != d.AlternatingBit {
					t.Errorf("decodeData = %q, %v, %v; want %q, %v, true", payload, bit, ok, d.Data, d.AlternatingBit)
				}
				df, err := appendDataFrame(nil, d.Data, d.AlternatingBit)
				if err != nil || !bytes.Equal(df, ftFrame(body)) {
					t.Errorf("appendDataFrame = %x, %v; want %x", df, err, ftFrame(body))
				}
			} else if ok {
				t.Errorf("decodeData accepted a non-data message")
			}
			if a := v.msg.GetIdscpAck(); a != nil {
				if f := ackFrame(a.AlternatingBit); !bytes.Equal(f, ftFrame(body)) {
					t.Errorf("ackFrame(%v) = %x, want %x", a.AlternatingBit, f, ftFrame(body))
				}
			}
		})
	}
}

func TestFrameVectorsFramedAck(t *testing.T) {
	if got, want := ackFrame(true), ftHex(t, "000000044a020801"); !bytes.Equal(got, want) {
		t.Errorf("ackFrame(true) = %x, want %x (spec §8 framed Ack{true})", got, want)
	}
	if got, want := ackFrame(false), ftParseSpec(t, "00 00 00 02 4a 00"); !bytes.Equal(got, want) {
		t.Errorf("ackFrame(false) = %x, want %x (spec §10)", got, want)
	}
	for _, bit := range []bool{false, true} {
		want, err := appendFrame(nil, ftAckMsg(bit))
		if err != nil || !bytes.Equal(ackFrame(bit), want) {
			t.Errorf("ackFrame(%v) = %x, appendFrame = %x, %v", bit, ackFrame(bit), want, err)
		}
	}
}

// TestFrameVectorsSection10 checks the captured frames, prefix included.
func TestFrameVectorsSection10(t *testing.T) {
	nullRa := []string{"NullRa"}
	probeToken := []byte("go-probe-dummy-dat")
	probeData := []byte("hello from go probe\n")
	echo := []byte("echo from the peer: hello from go probe\n!") // 41 bytes of our choosing
	jvmToken := "This dummy token is generated by 'NullDAPS' driver! Do not depend on it!"
	for _, v := range []struct {
		name  string
		spec  string
		fill  [][]byte
		msg   *pb.IdscpMessage
		canon bool // proto.Marshal reproduces the bytes
	}{
		{"probe hello", `00 00 00 2a 0a 28 08 02 12 14 0a 12 <18 bytes token> 1a 06 "NullRa" 22 06 "NullRa"`,
			[][]byte{probeToken}, ftHello(string(probeToken), nullRa, nullRa), true},
		{"jvm hello", `00 00 00 60 0a 5e 08 02 12 4a 0a 48 "This dummy token is generated by 'NullDAPS' driver! Do not depend on it!" 1a 06 "NullRa" 22 06 "NullRa"`,
			nil, ftHello(jvmToken, nullRa, nullRa), true},
		{"ra prover", `00 00 00 02 32 00`, nil,
			&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaProver{IdscpRaProver: &pb.IdscpRaProver{}}}, true},
		{"ra verifier", `00 00 00 02 3a 00`, nil,
			&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaVerifier{IdscpRaVerifier: &pb.IdscpRaVerifier{}}}, true},
		{"probe data", `00 00 00 18 42 16 0a 14 <20 bytes>`, [][]byte{probeData}, ftDataMsg(probeData, false), true},
		{"ack", `00 00 00 02 4a 00`, nil, ftAckMsg(false), true},
		{"echo data", `00 00 00 2d 42 2b 0a 29 <41 bytes>`, [][]byte{echo}, ftDataMsg(echo, false), true},
		// Hand-encoded by the probe with an explicit cause_code 0: decodes,
		// but canonical encoding omits the 08 00.
		{"probe close", `00 00 00 13 12 11 08 00 12 0d "User shutdown"`, nil,
			ftClose(pb.IdscpClose_USER_SHUTDOWN, "User shutdown"), false},
		{"jvm close", `00 00 00 0e 12 0c 12 0a "User close"`, nil,
			ftClose(pb.IdscpClose_USER_SHUTDOWN, "User close"), true},
	} {
		t.Run(v.name, func(t *testing.T) {
			frame := ftParseSpec(t, v.spec, v.fill...)
			fr := &frameReader{conn: &ftMemConn{data: frame}, limit: DefaultMaxFrameSize, timeout: time.Second}
			body, err := fr.read()
			if err != nil || len(body) != len(frame)-prefixLen {
				t.Fatalf("frameReader.read = %d bytes, %v; want %d bytes", len(body), err, len(frame)-prefixLen)
			}
			m, err := decodeMessage(body)
			if err != nil || !proto.Equal(m, v.msg) {
				t.Fatalf("decodeMessage = %v, %v; want %v", m, err, v.msg)
			}
			got, err := appendFrame(nil, v.msg)
			if err != nil {
				t.Fatal(err)
			}
			if v.canon != bytes.Equal(got, frame) {
				t.Errorf("appendFrame = %x, spec %x (canonical: %v)", got, frame, v.canon)
			}
			if d := v.msg.GetIdscpData(); d != nil {
				df, _ := appendDataFrame(nil, d.Data, d.AlternatingBit)
				if !bytes.Equal(df, frame) {
					t.Errorf("appendDataFrame = %x, want %x", df, frame)
				}
				p, bit, ok := decodeData(body)
				if !ok || !bytes.Equal(p, d.Data) || bit != d.AlternatingBit {
					t.Errorf("decodeData = %q, %v, %v", p, bit, ok)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Hand-written data codec against the generic protobuf path.

// ftDataSizes are the sizes asked for plus the ones where the outer
// (IdscpData) length varint grows by one byte only when the bit is set.
var ftDataSizes = []int{0, 1, 124, 125, 126, 127, 128, 16379, 16380, 16383, 16384, 1 << 20}

func TestFrameAppendDataMatchesProto(t *testing.T) {
	for _, n := range ftDataSizes {
		for _, bit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/%v", n, bit), func(t *testing.T) {
				payload := ftPayload(n)
				want, err := appendFrame(nil, ftDataMsg(payload, bit))
				if err != nil {
					t.Fatal(err)
				}
				got, err := appendDataFrame(nil, payload, bit)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("appendDataFrame differs from appendFrame:\n got %x...\nwant %x...", got[:min(len(got), 16)], want[:min(len(want), 16)])
				}
				if body, _ := protowire.ConsumeVarint(want[prefixLen+1:]); dataBodyLen(n, bit) != int(body) {
					t.Errorf("dataBodyLen = %d, encoded body has %d bytes", dataBodyLen(n, bit), body)
				}
				// dataFrameSize is an exact bound for bit=true, an upper bound otherwise.
				if size := dataFrameSize(n); size < len(want) || bit && size != len(want) {
					t.Errorf("dataFrameSize(%d) = %d, frame has %d bytes", n, size, len(want))
				}
				// Appending after existing bytes: the prefix is placed at the start offset.
				pre := []byte("xyz")
				got, err = appendDataFrame(pre, payload, bit)
				if err != nil || !bytes.Equal(got[:3], []byte("xyz")) || !bytes.Equal(got[3:], want) {
					t.Fatalf("appendDataFrame after 3 bytes = %x..., %v", got[:min(len(got), 16)], err)
				}
				pre = []byte("xyz")
				got, err = appendFrame(pre, ftDataMsg(payload, bit))
				if err != nil || !bytes.Equal(got[:3], []byte("xyz")) || !bytes.Equal(got[3:], want) {
					t.Fatalf("appendFrame after 3 bytes = %x..., %v", got[:min(len(got), 16)], err)
				}
				// A buffer sized by dataFrameSize is never reallocated.
				buf := make([]byte, 0, dataFrameSize(n))
				got, _ = appendDataFrame(buf, payload, bit)
				if len(got) > 0 && &got[0] != &buf[:1][0] {
					t.Errorf("appendDataFrame reallocated a buffer of dataFrameSize")
				}
			})
		}
	}
}

func TestDecodeDataCanonical(t *testing.T) {
	for _, n := range ftDataSizes {
		for _, bit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/%v", n, bit), func(t *testing.T) {
				payload := ftPayload(n)
				f, err := appendDataFrame(nil, payload, bit)
				if err != nil {
					t.Fatal(err)
				}
				frame := f[prefixLen:]
				p, b, ok := decodeData(frame)
				if !ok || b != bit || !bytes.Equal(p, payload) {
					t.Fatalf("decodeData = %d bytes, %v, %v; want %d bytes, %v, true", len(p), b, ok, n, bit)
				}
				if n > 0 {
					// The payload aliases the frame, ending before the optional bit.
					end := len(frame)
					if bit {
						end -= 2
					}
					if &p[len(p)-1] != &frame[end-1] {
						t.Errorf("payload does not alias the frame")
					}
				}
				m, err := decodeMessage(frame)
				if err != nil {
					t.Fatal(err)
				}
				if d := m.GetIdscpData(); d == nil || !bytes.Equal(d.Data, payload) || d.AlternatingBit != bit {
					t.Fatalf("decodeMessage disagrees with decodeData")
				}
			})
		}
	}
}

func TestDecodeDataNonCanonical(t *testing.T) {
	one, two := "0a034f4e45", "0a0354574f" // data "ONE", data "TWO"
	data := func(p string, bit bool) *pb.IdscpMessage { return ftDataMsg([]byte(p), bit) }
	for _, v := range []struct {
		name string
		hex  string
		want *pb.IdscpMessage // nil: decodeMessage must fail
	}{
		{"fields reversed", "42071001" + one, data("ONE", true)},
		{"bit=false encoded as 1000", "4207" + one + "1000", data("ONE", false)},
		{"only bit=false encoded", "42021000", data("", false)},
		{"empty payload encoded", "42020a00", data("", false)},
		{"empty payload encoded, bit true", "42040a001001", data("", true)},
		{"duplicate payload", "420a" + one + two, data("TWO", false)},
		{"duplicate bit", "4209" + one + "10011001", data("ONE", true)},
		{"duplicate bit, last false", "4209" + one + "10011000", data("ONE", false)},
		{"duplicate IdscpData field (merged)", "4205" + one + "42021001", data("ONE", true)},
		{"bool encoded as 2", "4207" + one + "1002", data("ONE", true)},
		{"bool encoded as overlong 1", "4208" + one + "108100", data("ONE", true)},
		{"data then ack (last oneof wins)", "4205" + one + "4a00", ftAckMsg(false)},
		{"trailing garbage", "4205" + one + "ff", nil},
		{"trailing zero byte", "4205" + one + "00", nil},
		{"garbage inside IdscpData", "4206" + one + "ff", nil},
		{"outer length too long", "4209" + one, nil},
		{"payload length too long", "42050a094f4e45", nil},
		{"ack", "4a00", ftAckMsg(false)},
		{"empty frame", "", &pb.IdscpMessage{}},
	} {
		t.Run(v.name, func(t *testing.T) {
			frame := ftHex(t, v.hex)
			if p, b, ok := decodeData(frame); ok {
				t.Errorf("decodeData(%x) = %q, %v, true; want ok=false", frame, p, b)
			}
			m, err := decodeMessage(frame)
			if v.want == nil {
				if err == nil {
					t.Errorf("decodeMessage(%x) = %v, want an error", frame, m)
				}
				return
			}
			if err != nil || !proto.Equal(m, v.want) {
				t.Errorf("decodeMessage(%x) = %v, %v; want %v", frame, m, err, v.want)
			}
		})
	}

	// Valid encodings with unknown fields: the fast path declines, the
	// reference decoder keeps the known fields.
	for _, v := range []struct{ name, hex string }{
		{"unknown field in IdscpData", "4207" + one + "1805"},
		{"unknown field after IdscpData", "4205" + one + "a00601"},
	} {
		t.Run(v.name, func(t *testing.T) {
			frame := ftHex(t, v.hex)
			if _, _, ok := decodeData(frame); ok {
				t.Errorf("decodeData(%x) ok, want ok=false", frame)
			}
			m, err := decodeMessage(frame)
			if d := m.GetIdscpData(); err != nil || d == nil || string(d.Data) != "ONE" || d.AlternatingBit {
				t.Errorf("decodeMessage(%x) = %v, %v", frame, m, err)
			}
		})
	}

	// Overlong varints in tag or lengths are not what proto.Marshal writes;
	// the fast path may accept them, but must then agree with decodeMessage.
	for _, h := range []string{"c20005" + one, "428500" + one, "4206" + "0a83004f4e45", "c2800005" + one + "1001"} {
		frame := ftHex(t, h)
		m, err := decodeMessage(frame)
		if p, b, ok := decodeData(frame); ok {
			d := m.GetIdscpData()
			if err != nil || d == nil || !bytes.Equal(d.Data, p) || d.AlternatingBit != b {
				t.Errorf("%x: decodeData = %q, %v, ok; decodeMessage = %v, %v", frame, p, b, m, err)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// frameReader.

func TestFrameReaderBackToBack(t *testing.T) {
	var bodies [][]byte
	for _, v := range ftSection8 {
		bodies = append(bodies, ftHex(t, v.hex))
	}
	big, _ := appendDataFrame(nil, ftPayload(100<<10), true)
	bodies = append(bodies, nil, big[prefixLen:], ftHex(t, "4a00"))
	var stream []byte
	for _, b := range bodies {
		stream = append(stream, ftFrame(b)...)
	}
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) { w.Write(stream); w.Close() })
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: time.Second}
			for i, want := range bodies {
				got, err := fr.read()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("frame %d = %x..., want %x...", i, got[:min(len(got), 16)], want[:min(len(want), 16)])
				}
			}
			// A clean close between frames is io.EOF, not a truncation.
			if _, err := fr.read(); !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
}

// TestFrameReaderErrorWithLastBytes: a Read may return the bytes that
// complete a frame together with an error; the frame is still delivered.
func TestFrameReaderErrorWithLastBytes(t *testing.T) {
	a, b := ftFrame(ftHex(t, "42050a034f4e45")), ftFrame(ftPayload(100<<10))
	for _, lastErr := range []error{io.EOF, ftTimeoutErr{}} {
		for _, chunk := range []int{0, 1, 1000} {
			t.Run(fmt.Sprintf("%v/%d", lastErr, chunk), func(t *testing.T) {
				c := &ftMemConn{data: append(append([]byte(nil), a...), b...), chunk: chunk, lastErr: lastErr}
				fr := &frameReader{conn: c, limit: DefaultMaxFrameSize, timeout: time.Second}
				for i, want := range [][]byte{a, b} {
					got, err := fr.read()
					if err != nil || !bytes.Equal(got, want[prefixLen:]) {
						t.Fatalf("frame %d: %d bytes, %v", i, len(got), err)
					}
				}
				if _, err := fr.read(); err != io.EOF {
					t.Fatalf("after the last frame: %v, want io.EOF", err)
				}
				// The same error with bytes that do not complete the frame.
				c = &ftMemConn{data: b[:len(b)-1], chunk: chunk, lastErr: lastErr}
				fr = &frameReader{conn: c, limit: DefaultMaxFrameSize, timeout: time.Second}
				_, err := fr.read()
				if lastErr == io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) || lastErr != io.EOF && !errors.Is(err, ErrFrameTimeout) {
					t.Fatalf("incomplete frame: %v", err)
				}
			})
		}
	}
}

func TestFrameReaderDeadlineCleared(t *testing.T) {
	c := &ftMemConn{data: append(ftFrame(ftHex(t, "4a00")), ftFrame(ftPayload(200<<10))...), chunk: 1000}
	fr := &frameReader{conn: c, limit: DefaultMaxFrameSize, timeout: time.Second}
	for range 2 {
		if _, err := fr.read(); err != nil {
			t.Fatal(err)
		}
		if !c.deadline.IsZero() {
			t.Fatalf("read deadline %v left set after a frame", c.deadline)
		}
	}
	if c.setCalls < 200 {
		t.Errorf("SetReadDeadline called %d times; expected one per chunk", c.setCalls)
	}
	// Without a timeout the deadline is never touched.
	c = &ftMemConn{data: ftFrame(ftPayload(10))}
	fr = &frameReader{conn: c, limit: DefaultMaxFrameSize}
	if _, err := fr.read(); err != nil || c.setCalls != 0 {
		t.Fatalf("read = %v, SetReadDeadline calls = %d", err, c.setCalls)
	}
}

func TestFrameReaderNegativeLength(t *testing.T) {
	for _, n := range []int32{-1, -2, math.MinInt32} {
		for _, kind := range ftTransports {
			t.Run(fmt.Sprintf("%d/%s", n, kind), func(t *testing.T) {
				r, w := ftConnPair(t, kind)
				ftWrite(t, r, w, func(w net.Conn) { w.Write(append(ftPrefix(n), 1, 2, 3)) })
				fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: time.Second}
				_, err := fr.read()
				var fe *FrameError
				if !errors.As(err, &fe) || fe.Length != int64(n) || fe.Limit != DefaultMaxFrameSize {
					t.Fatalf("read = %v, want *FrameError{Length: %d}", err, n)
				}
				if !strings.Contains(err.Error(), "negative") {
					t.Errorf("error %q does not say negative", err)
				}
			})
		}
	}
}

func TestFrameReaderOverLimit(t *testing.T) {
	const limit = 1024
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(ftFrame(ftPayload(limit))) // exactly at the limit: fine
				w.Write(ftPrefix(limit + 1))
				w.Write(ftPayload(limit + 1))
			})
			fr := &frameReader{conn: r, limit: limit, timeout: time.Second}
			if got, err := fr.read(); err != nil || len(got) != limit {
				t.Fatalf("frame at the limit: %d bytes, %v", len(got), err)
			}
			_, err := fr.read()
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Length != limit+1 || fe.Limit != limit {
				t.Fatalf("read = %v, want *FrameError{%d, %d}", err, limit+1, limit)
			}
			if !strings.Contains(err.Error(), "exceeds") {
				t.Errorf("error %q", err)
			}
		})
	}
}

// TestFrameReaderRejectsBeforeAllocating: a bad prefix costs the error
// value and nothing else, however large the announced length.
func TestFrameReaderRejectsBeforeAllocating(t *testing.T) {
	for _, tc := range []struct {
		prefix int32
		limit  int
	}{
		{math.MaxInt32, 1 << 20},
		{1<<30 + 1, 1 << 30},
		{-1, 1 << 30},
		{math.MinInt32, math.MaxInt32},
	} {
		c := &ftMemConn{data: ftPrefix(tc.prefix)}
		fr := &frameReader{conn: c, limit: tc.limit, timeout: time.Second}
		var err error
		before := ftTotalAlloc()
		allocs := testing.AllocsPerRun(100, func() {
			c.off = 0
			_, err = fr.read()
		})
		delta := ftTotalAlloc() - before
		var fe *FrameError
		if !errors.As(err, &fe) {
			t.Fatalf("prefix %d limit %d: %v, want *FrameError", tc.prefix, tc.limit, err)
		}
		if allocs > 1 {
			t.Errorf("prefix %d limit %d: %v allocations per rejected frame, want at most 1 (the error)", tc.prefix, tc.limit, allocs)
		}
		if delta >= 1<<20 {
			t.Errorf("prefix %d limit %d: %d bytes allocated over 101 rejections", tc.prefix, tc.limit, delta)
		}
	}
}

// TestFrameReaderHugeAnnouncedTruncated: a frame announcing 1 GiB - 1 under a
// 1 GiB limit that then delivers 10 bytes and closes must not make the reader
// allocate the announced size.
func TestFrameReaderHugeAnnouncedTruncated(t *testing.T) {
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(append(ftPrefix(1<<30-1), ftPayload(10)...))
				w.Close()
			})
			fr := &frameReader{conn: r, limit: 1 << 30, timeout: 5 * time.Second}
			before := ftTotalAlloc()
			_, err := fr.read()
			delta := ftTotalAlloc() - before
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("read = %v, want a truncation wrapping io.ErrUnexpectedEOF", err)
			}
			if !strings.Contains(err.Error(), "10 of 1073741823") {
				t.Errorf("error %q does not report progress", err)
			}
			if delta >= 1<<20 {
				t.Fatalf("reading a truncated 1 GiB frame allocated %d bytes, want < 1 MiB", delta)
			}
		})
	}
}

func TestFrameReaderTruncated(t *testing.T) {
	for _, kind := range ftTransports {
		t.Run(kind+"/body", func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(append(ftPrefix(100), ftPayload(40)...))
				w.Close()
			})
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: time.Second}
			_, err := fr.read()
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") || errors.Is(err, ErrFrameTimeout) {
				t.Fatalf("read = %v, want a truncation wrapping io.ErrUnexpectedEOF", err)
			}
		})
		t.Run(kind+"/prefix", func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) { w.Write([]byte{0, 0}); w.Close() })
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: time.Second}
			_, err := fr.read()
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("read = %v, want a truncation wrapping io.ErrUnexpectedEOF", err)
			}
		})
		t.Run(kind+"/clean", func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) { w.Close() })
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: time.Second}
			if _, err := fr.read(); err != io.EOF {
				t.Fatalf("read = %v, want io.EOF", err)
			}
		})
	}
}

func TestFrameReaderStall(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, kind := range ftTransports {
		for _, sent := range []int{0, 10} {
			t.Run(fmt.Sprintf("%s/%d", kind, sent), func(t *testing.T) {
				r, w := ftConnPair(t, kind)
				ftWrite(t, r, w, func(w net.Conn) {
					w.Write(append(ftPrefix(100), ftPayload(sent)...)) // then stall, connection open
				})
				fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: timeout}
				start := time.Now()
				_, err := fr.read()
				elapsed := time.Since(start)
				if !errors.Is(err, ErrFrameTimeout) {
					t.Fatalf("read = %v, want ErrFrameTimeout", err)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("a stall is not a truncation: %v", err)
				}
				if elapsed < timeout || elapsed > 5*time.Second {
					t.Errorf("timed out after %v with a %v timeout", elapsed, timeout)
				}
			})
		}
	}
}

// TestFrameReaderPrefixStall: a peer that sends part of a length prefix and
// stops is cut off by the frame timeout too.
func TestFrameReaderPrefixStall(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(ftPrefix(100)[:2]) // then stall, connection open
			})
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: timeout}
			if _, err := fr.read(); !errors.Is(err, ErrFrameTimeout) {
				t.Fatalf("read = %v, want ErrFrameTimeout", err)
			}
		})
	}
}

// TestFrameReaderIdle: waiting for a frame to start has no deadline, before
// the first frame and between frames.
func TestFrameReaderIdle(t *testing.T) {
	const timeout = 50 * time.Millisecond
	a, b := ftFrame(ftHex(t, "42050a034f4e45")), ftFrame(ftHex(t, "4a00"))
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				time.Sleep(3 * timeout)
				w.Write(a)
				time.Sleep(3 * timeout)
				w.Write(b)
			})
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: timeout}
			for i, want := range [][]byte{a, b} {
				got, err := fr.read()
				if err != nil || !bytes.Equal(got, want[prefixLen:]) {
					t.Fatalf("frame %d after idling: %x, %v", i, got, err)
				}
			}
		})
	}
}

// TestFrameReaderSlowProgress: the timeout bounds each gap, not the frame.
func TestFrameReaderSlowProgress(t *testing.T) {
	// Generous against scheduling hiccups; the frame still takes longer
	// than the timeout as a whole.
	const timeout = 250 * time.Millisecond
	payload := ftPayload(1400)
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(ftPrefix(int32(len(payload))))
				for chunk := range slices.Chunk(payload, 100) {
					time.Sleep(timeout / 10)
					w.Write(chunk)
				}
			})
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: timeout}
			start := time.Now()
			got, err := fr.read()
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("read = %d bytes, %v", len(got), err)
			}
			if el := time.Since(start); el <= timeout {
				t.Logf("frame took only %v; the test did not exercise slow progress", el)
			}
		})
	}
}

func TestFrameReaderLargeChunked(t *testing.T) {
	const size = 5 << 20
	payload := ftPayload(size)
	for _, kind := range ftTransports {
		t.Run(kind, func(t *testing.T) {
			r, w := ftConnPair(t, kind)
			ftWrite(t, r, w, func(w net.Conn) {
				w.Write(ftPrefix(size))
				for chunk := range slices.Chunk(payload, 4093) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			})
			fr := &frameReader{conn: r, limit: DefaultMaxFrameSize, timeout: 2 * time.Second}
			got, err := fr.read()
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("read = %d bytes, %v", len(got), err)
			}
		})
	}
	// In memory, tiny chunks: the buffer only grows as bytes arrive and
	// the total allocated stays within a small multiple of the frame.
	t.Run("mem", func(t *testing.T) {
		c := &ftMemConn{data: append(ftPrefix(size), payload...), chunk: 7}
		c.onRead = func(p []byte, served int) {
			if served >= prefixLen && cap(p) > max(eagerAlloc, served-prefixLen) {
				t.Fatalf("read buffer with %d spare bytes after %d frame bytes received", cap(p), served-prefixLen)
			}
		}
		fr := &frameReader{conn: c, limit: DefaultMaxFrameSize, timeout: time.Second}
		before := ftTotalAlloc()
		got, err := fr.read()
		delta := ftTotalAlloc() - before
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("read = %d bytes, %v", len(got), err)
		}
		if delta > 3*size {
			t.Errorf("reading a %d-byte frame allocated %d bytes", size, delta)
		}
	})
}

// TestFrameReaderTrusted: once the peer is trusted a frame's buffer is
// allocated whole, but bad lengths are still rejected before allocating.
func TestFrameReaderTrusted(t *testing.T) {
	const size = 5 << 20
	payload := ftPayload(size)
	c := &ftMemConn{data: append(ftPrefix(size), payload...), chunk: 4093}
	first := true
	c.onRead = func(p []byte, served int) {
		if served == prefixLen && first {
			first = false
			if cap(p) != size {
				t.Errorf("trusted reader: first body read into %d bytes, want the whole %d", cap(p), size)
			}
		}
	}
	fr := &frameReader{conn: c, limit: DefaultMaxFrameSize, timeout: time.Second}
	fr.trusted.Store(true)
	if got, err := fr.read(); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read = %d bytes, %v", len(got), err)
	}
	for _, n := range []int32{-1, math.MinInt32, DefaultMaxFrameSize + 1, math.MaxInt32} {
		c := &ftMemConn{data: ftPrefix(n)}
		fr := &frameReader{conn: c, limit: DefaultMaxFrameSize}
		fr.trusted.Store(true)
		var err error
		allocs := testing.AllocsPerRun(20, func() {
			c.off = 0
			_, err = fr.read()
		})
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Length != int64(n) {
			t.Errorf("trusted, prefix %d: %v, want *FrameError", n, err)
		}
		if allocs > 1 {
			t.Errorf("trusted, prefix %d: %v allocations per rejection", n, allocs)
		}
	}
}

func TestFramePool(t *testing.T) {
	for _, n := range []int{0, 1, minPooledFrame - 1, minPooledFrame, minPooledFrame + 1, 1 << 20, 3 << 20,
		minPooledFrame << (frameClasses - 1), minPooledFrame<<(frameClasses-1) + 1} {
		for range 3 {
			b := getFrameBuf(n)
			if len(b) != 0 || cap(b) < n {
				t.Fatalf("getFrameBuf(%d): len %d cap %d", n, len(b), cap(b))
			}
			pooled := n >= minPooledFrame && frameClass(n) < frameClasses
			if pooled && cap(b) != minPooledFrame<<frameClass(n) {
				t.Fatalf("getFrameBuf(%d): cap %d, want the class size %d", n, cap(b), minPooledFrame<<frameClass(n))
			}
			if pooled && cap(b) >= 2*n && n > minPooledFrame {
				t.Fatalf("getFrameBuf(%d): cap %d is more than a class too big", n, cap(b))
			}
			// A data frame built in it never reallocates.
			if n <= 4<<20 && n >= prefixLen+8 {
				payload := ftPayload(dataPayloadFor(n))
				f, err := appendDataFrame(b, payload, true)
				if err != nil || &f[:1][0] != &b[:1][0] {
					t.Fatalf("appendDataFrame into getFrameBuf(%d) reallocated (%v)", n, err)
				}
			}
			putFrameBuf(b)
		}
	}
	// Buffers that are not of a class size are not pooled, so a class
	// never hands out a short buffer.
	putFrameBuf(make([]byte, 0, minPooledFrame+1))
	putFrameBuf(make([]byte, 0, 3*minPooledFrame))
	putFrameBuf(make([]byte, 10, minPooledFrame*2-1))
	for range 4 {
		if b := getFrameBuf(2 * minPooledFrame); cap(b) != 2*minPooledFrame || len(b) != 0 {
			t.Fatalf("getFrameBuf(%d) = len %d cap %d", 2*minPooledFrame, len(b), cap(b))
		}
		if b := getFrameBuf(4 * minPooledFrame); cap(b) != 4*minPooledFrame {
			t.Fatalf("getFrameBuf(%d) = cap %d", 4*minPooledFrame, cap(b))
		}
	}
	// A recycled buffer comes back empty even if it was returned full.
	b := getFrameBuf(minPooledFrame)
	putFrameBuf(b[:cap(b)])
	if b := getFrameBuf(minPooledFrame); len(b) != 0 {
		t.Fatalf("recycled buffer has len %d", len(b))
	}
}

// dataPayloadFor is the largest payload whose data frame fits in n bytes.
func dataPayloadFor(n int) int {
	p := n
	for p > 0 && dataFrameSize(p) > n {
		p--
	}
	return p
}

// ---------------------------------------------------------------------------
// Benchmarks.

var ftBenchSizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

func BenchmarkEncodeData(b *testing.B) {
	for _, s := range ftBenchSizes {
		b.Run(s.name, func(b *testing.B) {
			payload := ftPayload(s.n)
			buf := make([]byte, 0, dataFrameSize(s.n))
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = appendDataFrame(buf[:0], payload, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeProtoData(b *testing.B) {
	for _, s := range ftBenchSizes {
		b.Run(s.name, func(b *testing.B) {
			msg := ftDataMsg(ftPayload(s.n), true)
			buf := make([]byte, 0, dataFrameSize(s.n))
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = appendFrame(buf[:0], msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeData(b *testing.B) {
	for _, s := range ftBenchSizes {
		b.Run(s.name, func(b *testing.B) {
			f, _ := appendDataFrame(nil, ftPayload(s.n), true)
			frame := f[prefixLen:]
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if p, _, ok := decodeData(frame); !ok || len(p) != s.n {
					b.Fatal("decodeData failed")
				}
			}
		})
	}
}

func BenchmarkDecodeProtoData(b *testing.B) {
	for _, s := range ftBenchSizes {
		b.Run(s.name, func(b *testing.B) {
			f, _ := appendDataFrame(nil, ftPayload(s.n), true)
			frame := f[prefixLen:]
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if m, err := decodeMessage(frame); err != nil || len(m.GetIdscpData().GetData()) != s.n {
					b.Fatal("decodeMessage failed")
				}
			}
		})
	}
}

func BenchmarkFrameReader(b *testing.B) {
	for _, bc := range []struct {
		name    string
		size    int
		timeout time.Duration
		trusted bool
	}{
		{"1KiB/timeout=0", 1 << 10, 0, false},
		{"1KiB/timeout=5s", 1 << 10, 5 * time.Second, false},
		{"1MiB/untrusted", 1 << 20, 5 * time.Second, false},
		{"1MiB/trusted", 1 << 20, 5 * time.Second, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, _ := appendDataFrame(nil, ftPayload(bc.size), true)
			stream := bytes.Repeat(f, max(1, (64<<10)/len(f)))
			fr := &frameReader{conn: &ftMemConn{data: stream, loop: true}, limit: DefaultMaxFrameSize, timeout: bc.timeout}
			fr.trusted.Store(bc.trusted)
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				if frame, err := fr.read(); err != nil || len(frame) != len(f)-prefixLen {
					b.Fatal(err)
				}
			}
		})
	}
}
