package idscp2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// fuzzSeedBodies are the spec's §8 vectors, a few §10 frames and some
// non-canonical data encodings, unframed.
func fuzzSeedBodies(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, v := range ftSection8 {
		seeds = append(seeds, ftHex(f, v.hex))
	}
	for _, h := range []string{
		"3a00", "4200", "42021001", "",
		"1211080012" + "0d" + "557365722073687574646f776e",
		"420710010a034f4e45",       // fields reversed
		"42070a034f4e451000",       // bit=false encoded
		"420a0a034f4e450a0354574f", // duplicate payload
		"42050a034f4e45ff",         // trailing garbage
		"4285000a034f4e45",         // overlong length
	} {
		seeds = append(seeds, ftHex(f, h))
	}
	hello, _ := appendFrame(nil, ftHello("go-probe-dummy-dat", []string{"NullRa"}, []string{"NullRa"}))
	big, _ := appendDataFrame(nil, ftPayload(300), true)
	return append(seeds, hello[prefixLen:], big[prefixLen:])
}

// fuzzRefFrames is the reference model of the framing: the frames a
// correct reader returns for stream, and how it must stop; a stream that
// ends inside a body also reports that last, incomplete frame as tail.
type fuzzRefStop int

const (
	fuzzStopEOF       fuzzRefStop = iota // clean end between frames
	fuzzStopTruncated                    // end inside a prefix or body
	fuzzStopBadLength                    // negative or above the limit
)

type fuzzRefFrame struct {
	start, size int // body offset in the stream, body length
}

func fuzzRefFrames(stream []byte, limit int) (frames []fuzzRefFrame, tail []fuzzRefFrame, stop fuzzRefStop, badLen int64) {
	pos := 0
	for {
		switch rest := len(stream) - pos; {
		case rest == 0:
			return frames, nil, fuzzStopEOF, 0
		case rest < prefixLen:
			return frames, nil, fuzzStopTruncated, 0
		}
		n := int64(int32(binary.BigEndian.Uint32(stream[pos:])))
		if n < 0 || n > int64(limit) {
			return frames, nil, fuzzStopBadLength, n
		}
		if int64(len(stream)-pos-prefixLen) < n {
			return frames, []fuzzRefFrame{{pos + prefixLen, int(n)}}, fuzzStopTruncated, 0
		}
		frames = append(frames, fuzzRefFrame{pos + prefixLen, int(n)})
		pos += prefixLen + int(n)
	}
}

