package fsm_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// FuzzMachine decodes the input twice: as a sequence of events for a single
// machine, and as a sequence of operations on a pair of wired machines. The
// harness checks the per-step invariants (see harness.step):
//   - a locked machine answers Locked with no actions, forever;
//   - ActDeliver only for EvData in ESTABLISHED/WAIT_FOR_ACK, and never before
//     the machine was established; each delivery is followed by its ACK;
//   - new ActSendData only for EvSend in ESTABLISHED with nothing pending;
//     a retransmission repeats the outstanding payload and bit;
//   - every ActStartTimer gen (and driver gen) is strictly increasing;
//   - cancels/stops only for armed timers/running drivers; a close leaves
//     nothing armed or running and ends with ActCloseChannel.
//
// On top, the single machine never delivers the same payload sequence
// number twice, and each side of the pair delivers the peer's payloads
// exactly in send order (1, 2, 3, … with no repeats).
func FuzzMachine(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			data = data[:4096]
		}
		fuzzSingle(t, data)
		fuzzPair(t, data)
	})
}

type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) more() bool { return r.i < len(r.b) }

func (r *byteReader) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

var fuzzAlphabet = []string{"A", "B", "C", dummy2}

func pickSuites(mask byte) []string {
	var out []string
	for i, s := range fuzzAlphabet {
		if mask&(1<<i) != 0 {
			out = append(out, s)
		}
	}
	// vary the priority order too
	if mask&0x8 != 0 && len(out) > 1 {
		out[0], out[len(out)-1] = out[len(out)-1], out[0]
	}
	return out
}

func fuzzDat(flags byte) fsm.DatCheck {
	if flags&4 != 0 {
		return invalidDat
	}
	return validDat(time.Duration(flags>>4+1) * time.Second)
}

func tag(prefix byte, seq uint64) []byte {
	b := make([]byte, 9)
	b[0] = prefix
	binary.BigEndian.PutUint64(b[1:], seq)
	return b
}

func untag(tb testing.TB, prefix byte, p []byte) uint64 {
	tb.Helper()
	if len(p) != 9 || p[0] != prefix {
		tb.Fatalf("delivered payload %x is not a %c-tagged one", p, prefix)
	}
	return binary.BigEndian.Uint64(p[1:])
}

// Single machine encoding, per step: kind byte (index into AllEventKinds),
// flags byte (bit0: random gen = flags>>4 instead of the live one; bit1:
// Bit; bit2: DAT invalid; bit3: Hello without DAT / data is a retransmission
// of the previous data event), and for Hello one more byte (low nibble: the
// peer's supported suites, high nibble: its expected suites).
func fuzzSingle(t *testing.T, data []byte) {
	cfg := testConfig()
	cfg.SupportedSuites = []string{dummy2, "A"}
	cfg.ExpectedSuites = []string{"B", dummy2}
	h := newHarness(t, cfg)
	h.name, h.fatal = "single", true
	kinds := fsm.AllEventKinds()
	var inSeq, outSeq uint64
	var last *fsm.Event
	delivered := map[uint64]bool{}
	reached := 0
	r := &byteReader{b: data}
	for r.more() {
		kb, fl := r.next(), r.next()
		k := kinds[int(kb)%len(kinds)]
		ev := h.live(fsm.Event{Kind: k})
		if fl&1 != 0 {
			ev.Gen = uint64(fl >> 4)
		}
		ev.Bit = fl&2 != 0
		switch k {
		case fsm.EvHello:
			masks := r.next()
			hello := helloMsg("peer-dat", pickSuites(masks&15), pickSuites(masks>>4))
			if fl&8 != 0 {
				hello.DynamicAttributeToken = nil
			}
			ev.Hello, ev.Dat = hello, fuzzDat(fl)
		case fsm.EvDat:
			ev.Dat = fuzzDat(fl)
		case fsm.EvData:
			if fl&8 != 0 && last != nil {
				ev.Payload, ev.Bit = last.Payload, last.Bit
			} else {
				inSeq++
				ev.Payload = tag('D', inSeq)
			}
			e := ev
			last = &e
		case fsm.EvSend:
			outSeq++
			ev.Payload = tag('S', outSeq)
		case fsm.EvStart, fsm.EvDatExpired:
			ev.Token = []byte{'T', fl}
		case fsm.EvPeerClose:
			if fl&8 == 0 {
				ev.Close = &pb.IdscpClose{CauseCode: pb.IdscpClose_CloseCause(fl >> 4 & 7), CauseMsg: "x"}
			}
		case fsm.EvRaProver, fsm.EvRaVerifier, fsm.EvProverMsg, fsm.EvVerifierMsg:
			ev.Payload = []byte{fl}
		}
		acts, _ := h.step(ev)
		if h.state() == fsm.Established {
			reached++
		}
		for _, a := range acts {
			if a.Kind == fsm.ActDeliver {
				seq := untag(t, 'D', a.Payload)
				if delivered[seq] {
					t.Fatalf("payload %d delivered twice", seq)
				}
				delivered[seq] = true
			}
		}
	}
	t.Logf("single: %v after %d steps, %d in ESTABLISHED, %d delivered", h.state(), h.steps, reached, len(delivered))
}

