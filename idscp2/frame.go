package idscp2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// DefaultMaxFrameSize caps an IDSCP2 frame (the serialised IdscpMessage) in
// both directions unless configured otherwise. The reference has no limit;
// operators raise this for peers that send larger messages.
const DefaultMaxFrameSize = 16 << 20

// prefixLen is the size of the big-endian length prefix before every frame.
// The reference reads and writes it as a signed int32.
const prefixLen = 4

// FrameError reports a frame the peer should never have sent; the
// connection is closed because the byte stream can no longer be trusted.
type FrameError struct {
	Length int64 // the announced length
	Limit  int   // the configured maximum
}

func (e *FrameError) Error() string {
	if e.Length < 0 {
		return fmt.Sprintf("idscp2: negative frame length %d", e.Length)
	}
	return fmt.Sprintf("idscp2: frame length %d exceeds the limit of %d bytes", e.Length, e.Limit)
}

// ErrFrameTimeout is returned when a peer stops sending in the middle of a
// frame for longer than the frame timeout.
var ErrFrameTimeout = errors.New("idscp2: peer stalled in the middle of a frame")

// eagerAlloc is the frame size up to which the whole buffer is allocated at
// once before the peer is trusted; larger frames grow as their bytes arrive,
// so an unauthenticated length never reserves memory the peer has not sent.
const eagerAlloc = 64 << 10

// frameReader reads length-prefixed frames from a connection.
type frameReader struct {
	conn    net.Conn
	limit   int
	timeout time.Duration // progress deadline once a frame has started; 0 = none
	prefix  [prefixLen]byte
	// trusted is set once the peer passed DAT verification and attestation:
	// from then on a frame's buffer is allocated whole, saving the copies of
	// growing it (the limit still applies).
	trusted atomic.Bool
}

