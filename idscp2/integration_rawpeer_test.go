package idscp2

// Integration tests with a hand-driven peer on an established connection:
// framing errors close the connection, undecodable messages are dropped as
// the reference drops them, and the listener's other connections carry on.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
)

// rawAck reads the next frame and checks it is exactly the framed
// IdscpAck with bit.
func rawAck(t testing.TB, r io.Reader, bit bool) {
	t.Helper()
	b, err := readRawFrame(r)
	if err != nil {
		t.Fatalf("waiting for IdscpAck{%v}: %v", bit, err)
	}
	want := "4a00"
	if bit {
		want = "4a020801"
	}
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("got frame %s, want IdscpAck{%v} %s", got, bit, want)
	}
}

// rawData sends IdscpData{payload, bit} and checks that the listener's side
// delivers it and ACKs it.
func rawData(t testing.TB, p *rawPeer, payload string, bit bool) {
	t.Helper()
	if err := writeRawMsg(p, dataMsg(payload, bit)); err != nil {
		t.Fatal(err)
	}
	rawAck(t, p, bit)
	m, err := p.server.Recv(itCtx(t))
	if err != nil || string(m) != payload {
		t.Fatalf("server Recv = %q, %v; want %q", m, err, payload)
	}
}

func prefix(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// TestIntegrationRawPeerBadInput feeds an established connection bad input
// while another connection of the same listener keeps working.
func TestIntegrationRawPeerBadInput(t *testing.T) {
	checkNoLeak(t)
	scfg := itConfig(testPKI.Server)
	scfg.MaxFrameSize = 1024
	ln := listen(t, scfg)
	goodClient, goodServer := dialAccept(t, ln, itConfig(testPKI.Client))
	checkEcho(t, goodClient, goodServer, "before")

	t.Run("dropped frames", func(t *testing.T) {
		p := rawEstablish(t, ln)
		rawData(t, p, "first", false)
		for _, bad := range []struct {
			name  string
			frame []byte
		}{
			{"empty frame (IdscpMessage without a oneof)", nil},
			{"unknown field only", []byte{0x78, 0x01}},
			{"truncated length-delimited field", []byte{0x0a, 0xff}},
			{"invalid wire type", []byte{0x0f}},
			{"IdscpData with a truncated payload", []byte{0x42, 0x05, 0x0a, 0x03, 0x4f}},
			{"unknown oneof-sized garbage", bytes.Repeat([]byte{0xff}, 32)},
		} {
			if _, err := p.Write(frameBytes(bad.frame)); err != nil {
				t.Fatalf("%s: %v", bad.name, err)
			}
		}
		// Still established: the next data message is delivered and
		// ACKed with the right bit (the last one had bit false).
		rawData(t, p, "after garbage", true)
		rawData(t, p, "and again", false)
		if st := p.server.State(); !st.Connected() {
			t.Errorf("server state %s after dropped frames", st)
		}
		// A duplicate (old bit) is dropped silently, without an ACK: the
		// next frame the peer sees is the ACK of the following message.
		if err := writeRawMsg(p, dataMsg("and again", false)); err != nil {
			t.Fatal(err)
		}
		rawData(t, p, "last", true)
		expectNothing(t, "server", p.server)
		if err := p.server.Err(); err != nil {
			t.Errorf("server closed: %v", err)
		}
		checkEcho(t, goodClient, goodServer, "during garbage")
	})

	for _, tc := range []struct {
		name  string
		input []byte
		check func(t *testing.T, err error)
	}{
		{"negative length", prefix(0xffffff00), func(t *testing.T, err error) {
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Length != -256 {
				t.Errorf("%v: want *FrameError with Length -256", err)
			}
		}},
		{"length over MaxFrameSize", append(prefix(1025), make([]byte, 1025)...), func(t *testing.T, err error) {
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Length != 1025 || fe.Limit != 1024 {
				t.Errorf("%v: want *FrameError{Length 1025, Limit 1024}", err)
			}
		}},
		{"truncated frame", append(prefix(100), make([]byte, 10)...), func(t *testing.T, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%v: want io.ErrUnexpectedEOF in the chain", err)
			}
			var fe *FrameError
			if errors.As(err, &fe) {
				t.Errorf("%v: a truncated frame is not a *FrameError", err)
			}
		}},
		{"truncated prefix", []byte{0, 0}, func(t *testing.T, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%v: want io.ErrUnexpectedEOF in the chain", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rawEstablish(t, ln)
			rawData(t, p, "before", false)
			if _, err := p.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			if tc.name != "negative length" && tc.name != "length over MaxFrameSize" {
				p.Close() // the frame never completes
			}
			waitDone(t, "server", p.server)
			ce := asCloseError(t, p.server.Err())
			t.Logf("server: %v", ce)
			if ce.Sent || ce.Remote {
				t.Errorf("a broken stream closes without IdscpClose: Sent %v, Remote %v", ce.Sent, ce.Remote)
			}
			tc.check(t, ce)
			if !p.server.State().Closed() {
				t.Errorf("server state %s", p.server.State())
			}
			checkEcho(t, goodClient, goodServer, "after "+tc.name)
		})
	}

	// The listener's first connection never noticed anything.
	if err := goodServer.Err(); err != nil {
		t.Fatalf("good connection closed: %v", err)
	}
	goodClient.Close()
	waitDone(t, "good server", goodServer)
}