// Pair encoding, per operation: op byte (low nibble: operation, bit 4: side
// A or B) and a parameter byte. If bit 5 of the first byte is set both sides
// only start and the input drives the handshake; otherwise the pair starts
// established. Drivers then do not complete on their own; the input decides
// when they report.
func fuzzPair(t *testing.T, data []byte) {
	p := newPair(t, testConfig(), testConfig())
	for _, n := range []*node{p.a, p.b} {
		n.h.fatal = true
	}
	if len(data) > 0 && data[0]&0x20 != 0 {
		// The input drives the handshake too.
		for _, n := range []*node{p.a, p.b} {
			n.auto = false
		}
		p.step(p.a, fsm.Event{Kind: fsm.EvStart, Token: []byte(p.a.token)})
		p.step(p.b, fsm.Event{Kind: fsm.EvStart, Token: []byte(p.b.token)})
	} else {
		// Start from a Dummy2 handshake run to completion.
		p.start(t)
		for _, n := range []*node{p.a, p.b} {
			n.auto = false
		}
	}

	sent := map[*node]uint64{}     // payloads accepted by Send
	received := map[*node]uint64{} // last payload number delivered
	driverKinds := []fsm.EventKind{fsm.EvProverOK, fsm.EvVerifierOK, fsm.EvProverMsg, fsm.EvVerifierMsg}

	check := func(n *node, before int) {
		for _, d := range n.delivered[before:] {
			seq := untag(t, 'P', d)
			if seq != received[n]+1 {
				t.Fatalf("%s delivered payload %d after %d", n.name, seq, received[n])
			}
			received[n] = seq
			if seq > sent[p.other(n)] {
				t.Fatalf("%s delivered payload %d never sent", n.name, seq)
			}
		}
	}
	step := func(n *node, ev fsm.Event) {
		na, nb := len(p.a.delivered), len(p.b.delivered)
		p.step(n, ev)
		check(p.a, na)
		check(p.b, nb)
	}
	deliver := func(n *node) {
		if len(n.inbox) == 0 {
			return
		}
		ev := n.inbox[0]
		n.inbox = n.inbox[1:]
		step(n, ev)
	}

	r := &byteReader{b: data}
	for r.more() {
		op, param := r.next(), r.next()
		n := p.a
		if op&0x10 != 0 {
			n = p.b
		}
		switch op & 0x0f % 11 {
		case 0, 1: // the next wire message arrives
			deliver(n)
		case 2: // a driver reports
			k := driverKinds[int(param)%len(driverKinds)]
			switch {
			case param == 0xfe:
				k = fsm.EvProverFailed
			case param == 0xff:
				k = fsm.EvVerifierFailed
			}
			ev := n.h.live(fsm.Event{Kind: k, Payload: []byte{param}})
			if param&0x80 != 0 && param < 0xfe {
				ev.Gen-- // a stale run
			}
			step(n, ev)
		case 3: // a timer fires
			tm := allTimers[int(param)%len(allTimers)]
			ev := n.h.live(fsm.Event{Kind: tm.Event()})
			if param&0x80 != 0 {
				ev.Gen += uint64(param>>4&3) - 1 // stale or future run
			}
			step(n, ev)
		case 4, 5: // the application sends
			payload := tag('P', sent[n]+1)
			pendingBefore := n.h.m.AckPending()
			na, nb := len(p.a.delivered), len(p.b.delivered)
			_, res := p.step(n, fsm.Event{Kind: fsm.EvSend, Payload: payload})
			check(p.a, na)
			check(p.b, nb)
			if res == fsm.OK {
				if pendingBefore {
					t.Fatalf("%s accepted a send with a message outstanding", n.name)
				}
				sent[n]++
			}
		case 6: // re-attestation requested by the application
			step(n, fsm.Event{Kind: fsm.EvReAttest})
		case 7: // rare: the connection ends or DAT checks start failing
			switch param {
			case 0xff:
				step(n, fsm.Event{Kind: fsm.EvClose})
			case 0xfe:
				step(n, fsm.Event{Kind: fsm.EvChannelError})
			case 0xfd:
				n.rejectDat = !n.rejectDat
			}
		case 8: // everything in flight arrives, drivers stay put
			for i := 0; i < 64 && (len(p.a.inbox) > 0 || len(p.b.inbox) > 0); i++ {
				deliver(p.a)
				deliver(p.b)
			}
		case 9: // both drivers of n report OK (Dummy2)
			step(n, n.h.live(fsm.Event{Kind: fsm.EvVerifierOK}))
			step(n, n.h.live(fsm.Event{Kind: fsm.EvProverOK}))
		case 10: // the ACK timer fires
			step(n, n.h.live(fsm.Event{Kind: fsm.EvAckTimeout}))
		}
	}
	t.Logf("pair: A %v (sent %d, got %d), B %v (sent %d, got %d)", p.a.h.state(), sent[p.a], received[p.a],
		p.b.h.state(), sent[p.b], received[p.b])
}