// read returns the next frame. Waiting for a frame to start has no deadline
// (IDSCP2 connections may idle); once its first byte arrived, every chunk
// must arrive within the frame timeout. The returned slice is newly
// allocated and owned by the caller.
func (r *frameReader) read() ([]byte, error) {
	got := 0
	for got == 0 {
		m, err := r.conn.Read(r.prefix[:])
		got = m
		if err != nil && got == 0 {
			return nil, err
		}
	}
	if r.timeout > 0 {
		defer r.conn.SetReadDeadline(time.Time{})
	}
	for got < prefixLen {
		if r.timeout > 0 {
			r.conn.SetReadDeadline(time.Now().Add(r.timeout))
		}
		m, err := r.conn.Read(r.prefix[got:])
		got += m
		if err != nil && got < prefixLen {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("%w (%d of %d prefix bytes after %s)", ErrFrameTimeout, got, prefixLen, r.timeout)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("idscp2: truncated frame prefix: %w", err)
		}
	}
	n := int64(int32(binary.BigEndian.Uint32(r.prefix[:])))
	if n < 0 || n > int64(r.limit) {
		return nil, &FrameError{Length: n, Limit: r.limit}
	}
	size := int(n)
	eager := eagerAlloc
	if r.trusted.Load() {
		eager = r.limit
	}
	buf := make([]byte, 0, min(size, eager))
	for len(buf) < size {
		if cap(buf) == len(buf) {
			grown := make([]byte, len(buf), min(size, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		if r.timeout > 0 {
			r.conn.SetReadDeadline(time.Now().Add(r.timeout))
		}
		m, err := r.conn.Read(buf[len(buf):min(cap(buf), size)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if len(buf) == size {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("%w (%d of %d bytes after %s)", ErrFrameTimeout, len(buf), size, r.timeout)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("idscp2: truncated frame (%d of %d bytes): %w", len(buf), size, err)
		}
	}
	return buf, nil
}

// appendFrame appends the length-prefixed encoding of m to b.
func appendFrame(b []byte, m *pb.IdscpMessage) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(b, m)
	if err != nil {
		return nil, err
	}
	return putPrefix(b, start)
}

func putPrefix(b []byte, start int) ([]byte, error) {
	n := len(b) - start - prefixLen
	if n > math.MaxInt32 {
		return nil, fmt.Errorf("idscp2: message of %d bytes cannot be framed", n)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// Field numbers of the hot-path messages, for the hand-written codec below.
const (
	fieldData    = 8 // IdscpMessage.idscpData
	fieldAck     = 9 // IdscpMessage.idscpAck
	fieldPayload = 1 // IdscpData.data
	fieldBit     = 2 // IdscpData.alternatingBit
)

// dataBodyLen is the encoded size of IdscpData{payload, bit}.
func dataBodyLen(payloadLen int, bit bool) int {
	n := 0
	if payloadLen > 0 {
		n += 1 + protowire.SizeVarint(uint64(payloadLen)) + payloadLen
	}
	if bit {
		n += 2
	}
	return n
}

// dataFrameSize is the size of the whole frame for a data message, prefix included.
func dataFrameSize(payloadLen int) int {
	body := dataBodyLen(payloadLen, true)
	return prefixLen + 1 + protowire.SizeVarint(uint64(body)) + body
}

// appendDataFrame encodes IdscpMessage{idscpData{payload, bit}} exactly as
// proto.Marshal does (canonical proto3: empty payload and false bit
// omitted), without building a message: data is the hot path.
func appendDataFrame(b, payload []byte, bit bool) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = protowire.AppendTag(b, fieldData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(dataBodyLen(len(payload), bit)))
	if len(payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, payload)
	}
	if bit {
		b = protowire.AppendTag(b, fieldBit, protowire.VarintType)
		b = append(b, 1)
	}
	return putPrefix(b, start)
}

// Large data frames are recycled through per-size-class pools: a fresh
// multi-megabyte buffer costs page faults and zeroing on every message.
const (
	minPooledFrame = 64 << 10
	frameClasses   = 10 // 64 KiB … 32 MiB
)

var framePools [frameClasses]sync.Pool

func frameClass(n int) int {
	c := 0
	for size := minPooledFrame; size < n; size <<= 1 {
		c++
	}
	return c
}

// getFrameBuf returns an empty buffer with capacity for n bytes.
func getFrameBuf(n int) []byte {
	if n < minPooledFrame {
		return make([]byte, 0, n)
	}
	c := frameClass(n)
	if c >= frameClasses {
		return make([]byte, 0, n)
	}
	if p, ok := framePools[c].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, minPooledFrame<<c)
}

// putFrameBuf recycles a buffer from getFrameBuf.
func putFrameBuf(b []byte) {
	if cap(b) < minPooledFrame {
		return
	}
	c := frameClass(cap(b))
	if c >= frameClasses || minPooledFrame<<c != cap(b) {
		return
	}
	framePools[c].Put(&b)
}

// Framed ACKs never change; they are written from these.
var (
	ackFrameFalse = []byte{0, 0, 0, 2, 0x4a, 0x00}
	ackFrameTrue  = []byte{0, 0, 0, 4, 0x4a, 0x02, 0x08, 0x01}
)

func ackFrame(bit bool) []byte {
	if bit {
		return ackFrameTrue
	}
	return ackFrameFalse
}

// decodeData recognises the layout every real peer sends for an IdscpData
// frame (payload field, then bit field, each at most once; varints may be
// padded) and returns its payload aliasing frame (no copy). Anything else
// reports ok=false and goes through proto.Unmarshal, which accepts every
// valid encoding; a fuzz target checks that both agree.
func decodeData(frame []byte) (payload []byte, bit, ok bool) {
	num, typ, n := protowire.ConsumeTag(frame)
	if n < 0 || num != fieldData || typ != protowire.BytesType {
		return nil, false, false
	}
	body, m := protowire.ConsumeBytes(frame[n:])
	if m < 0 || n+m != len(frame) {
		return nil, false, false
	}
	if len(body) > 0 && body[0] == byte(fieldPayload<<3|protowire.BytesType) {
		p, k := protowire.ConsumeBytes(body[1:])
		if k < 0 || len(p) == 0 {
			return nil, false, false
		}
		payload, body = p, body[1+k:]
	}
	switch {
	case len(body) == 0:
		return payload, false, true
	case len(body) == 2 && body[0] == byte(fieldBit<<3|protowire.VarintType) && body[1] == 1:
		return payload, true, true
	}
	return nil, false, false
}

// decodeMessage parses any frame.
func decodeMessage(frame []byte) (*pb.IdscpMessage, error) {
	m := &pb.IdscpMessage{}
	if err := proto.Unmarshal(frame, m); err != nil {
		return nil, err
	}
	return m, nil
}