// TestIntegrationRawPeerFramesOnTheWire checks the listener's frames
// against the reference's bytes (spec §8, §10) for a data exchange.
func TestIntegrationRawPeerFramesOnTheWire(t *testing.T) {
	checkNoLeak(t)
	ln := listen(t, itConfig(testPKI.Server))
	p := rawEstablish(t, ln)
	p.SetDeadline(time.Now().Add(itWait))

	// Data{"ONE", bit=false} from the peer → framed Ack{false}.
	if _, err := p.Write(frameBytes(mustHex(t, "42050a034f4e45"))); err != nil {
		t.Fatal(err)
	}
	rawAck(t, p, false)
	ctx := itCtx(t)
	if m, err := p.server.Recv(ctx); err != nil || string(m) != "ONE" {
		t.Fatalf("Recv = %q, %v", m, err)
	}

	// The listener's side sends "ONE": Data{"ONE", bit=false}, then after our
	// Ack{false} its next message carries bit=true.
	sent := make(chan error, 1)
	go func() { sent <- p.server.Send(ctx, []byte("ONE")) }()
	b, err := readRawFrame(p)
	if err != nil {
		t.Fatal(err)
	}
	// Retransmissions may follow (AckTimeout 200 ms); all are identical.
	if got := hex.EncodeToString(b); got != "42050a034f4e45" {
		t.Fatalf("data frame %s, want 42050a034f4e45", got)
	}
	// An ACK with the wrong bit is ignored. The data message sent after it
	// is ACKed, so the stale ACK was processed before we look.
	if _, err := p.Write(mustHex(t, "000000044a020801")); err != nil {
		t.Fatal(err)
	}
	if err := writeRawMsg(p, dataMsg("TWO", true)); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := readRawFrame(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got == "42050a034f4e45" {
			continue // a retransmission: still unacknowledged
		} else if got != "4a020801" {
			t.Fatalf("frame %s, want IdscpAck{true} 4a020801", got)
		}
		break
	}
	select {
	case err := <-sent:
		t.Fatalf("Send returned %v after an ACK with the wrong bit", err)
	default:
	}
	if st := p.server.State(); st != fsm.WaitForAck {
		t.Fatalf("state %s after an ACK with the wrong bit, want %s", st, fsm.WaitForAck)
	}
	if m, err := p.server.Recv(ctx); err != nil || string(m) != "TWO" {
		t.Fatalf("Recv = %q, %v", m, err)
	}
	if _, err := p.Write(mustHex(t, "000000024a00")); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("Send: %v", err)
	}
	go func() { sent <- p.server.Send(ctx, []byte("ONE")) }()
	for {
		b, err := readRawFrame(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got == "42050a034f4e45" {
			continue // a late retransmission of the first message
		} else if got != "42070a034f4e451001" {
			t.Fatalf("second data frame %s, want 42070a034f4e451001", got)
		}
		break
	}
	if _, err := p.Write(mustHex(t, "000000044a020801")); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("second Send: %v", err)
	}

	// Close from the listener's side: IdscpClose{USER_SHUTDOWN,"User close"}.
	p.server.Close()
	for {
		b, err := readRawFrame(p)
		if err != nil {
			t.Fatalf("waiting for IdscpClose: %v", err)
		}
		if hex.EncodeToString(b) == "120c120a5573657220636c6f7365" {
			break
		}
		t.Logf("skipping frame %x (a late retransmission)", b)
	}
	if _, err := readRawFrame(p); !errors.Is(err, io.EOF) {
		t.Errorf("after IdscpClose: %v, want EOF", err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