// ---- seeds --------------------------------------------------------------

func sev(k fsm.EventKind, flags byte, extra ...byte) []byte {
	return append([]byte{byte(k) - 1, flags}, extra...)
}

func fuzzSeeds() [][]byte {
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// Peer Hello: supported {B, Dummy2}, expected {Dummy2}.
	hello := sev(fsm.EvHello, 0, 0x8a)
	handshake := cat(sev(fsm.EvStart, 0), hello, sev(fsm.EvProverOK, 0), sev(fsm.EvVerifierOK, 0))
	seeds := [][]byte{
		// handshake, data both ways, retransmission, duplicate, wrong ACK
		cat(handshake,
			sev(fsm.EvSend, 0), sev(fsm.EvData, 0), sev(fsm.EvData, 8), sev(fsm.EvAck, 2), sev(fsm.EvAck, 0),
			sev(fsm.EvSend, 0), sev(fsm.EvAckTimeout, 0), sev(fsm.EvAckTimeout, 0x11), sev(fsm.EvAckTimeout, 0), sev(fsm.EvAck, 2),
			sev(fsm.EvData, 2), sev(fsm.EvData, 0), sev(fsm.EvClose, 0)),
		// re-attestation with a message outstanding, stale timers
		cat(handshake,
			sev(fsm.EvSend, 0), sev(fsm.EvReAttest, 0), sev(fsm.EvAckTimeout, 0x11), sev(fsm.EvData, 0),
			sev(fsm.EvVerifierOK, 0), sev(fsm.EvAckTimeout, 0), sev(fsm.EvRaTimeout, 0), sev(fsm.EvReRa, 0),
			sev(fsm.EvProverOK, 0), sev(fsm.EvVerifierOK, 0), sev(fsm.EvAck, 0)),
		// DAT expiry both ways, invalid DAT
		cat(handshake,
			sev(fsm.EvDatTimeout, 0), sev(fsm.EvDatExpired, 0), sev(fsm.EvProverOK, 0), sev(fsm.EvDat, 0),
			sev(fsm.EvVerifierOK, 0), sev(fsm.EvSend, 0), sev(fsm.EvDatTimeout, 0), sev(fsm.EvDat, 4)),
		// suite mismatch, Hello without DAT, handshake timeout
		cat(sev(fsm.EvStart, 0), sev(fsm.EvHello, 0, 0x11), sev(fsm.EvSend, 0)),
		cat(sev(fsm.EvStart, 0), sev(fsm.EvHello, 8, 0x8a)),
		cat(sev(fsm.EvStart, 0), sev(fsm.EvHandshakeTimeout, 0), sev(fsm.EvStart, 0)),
		// RA messages and driver failures
		cat(sev(fsm.EvStart, 0), hello, sev(fsm.EvRaProver, 0), sev(fsm.EvRaVerifier, 0), sev(fsm.EvProverMsg, 0),
			sev(fsm.EvVerifierMsg, 0), sev(fsm.EvProverOK, 0), sev(fsm.EvRaVerifier, 0), sev(fsm.EvVerifierFailed, 0)),
		// pair: handshake, data both ways, RA on A, DAT expiry on B, retransmissions
		{
			0x20, 0, 0x10, 0, // Hellos arrive (0x20: the input drives the handshake)
			0x09, 0, 0x19, 0, // drivers OK
			0x04, 0, 0x14, 0, // both send
			0x08, 0, // all arrives
			0x04, 0, 0x06, 0, // A sends, A re-attests
			0x10, 0, 0x10, 0, // B gets data, ReRa
			0x19, 0, 0x09, 0, // drivers
			0x08, 0, 0x0a, 0, 0x08, 0,
			0x13, 4, 0x08, 0, 0x19, 0, 0x09, 0, 0x08, 0, // DAT timer on B
			0x14, 0, 0x1a, 0, 0x1a, 0, 0x08, 0, 0x04, 0, 0x08, 0,
			0x07, 0xff, 0x08, 0,
		},
		// pair: prover messages and failures, stale driver runs
		{0x20, 0, 0x10, 0, 0x02, 2, 0x12, 3, 0x08, 0, 0x02, 0x82, 0x02, 0, 0x02, 1, 0x12, 0xfe, 0x08, 0},
		// pair, established: interleaved sends, RA on both sides, retransmissions, DAT expiry
		{
			0x04, 0, 0x14, 0, 0x00, 0, 0x06, 0, 0x10, 0, 0x10, 0, 0x0a, 0, 0x00, 0, 0x00, 0,
			0x19, 0, 0x09, 0, 0x08, 0, 0x0a, 0, 0x1a, 0, 0x08, 0, 0x04, 0, 0x13, 4, 0x08, 0,
			0x09, 0, 0x19, 0, 0x08, 0, 0x0a, 0, 0x08, 0, 0x14, 0, 0x08, 0,
		},
	}
	return seeds
}