func FuzzFrameReader(f *testing.F) {
	var all []byte
	for _, b := range fuzzSeedBodies(f) {
		fr := ftFrame(b)
		f.Add(uint8(0), fr)
		f.Add(uint8(3), fr)
		all = append(all, fr...)
	}
	f.Add(uint8(0), all)
	f.Add(uint8(1), all)
	f.Add(uint8(5), append(ftPrefix(-1), 1, 2, 3))
	f.Add(uint8(0), append(ftPrefix(257), ftPayload(257)...))
	f.Add(uint8(2), append(ftPrefix(1<<30-1), ftPayload(10)...))
	f.Add(uint8(0x80), all)
	f.Add(uint8(0x81), all[:len(all)-1])
	f.Add(uint8(0), []byte{0, 0})
	f.Add(uint8(0), []byte{})
	f.Add(uint8(7), append(ftFrame(nil), ftFrame(ftPayload(256))...))

	f.Fuzz(func(t *testing.T, chunk uint8, stream []byte) {
		// A small limit (untrusted and trusted peer), and a huge one where
		// only the incremental allocation keeps the memory in check.
		for _, mode := range []struct {
			limit   int
			trusted bool
		}{{256, false}, {256, true}, {1 << 30, false}} {
			limit := mode.limit
			ref, tail, stop, badLen := fuzzRefFrames(stream, limit)
			model := append(ref[:len(ref):len(ref)], tail...)

			// Every buffer handed to Read must be the prefix, or spare room
			// of the current frame no larger than what the peer already
			// sent of it (or eagerAlloc) and the frame's remaining bytes.
			// This bounds the reader's memory exactly; the heap statistics
			// below are a coarse cross-check.
			readAll := func() (got [][]byte, err error) {
				c := &ftMemConn{data: stream, chunk: int(chunk % 32)}
				if chunk&0x80 != 0 {
					c.lastErr = io.EOF // delivered together with the last bytes
				}
				next := 0 // index into model of the frame being read
				c.onRead = func(p []byte, served int) {
					for next < len(model) && served > model[next].start && served >= model[next].start+model[next].size {
						next++
					}
					if next < len(model) && served >= model[next].start && model[next].size > 0 {
						got := served - model[next].start
						if room := cap(p); room > model[next].size-got || !mode.trusted && room > max(eagerAlloc, got) {
							t.Fatalf("limit %d: read buffer with %d spare bytes after %d of %d frame bytes", limit, room, got, model[next].size)
						}
					} else if cap(p) > prefixLen {
						t.Fatalf("limit %d: prefix read into %d bytes at offset %d", limit, cap(p), served)
					}
				}
				fr := &frameReader{conn: c, limit: limit, timeout: time.Hour}
				fr.trusted.Store(mode.trusted)
				for {
					var frame []byte
					if frame, err = fr.read(); err != nil {
						return got, err
					}
					if len(frame) > limit {
						t.Fatalf("limit %d: frame of %d bytes", limit, len(frame))
					}
					got = append(got, frame)
					if len(got) > len(stream)/prefixLen+1 {
						t.Fatalf("limit %d: more frames than the stream can hold", limit)
					}
				}
			}

			// Heap statistics are process-wide and the fuzzing engine
			// allocates concurrently, so a reading over the bound is
			// retried: a real excess (announced lengths allocated up front)
			// shows up every time.
			var got [][]byte
			var err error
			bound := uint64(4*len(stream) + 2*eagerAlloc + 256<<10)
			for attempt := 1; ; attempt++ {
				before := ftTotalAlloc()
				got, err = readAll()
				delta := ftTotalAlloc() - before
				if delta <= bound {
					break
				}
				if attempt == 5 {
					t.Fatalf("limit %d: %d bytes allocated for a %d-byte stream (bound %d)", limit, delta, len(stream), bound)
				}
			}

			if len(got) != len(ref) {
				t.Fatalf("limit %d: %d frames, reference %d (err %v)", limit, len(got), len(ref), err)
			}
			for i, r := range ref {
				if !bytes.Equal(got[i], stream[r.start:r.start+r.size]) {
					t.Fatalf("limit %d: frame %d differs from the reference", limit, i)
				}
			}
			var fe *FrameError
			switch stop {
			case fuzzStopEOF:
				if err != io.EOF {
					t.Fatalf("limit %d: clean end gave %v, want io.EOF", limit, err)
				}
			case fuzzStopTruncated:
				if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") {
					t.Fatalf("limit %d: truncated stream gave %v", limit, err)
				}
			case fuzzStopBadLength:
				if !errors.As(err, &fe) || fe.Length != badLen || fe.Limit != limit {
					t.Fatalf("limit %d: bad length %d gave %v", limit, badLen, err)
				}
			}
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, b := range fuzzSeedBodies(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := decodeMessage(frame)
		payload, bit, ok := decodeData(frame)
		if ok {
			// The fast path must agree with the reference decoder.
			if err != nil {
				t.Fatalf("decodeData accepted %x, decodeMessage: %v", frame, err)
			}
			d := m.GetIdscpData()
			if d == nil || !bytes.Equal(d.Data, payload) || d.AlternatingBit != bit {
				t.Fatalf("decodeData(%x) = %x, %v; decodeMessage = %v", frame, payload, bit, m)
			}
			// The payload aliases the frame: both end at the same place
			// of the same backing array.
			if len(payload) > 0 && &payload[:cap(payload)][cap(payload)-1] != &frame[:cap(frame)][cap(frame)-1] {
				t.Fatalf("decodeData payload does not alias the frame")
			}
		}
		if err != nil {
			return
		}

		// Whatever decoded re-encodes and decodes to the same message.
		re, err := appendFrame(nil, m)
		if err != nil {
			t.Fatalf("appendFrame(%v): %v", m, err)
		}
		if n := binary.BigEndian.Uint32(re); int(n) != len(re)-prefixLen {
			t.Fatalf("appendFrame prefix %d for %d bytes", n, len(re)-prefixLen)
		}
		m2, err := decodeMessage(re[prefixLen:])
		if err != nil || !proto.Equal(m, m2) {
			t.Fatalf("re-decoding %x: %v, %v; want %v", re, m2, err, m)
		}

		d := m.GetIdscpData()
		if d == nil {
			return
		}
		// The hand-written encoder matches the generic one for the decoded
		// fields, and its output always takes the fast path.
		enc, err := appendDataFrame(nil, d.Data, d.AlternatingBit)
		if err != nil {
			t.Fatal(err)
		}
		want, err := appendFrame(nil, ftDataMsg(d.Data, d.AlternatingBit))
		if err != nil || !bytes.Equal(enc, want) {
			t.Fatalf("appendDataFrame = %x, appendFrame = %x, %v", enc, want, err)
		}
		if len(enc) > dataFrameSize(len(d.Data)) {
			t.Fatalf("frame of %d bytes exceeds dataFrameSize %d", len(enc), dataFrameSize(len(d.Data)))
		}
		p2, b2, ok2 := decodeData(enc[prefixLen:])
		if !ok2 || !bytes.Equal(p2, d.Data) || b2 != d.AlternatingBit {
			t.Fatalf("decodeData(appendDataFrame(%x, %v)) = %x, %v, %v", d.Data, d.AlternatingBit, p2, b2, ok2)
		}
		m3, err := decodeMessage(enc[prefixLen:])
		if err != nil || !proto.Equal(m3, ftDataMsg(d.Data, d.AlternatingBit)) {
			t.Fatalf("decodeMessage(appendDataFrame(...)) = %v, %v", m3, err)
		}
		if ok && !bytes.Equal(enc[prefixLen:], frame) {
			// Accepted by the fast path but not byte-canonical: only
			// overlong varints can do that, and they are harmless.
			t.Logf("fast path accepted non-canonical %x (canonical %x)", frame, enc[prefixLen:])
		}
	})
}
