package fsm_test

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// Focused scenarios from spec §3.4–§3.8 and §8.

func establishedPair(t *testing.T) *pair {
	t.Helper()
	p := newPair(t, testConfig(), testConfig())
	p.start(t)
	for _, n := range []*node{p.a, p.b} {
		if n.h.state() != fsm.Established {
			t.Fatalf("%s in %v after the handshake", n.name, n.h.state())
		}
	}
	return p
}

// §3.8: "Typical handshake wire sequence with Dummy2 on both sides: both send
// Hello; each verifies the peer DAT; both RA drivers report OK immediately,
// with no IdscpRaProver or IdscpRaVerifier on the wire; ESTABLISHED."
func TestDummy2HandshakePair(t *testing.T) {
	p := establishedPair(t)
	for _, n := range []*node{p.a, p.b} {
		if len(n.wire) != 1 {
			t.Fatalf("%s wrote %d messages, want only its Hello: %v", n.name, len(n.wire), n.wire)
		}
		want := mHello(n.token, []string{dummy2}, []string{dummy2})
		if !proto.Equal(n.wire[0], want) {
			t.Errorf("%s Hello %v, want %v", n.name, n.wire[0], want)
		}
		if pv, vf := n.h.m.Suites(); pv != dummy2 || vf != dummy2 {
			t.Errorf("%s suites %q/%q", n.name, pv, vf)
		}
		// Established holds the RA and DAT timers and nothing else.
		if got := n.h.armedTimers(); fmt.Sprint(got) != fmt.Sprint([]fsm.Timer{fsm.TimerRa, fsm.TimerDat}) {
			t.Errorf("%s armed timers %v", n.name, got)
		}
		if n.h.proverRunning || n.h.verifierRunning || n.h.m.AckPending() {
			t.Errorf("%s: drivers or ACK still pending", n.name)
		}
		if n.h.m.CloseInfo() != (fsm.CloseInfo{}) {
			t.Errorf("%s CloseInfo %+v before close", n.name, n.h.m.CloseInfo())
		}
	}
}

// §3.5: bits start at false and alternate; each message is delivered once,
// in order, and ACKed with its own bit.
func TestAlternatingBitPair(t *testing.T) {
	p := establishedPair(t)
	for i := 0; i < 4; i++ {
		for _, n := range []*node{p.a, p.b} {
			payload := fmt.Appendf(nil, "%s-%d", n.name, i)
			acts, res := p.step(n, fsm.Event{Kind: fsm.EvSend, Payload: payload})
			if res != fsm.OK || n.h.state() != fsm.WaitForAck {
				t.Fatalf("%s send %d: %v → %v", n.name, i, res, n.h.state())
			}
			wantBit := i%2 == 1
			checkActions(t, "send", acts, []fsm.Action{aData(string(payload), wantBit, false), aStart(fsm.TimerAck, ackTimeout)})
			// A second send while waiting blocks.
			if acts, res := p.step(n, fsm.Event{Kind: fsm.EvSend, Payload: []byte("x")}); res != fsm.WouldBlock || len(acts) != 0 {
				t.Fatalf("send while waiting: %v %v", res, acts)
			}
		}
		p.run(t)
		for _, n := range []*node{p.a, p.b} {
			if n.h.state() != fsm.Established {
				t.Fatalf("round %d: %s in %v", i, n.name, n.h.state())
			}
		}
	}
	for _, n := range []*node{p.a, p.b} {
		peer := p.other(n)
		var bitsData, bitsAck []bool
		for _, a := range n.wireData {
			if a.Kind == fsm.ActSendData {
				bitsData = append(bitsData, a.Bit)
			} else {
				bitsAck = append(bitsAck, a.Bit)
			}
		}
		if fmt.Sprint(bitsData) != "[false true false true]" || fmt.Sprint(bitsAck) != "[false true false true]" {
			t.Errorf("%s wrote data bits %v, ack bits %v", n.name, bitsData, bitsAck)
		}
		var got []string
		for _, d := range n.delivered {
			got = append(got, string(d))
		}
		want := fmt.Sprintf("[%s-0 %s-1 %s-2 %s-3]", peer.name, peer.name, peer.name, peer.name)
		if fmt.Sprint(got) != want {
			t.Errorf("%s delivered %v, want %s", n.name, got, want)
		}
	}
}

// §3.5: "otherwise ignore silently, without re-sending an ACK".
func TestDuplicateDataNeitherDeliveredNorAcked(t *testing.T) {
	for _, st := range []fsm.State{fsm.Established, fsm.WaitForAck} {
		h := reachState(t, st)
		acts := h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("one"), Bit: false}, fsm.OK)
		checkActions(t, "first", acts, []fsm.Action{aDeliver("one"), aAck(false)})
		for i := 0; i < 3; i++ { // retransmissions of "one"
			acts := h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("one"), Bit: false}, fsm.OK)
			checkActions(t, "duplicate", acts, nil)
		}
		acts = h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("two"), Bit: true}, fsm.OK)
		checkActions(t, "second", acts, []fsm.Action{aDeliver("two"), aAck(true)})
		acts = h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("two"), Bit: true}, fsm.OK)
		checkActions(t, "duplicate second", acts, nil)
		acts = h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("three"), Bit: false}, fsm.OK)
		checkActions(t, "third", acts, []fsm.Action{aDeliver("three"), aAck(false)})
		if h.state() != st {
			t.Errorf("state %v, want %v", h.state(), st)
		}
	}
	// A first message with bit true (RUST master's encoding, §3.5) is never taken.
	h := reachState(t, fsm.Established)
	for i := 0; i < 3; i++ {
		checkActions(t, "bit true first", h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("r"), Bit: true}, fsm.OK), nil)
	}
}

// §3.5: "ACKs with the wrong bit, or ACKs when no ACK is outstanding, are ignored".
func TestAckWithWrongBitIgnored(t *testing.T) {
	h := reachState(t, fsm.WaitForAck)
	checkActions(t, "wrong bit", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: true}, fsm.OK), nil)
	if h.state() != fsm.WaitForAck || !h.m.AckPending() || !h.armed[fsm.TimerAck] {
		t.Fatalf("wrong-bit ACK changed state: %v pending %t", h.state(), h.m.AckPending())
	}
	checkActions(t, "right bit", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: false}, fsm.OK),
		[]fsm.Action{aCancel(fsm.TimerAck), aAcked()})
	if h.state() != fsm.Established || h.m.AckPending() {
		t.Fatalf("after ACK: %v pending %t", h.state(), h.m.AckPending())
	}
	// A repeated ACK with no message outstanding.
	checkActions(t, "late ACK", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: false}, fsm.Ignored), nil)
	// Second message carries bit true; an ACK{false} does not match it.
	h.mustStep(fsm.Event{Kind: fsm.EvSend, Payload: []byte("2")}, fsm.OK)
	checkActions(t, "stale ACK", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: false}, fsm.OK), nil)
	checkActions(t, "ACK true", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: true}, fsm.OK),
		[]fsm.Action{aCancel(fsm.TimerAck), aAcked()})
	// An ACK during re-attestation with nothing outstanding is a no-op.
	h.mustStep(fsm.Event{Kind: fsm.EvReAttest}, fsm.OK)
	checkActions(t, "ACK in RA", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: false}, fsm.OK), nil)
}

// §3.3/§3.4: "ACK_TIMER_EXPIRED: resend the buffered IdscpData unchanged and
// restart ackTimer"; no retry limit.
func TestAckTimeoutRetransmits(t *testing.T) {
	h := reachState(t, fsm.WaitForAck)
	for _, bit := range []bool{false, true} {
		payload := fmt.Sprintf("msg-%t", bit)
		if bit {
			h.mustStep(fsm.Event{Kind: fsm.EvSend, Payload: []byte(payload)}, fsm.OK)
		} else {
			payload = "hello"
		}
		for i := 0; i < 5; i++ {
			prev := h.timerGen[fsm.TimerAck]
			acts := h.mustStep(h.live(fsm.Event{Kind: fsm.EvAckTimeout}), fsm.OK)
			checkActions(t, "retransmit", acts, []fsm.Action{aData(payload, bit, true), aStart(fsm.TimerAck, ackTimeout)})
			if h.state() != fsm.WaitForAck || h.timerGen[fsm.TimerAck] <= prev {
				t.Fatalf("after retransmit: %v gen %d", h.state(), h.timerGen[fsm.TimerAck])
			}
			// The previous run is stale now.
			if acts, res := h.step(fsm.Event{Kind: fsm.EvAckTimeout, Gen: prev}); res != fsm.Ignored || len(acts) != 0 {
				t.Fatalf("old ACK timer run: %v %v", res, acts)
			}
		}
		h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: bit}, fsm.OK)
		if h.state() != fsm.Established {
			t.Fatalf("state %v", h.state())
		}
	}
}

// §3.4 end note: "ackFlag and the buffered message survive re-attestation.
// When RA finishes and ackFlag is still set, the FSM enters WAIT_FOR_ACK and
// restarts ackTimer, so the retransmission happens after one ack timeout
// (not immediately)." §3.5: data during RA is dropped without ACK.
func TestReAttestationWithOutstandingMessage(t *testing.T) {
	type variant struct {
		name    string
		trigger fsm.Event
		via     fsm.State
		finish  fsm.EventKind // the driver result that ends the RA
		first   []fsm.Action  // actions of the trigger
	}
	variants := []variant{
		{"user repeatRa", fsm.Event{Kind: fsm.EvReAttest}, fsm.WaitForRaVerifier, fsm.EvVerifierOK,
			flat(aCancel(fsm.TimerRa), aCancel(fsm.TimerAck), aSend(mReRa()), startVerifier())},
		{"RA timer", fsm.Event{Kind: fsm.EvRaTimeout}, fsm.WaitForRaVerifier, fsm.EvVerifierOK,
			flat(aCancel(fsm.TimerAck), aSend(mReRa()), startVerifier())},
		{"peer IdscpReRa", fsm.Event{Kind: fsm.EvReRa}, fsm.WaitForRaProver, fsm.EvProverOK,
			flat(startProver(), aCancel(fsm.TimerAck))},
		{"peer IdscpDatExpired", fsm.Event{Kind: fsm.EvDatExpired, Token: []byte("fresh-dat")}, fsm.WaitForRaProver, fsm.EvProverOK,
			flat(aSend(mDat("fresh-dat")), startProver(), aCancel(fsm.TimerAck))},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			h := reachState(t, fsm.WaitForAck)
			oldAck := h.timerGen[fsm.TimerAck]
			acts := h.mustStep(h.live(v.trigger), fsm.OK)
			checkActions(t, "trigger", acts, v.first)
			if h.state() != v.via || !h.m.AckPending() || h.armed[fsm.TimerAck] {
				t.Fatalf("during RA: %v pending %t ack armed %t", h.state(), h.m.AckPending(), h.armed[fsm.TimerAck])
			}
			// The cancelled ACK timer's run is stale.
			if acts, res := h.step(fsm.Event{Kind: fsm.EvAckTimeout, Gen: oldAck}); res != fsm.Ignored || len(acts) != 0 {
				t.Fatalf("cancelled ACK timer: %v %v", res, acts)
			}
			// Data from the peer is dropped without ACK, both bits.
			for _, bit := range []bool{false, true} {
				acts, res := h.step(fsm.Event{Kind: fsm.EvData, Payload: []byte("during-ra"), Bit: bit})
				if res != fsm.Ignored || len(acts) != 0 {
					t.Fatalf("data during RA: %v %s", res, describe(acts))
				}
			}
			// Sending is refused while attesting.
			if _, res := h.step(fsm.Event{Kind: fsm.EvSend, Payload: []byte("x")}); res != fsm.NotConnected {
				t.Fatalf("send during RA: %v", res)
			}
			acts = h.mustStep(h.live(fsm.Event{Kind: v.finish}), fsm.OK)
			var want []fsm.Action
			if v.finish == fsm.EvVerifierOK {
				want = flat(aCancel(fsm.TimerVerifier), aStart(fsm.TimerRa, raInterval), aStart(fsm.TimerAck, ackTimeout))
			} else {
				want = flat(aCancel(fsm.TimerProver), aStart(fsm.TimerAck, ackTimeout))
			}
			checkActions(t, "RA done", acts, want)
			if hasKind(acts, fsm.ActSendData) {
				t.Fatalf("immediate resend after RA")
			}
			if h.state() != fsm.WaitForAck {
				t.Fatalf("after RA: %v", h.state())
			}
			checkActions(t, "retransmit after RA", h.mustStep(h.live(fsm.Event{Kind: fsm.EvAckTimeout}), fsm.OK),
				[]fsm.Action{aData("hello", false, true), aStart(fsm.TimerAck, ackTimeout)})
			// The data dropped during RA was not consumed: the same bit is still expected.
			checkActions(t, "data after RA", h.mustStep(fsm.Event{Kind: fsm.EvData, Payload: []byte("late"), Bit: false}, fsm.OK),
				[]fsm.Action{aDeliver("late"), aAck(false)})
		})
	}

	// An ACK that arrives during RA completes the message; RA then ends in ESTABLISHED.
	t.Run("ACK during RA", func(t *testing.T) {
		h := reachState(t, fsm.WaitForAck)
		h.mustStep(fsm.Event{Kind: fsm.EvReAttest}, fsm.OK)
		checkActions(t, "ACK", h.mustStep(fsm.Event{Kind: fsm.EvAck, Bit: false}, fsm.OK), []fsm.Action{aAcked()})
		acts := h.mustStep(h.live(fsm.Event{Kind: fsm.EvVerifierOK}), fsm.OK)
		checkActions(t, "RA done", acts, flat(aCancel(fsm.TimerVerifier), aStart(fsm.TimerRa, raInterval)))
		if h.state() != fsm.Established {
			t.Fatalf("state %v", h.state())
		}
	})

	// Over the wire: A sends while B re-attests; B drops A's data; A resends
	// after one ACK timeout and B takes it exactly once.
	t.Run("pair", func(t *testing.T) {
		p := establishedPair(t)
		p.step(p.b, fsm.Event{Kind: fsm.EvReAttest}) // B → WaitForRaVerifier, IdscpReRa queued to A
		p.step(p.a, fsm.Event{Kind: fsm.EvSend, Payload: []byte("m1")})
		// B gets A's data before anything else: dropped.
		p.b.inbox = append([]fsm.Event{p.b.inbox[len(p.b.inbox)-1]}, p.b.inbox[:len(p.b.inbox)-1]...)
		p.deliverOne(p.b)
		if len(p.b.delivered) != 0 {
			t.Fatalf("B delivered during RA")
		}
		p.run(t)
		if p.a.h.state() != fsm.WaitForAck || p.b.h.state() != fsm.Established {
			t.Fatalf("after RA: A %v B %v", p.a.h.state(), p.b.h.state())
		}
		p.step(p.a, p.a.h.live(fsm.Event{Kind: fsm.EvAckTimeout}))
		p.run(t)
		if p.a.h.state() != fsm.Established || len(p.b.delivered) != 1 || string(p.b.delivered[0]) != "m1" {
			t.Fatalf("A %v, B delivered %q", p.a.h.state(), p.b.delivered)
		}
	})
}

// §3.6: "DAT expiry (local timer) → send IdscpDatExpired, start the handshake
// timer, wait in WAIT_FOR_DAT_AND_RA_VERIFIER. The peer answers with
// IdscpDat{fresh token} and restarts its prover (peer goes to
// WAIT_FOR_RA_PROVER). On a valid DAT, the local side restarts its verifier."
func TestDatExpiryCycle(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		for _, st := range []fsm.State{fsm.Established, fsm.WaitForAck} {
			h := reachState(t, st)
			acts := h.mustStep(h.live(fsm.Event{Kind: fsm.EvDatTimeout}), fsm.OK)
			want := flat(aCancel(fsm.TimerRa))
			if st == fsm.WaitForAck {
				want = append(want, aCancel(fsm.TimerAck))
			}
			want = append(want, aSend(mDatExpired()), aStart(fsm.TimerHandshake, hsTimeout))
			checkActions(t, st.String(), acts, want)
			if h.state() != fsm.WaitForDatAndRaVerifier {
				t.Fatalf("state %v", h.state())
			}
			if !h.m.WantsDat(false) || h.m.WantsDat(true) {
				t.Errorf("WantsDat in WAIT_FOR_DAT_AND_RA_VERIFIER")
			}
			acts = h.mustStep(fsm.Event{Kind: fsm.EvDat, Dat: validDat(datRenew)}, fsm.OK)
			checkActions(t, "Dat", acts, flat(aCancel(fsm.TimerHandshake), aStart(fsm.TimerDat, datRenew), startVerifier()))
			h.mustStep(h.live(fsm.Event{Kind: fsm.EvVerifierOK}), fsm.OK)
			if h.state() != st {
				t.Fatalf("after the cycle: %v, want %v", h.state(), st)
			}
		}
	})
	t.Run("pair", func(t *testing.T) {
		p := establishedPair(t)
		p.step(p.a, p.a.h.live(fsm.Event{Kind: fsm.EvDatTimeout}))
		if p.a.h.state() != fsm.WaitForDatAndRaVerifier || !p.a.h.armed[fsm.TimerHandshake] {
			t.Fatalf("A in %v", p.a.h.state())
		}
		acts, _ := p.step(p.b, p.b.inbox[0])
		p.b.inbox = p.b.inbox[1:]
		checkActions(t, "B answers", acts, flat(aSend(mDat("dat-B-fresh-1")), startProver()))
		if p.b.h.state() != fsm.WaitForRaProver {
			t.Fatalf("B in %v", p.b.h.state())
		}
		p.run(t)
		if p.a.h.state() != fsm.Established || p.b.h.state() != fsm.Established {
			t.Fatalf("after the cycle: A %v B %v", p.a.h.state(), p.b.h.state())
		}
		// A's DAT timer runs again for the fresh DAT.
		if !p.a.h.armed[fsm.TimerDat] || !p.a.h.armed[fsm.TimerRa] {
			t.Errorf("A timers %v", p.a.h.armedTimers())
		}
		// Data flows again.
		p.step(p.a, fsm.Event{Kind: fsm.EvSend, Payload: []byte("after")})
		p.run(t)
		if len(p.b.delivered) != 1 || p.a.h.state() != fsm.Established {
			t.Fatalf("B delivered %q, A %v", p.b.delivered, p.a.h.state())
		}
	})
}

// §9.7: "Answer IdscpDatExpired with IdscpDat plus a prover restart in every
// non-closed state" (after the Hello exchange).
func TestPeerDatExpiredAnsweredEverywhere(t *testing.T) {
	next := map[fsm.State]fsm.State{
		fsm.WaitForRa: fsm.WaitForRa, fsm.WaitForRaVerifier: fsm.WaitForRa, fsm.WaitForRaProver: fsm.WaitForRaProver,
		fsm.WaitForDatAndRa: fsm.WaitForDatAndRa, fsm.WaitForDatAndRaVerifier: fsm.WaitForDatAndRa,
		fsm.Established: fsm.WaitForRaProver, fsm.WaitForAck: fsm.WaitForRaProver,
	}
	for st, nx := range next {
		h := reachState(t, st)
		acts := h.mustStep(fsm.Event{Kind: fsm.EvDatExpired, Token: []byte("tok")}, fsm.OK)
		if ms := sends(acts); len(ms) != 1 || !proto.Equal(ms[0], mDat("tok")) {
			t.Errorf("%v: sent %v", st, ms)
		}
		if !hasKind(acts, fsm.ActStartProver) || !h.proverRunning {
			t.Errorf("%v: prover not restarted: %s", st, describe(acts))
		}
		if h.state() != nx {
			t.Errorf("%v → %v, want %v", st, h.state(), nx)
		}
	}
}

// §3.4 Hello step 5/6 and IdscpDat: close(NO_VALID_DAT,"No valid DAT").
func TestInvalidDat(t *testing.T) {
	check := func(t *testing.T, h *harness, st fsm.State, ev fsm.Event) {
		t.Helper()
		acts := h.mustStep(ev, fsm.OK)
		if h.state() != fsm.ClosedLocked {
			t.Fatalf("state %v", h.state())
		}
		// "cancel handshakeTimer and verify the DAT" comes first.
		if len(acts) == 0 || !sameAction(aCancel(fsm.TimerHandshake), acts[0]) {
			t.Errorf("handshake timer not cancelled first: %s", describe(acts))
		}
		checkClosePath(t, h, st, ev, acts, &closeWant{sent: true, cause: pb.IdscpClose_NO_VALID_DAT, msg: "No valid DAT",
			checkRemote: true, remote: false})
	}
	t.Run("Hello", func(t *testing.T) {
		h := reachState(t, fsm.WaitForHello)
		ev := evHello([]string{dummy2}, []string{dummy2})
		ev.Dat = invalidDat
		check(t, h, fsm.WaitForHello, ev)
		if h.m.CloseInfo().Reason == "" || !bytes.Contains([]byte(h.m.CloseInfo().Reason), []byte("signature")) {
			t.Errorf("Reason %q does not carry the DatCheck reason", h.m.CloseInfo().Reason)
		}
	})
	t.Run("IdscpDat in WaitForDatAndRaVerifier", func(t *testing.T) {
		h := reachState(t, fsm.WaitForDatAndRaVerifier)
		check(t, h, fsm.WaitForDatAndRaVerifier, fsm.Event{Kind: fsm.EvDat, Dat: invalidDat})
	})
	t.Run("IdscpDat in WaitForDatAndRa", func(t *testing.T) {
		h := reachState(t, fsm.WaitForDatAndRa)
		check(t, h, fsm.WaitForDatAndRa, fsm.Event{Kind: fsm.EvDat, Dat: invalidDat})
	})
	t.Run("pair", func(t *testing.T) {
		p := newPair(t, testConfig(), testConfig())
		p.b.rejectDat = true
		p.start(t)
		if p.a.h.state() != fsm.ClosedLocked || p.b.h.state() != fsm.ClosedLocked {
			t.Fatalf("A %v B %v", p.a.h.state(), p.b.h.state())
		}
		if c := p.b.h.m.CloseInfo(); !c.Sent || c.Cause != pb.IdscpClose_NO_VALID_DAT {
			t.Errorf("B CloseInfo %+v", c)
		}
		if c := p.a.h.m.CloseInfo(); c.Sent || !c.Remote || c.Cause != pb.IdscpClose_NO_VALID_DAT || c.Message != "No valid DAT" {
			t.Errorf("A CloseInfo %+v", c)
		}
	})
}

// §3.4 Hello step 5: "no DAT → close(NO_VALID_DAT,"No valid DAT")".
func TestHelloWithoutDat(t *testing.T) {
	h := reachState(t, fsm.WaitForHello)
	hello := helloMsg("", []string{dummy2}, []string{dummy2})
	hello.DynamicAttributeToken = nil
	acts := h.mustStep(fsm.Event{Kind: fsm.EvHello, Hello: hello, Dat: validDat(helloRenew)}, fsm.OK)
	checkActions(t, "Hello without DAT", acts, []fsm.Action{aCancel(fsm.TimerHandshake),
		aSendClose(pb.IdscpClose_NO_VALID_DAT, "No valid DAT"), aCloseChannel()})
	if info := h.m.CloseInfo(); !info.Sent || info.Cause != pb.IdscpClose_NO_VALID_DAT || info.Message != "No valid DAT" {
		t.Errorf("CloseInfo %+v", info)
	}
	assertLockedForever(t, h)

	// Suite mismatch is checked before the DAT (steps 4 then 5): no Close at all.
	h = reachState(t, fsm.WaitForHello)
	hello = helloMsg("", []string{"X"}, []string{"X"})
	hello.DynamicAttributeToken = nil
	acts = h.mustStep(fsm.Event{Kind: fsm.EvHello, Hello: hello}, fsm.OK)
	checkActions(t, "mismatch without DAT", acts, []fsm.Action{aCancel(fsm.TimerHandshake), aCloseChannel()})
}

// §8 (RUST-MT vectors) and §3.4 Hello steps 2–4.
func TestRaNegotiation(t *testing.T) {
	cfg := testConfig()
	cfg.SupportedSuites = []string{"B", "C", "D"}
	cfg.ExpectedSuites = []string{"B", "C", "D"}
	t.Run("[C,B,A] vs [B,C,D]", func(t *testing.T) {
		h := newHarness(t, cfg)
		h.mustStep(evStart(), fsm.OK)
		acts := h.mustStep(evHello([]string{"C", "B", "A"}, []string{"C", "B", "A"}), fsm.OK)
		if pv, vf := h.m.Suites(); pv != "C" || vf != "B" {
			t.Fatalf("Suites() = %q, %q; want C, B", pv, vf)
		}
		checkActions(t, "drivers", acts, flat(aCancel(fsm.TimerHandshake), aStart(fsm.TimerDat, helloRenew),
			aStartV("B"), aStart(fsm.TimerVerifier, hsTimeout), aStartP("C"), aStart(fsm.TimerProver, hsTimeout)))
	})
	// Prover: first of the *peer's* expected list we support; verifier:
	// first of *our* expected list the peer supports.
	t.Run("orders", func(t *testing.T) {
		c := testConfig()
		c.SupportedSuites = []string{"P1", "P2"}
		c.ExpectedSuites = []string{"V2", "V1"}
		h := newHarness(t, c)
		h.mustStep(evStart(), fsm.OK)
		h.mustStep(evHello([]string{"V1", "V2"}, []string{"P2", "P1"}), fsm.OK)
		if pv, vf := h.m.Suites(); pv != "P2" || vf != "V2" {
			t.Fatalf("Suites() = %q, %q; want P2, V2", pv, vf)
		}
	})
	mismatch := []struct {
		name     string
		sup, exp []string // the peer's
		cause    pb.IdscpClose_CloseCause
	}{
		{"[A,B] vs [C,D]", []string{"A", "B"}, []string{"A", "B"}, pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER},
		{"prover only", []string{"B"}, []string{"A"}, pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER},
		{"verifier only", []string{"A"}, []string{"B"}, pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER},
		{"empty", nil, nil, pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER},
	}
	for _, c := range mismatch {
		t.Run(c.name, func(t *testing.T) {
			own := testConfig()
			own.SupportedSuites = []string{"C", "D"}
			own.ExpectedSuites = []string{"C", "D"}
			if c.name != "[A,B] vs [C,D]" {
				own.SupportedSuites = []string{"B"}
				own.ExpectedSuites = []string{"B"}
			}
			h := newHarness(t, own)
			h.mustStep(evStart(), fsm.OK)
			acts := h.mustStep(evHello(c.sup, c.exp), fsm.OK)
			// "if either is missing → CLOSED, without sending IdscpClose"
			checkActions(t, "mismatch", acts, []fsm.Action{aCancel(fsm.TimerHandshake), aCloseChannel()})
			if h.state() != fsm.ClosedLocked {
				t.Fatalf("state %v", h.state())
			}
			if info := h.m.CloseInfo(); info.Sent || info.Cause != c.cause || info.Reason == "" {
				t.Errorf("CloseInfo %+v", info)
			}
			assertLockedForever(t, h)
		})
	}
	t.Run("pair mismatch", func(t *testing.T) {
		a, b := testConfig(), testConfig()
		a.SupportedSuites, a.ExpectedSuites = []string{"A", "B"}, []string{"A", "B"}
		b.SupportedSuites, b.ExpectedSuites = []string{"C", "D"}, []string{"C", "D"}
		p := newPair(t, a, b)
		p.start(t)
		for _, n := range []*node{p.a, p.b} {
			if n.h.state() != fsm.ClosedLocked || len(n.wire) != 1 || n.wire[0].GetIdscpHello() == nil {
				t.Errorf("%s: %v, wrote %v", n.name, n.h.state(), n.wire)
			}
		}
	})
}

// §3.4/§3.7: "Handshake Timeout" in WAIT_FOR_HELLO, "Handshake timeout" elsewhere.
func TestHandshakeTimeouts(t *testing.T) {
	cases := []struct {
		st    fsm.State
		timer fsm.Timer
		msg   string
	}{
		{fsm.WaitForHello, fsm.TimerHandshake, "Handshake Timeout"},
		{fsm.WaitForRa, fsm.TimerProver, "Handshake timeout"},
		{fsm.WaitForRa, fsm.TimerVerifier, "Handshake timeout"},
		{fsm.WaitForRaVerifier, fsm.TimerVerifier, "Handshake timeout"},
		{fsm.WaitForRaProver, fsm.TimerProver, "Handshake timeout"},
		{fsm.WaitForDatAndRa, fsm.TimerHandshake, "Handshake timeout"},
		{fsm.WaitForDatAndRa, fsm.TimerProver, "Handshake timeout"},
		{fsm.WaitForDatAndRaVerifier, fsm.TimerHandshake, "Handshake timeout"},
	}
	for _, c := range cases {
		t.Run(c.st.String()+"/"+c.timer.String(), func(t *testing.T) {
			h := reachState(t, c.st)
			ev := h.live(fsm.Event{Kind: c.timer.Event()})
			acts := h.mustStep(ev, fsm.OK)
			checkClosePath(t, h, c.st, ev, acts, &closeWant{sent: true, cause: pb.IdscpClose_TIMEOUT, msg: c.msg})
			if h.m.CloseInfo().Remote {
				t.Errorf("timeout marked remote")
			}
		})
	}
	// ESTABLISHED / WAIT_FOR_ACK have no TIMEOUT transition (§3.3): such
	// timers are never armed there, so any expiry is stale.
	for _, st := range []fsm.State{fsm.Established, fsm.WaitForAck} {
		for _, tm := range []fsm.Timer{fsm.TimerHandshake, fsm.TimerProver, fsm.TimerVerifier} {
			h := reachState(t, st)
			if acts, res := h.stepLive(fsm.Event{Kind: tm.Event()}); res != fsm.Ignored || len(acts) != 0 {
				t.Errorf("%v/%v: %v %v", st, tm, res, acts)
			}
		}
	}
	t.Run("pair", func(t *testing.T) {
		p := newPair(t, testConfig(), testConfig())
		p.step(p.a, fsm.Event{Kind: fsm.EvStart, Token: []byte("dat-A")})
		p.step(p.a, p.a.h.live(fsm.Event{Kind: fsm.EvHandshakeTimeout}))
		p.step(p.b, fsm.Event{Kind: fsm.EvStart, Token: []byte("dat-B")})
		p.run(t)
		if p.a.h.state() != fsm.ClosedLocked || p.b.h.state() != fsm.ClosedLocked {
			t.Fatalf("A %v B %v", p.a.h.state(), p.b.h.state())
		}
		if c := p.b.h.m.CloseInfo(); !c.Remote || c.Sent || c.Cause != pb.IdscpClose_TIMEOUT || c.Message != "Handshake Timeout" {
			t.Errorf("B CloseInfo %+v", c)
		}
	})
}

// §3.7: RA_PROVER_FAILED "RA_PROVER failed", RA_VERIFIER_FAILED "RA_VERIFIER failed".
func TestRaDriverFailures(t *testing.T) {
	cases := []struct {
		st    fsm.State
		kind  fsm.EventKind
		cause pb.IdscpClose_CloseCause
		msg   string
	}{
		{fsm.WaitForRa, fsm.EvProverFailed, pb.IdscpClose_RA_PROVER_FAILED, "RA_PROVER failed"},
		{fsm.WaitForRa, fsm.EvVerifierFailed, pb.IdscpClose_RA_VERIFIER_FAILED, "RA_VERIFIER failed"},
		{fsm.WaitForRaProver, fsm.EvProverFailed, pb.IdscpClose_RA_PROVER_FAILED, "RA_PROVER failed"},
		{fsm.WaitForRaVerifier, fsm.EvVerifierFailed, pb.IdscpClose_RA_VERIFIER_FAILED, "RA_VERIFIER failed"},
		{fsm.WaitForDatAndRa, fsm.EvProverFailed, pb.IdscpClose_RA_PROVER_FAILED, "RA_PROVER failed"},
	}
	for _, c := range cases {
		t.Run(c.st.String()+"/"+c.kind.String(), func(t *testing.T) {
			h := reachState(t, c.st)
			ev := h.live(fsm.Event{Kind: c.kind})
			acts := h.mustStep(ev, fsm.OK)
			checkClosePath(t, h, c.st, ev, acts, &closeWant{sent: true, cause: c.cause, msg: c.msg})
		})
	}
	t.Run("pair: verifier rejects during re-attestation", func(t *testing.T) {
		p := establishedPair(t)
		p.a.auto = false
		p.step(p.a, fsm.Event{Kind: fsm.EvReAttest})
		p.run(t)
		p.step(p.a, p.a.h.live(fsm.Event{Kind: fsm.EvVerifierFailed}))
		p.run(t)
		if p.a.h.state() != fsm.ClosedLocked || p.b.h.state() != fsm.ClosedLocked {
			t.Fatalf("A %v B %v", p.a.h.state(), p.b.h.state())
		}
		if c := p.b.h.m.CloseInfo(); c.Cause != pb.IdscpClose_RA_VERIFIER_FAILED || c.Message != "RA_VERIFIER failed" || !c.Remote || c.Sent {
			t.Errorf("B CloseInfo %+v", c)
		}
	})
}

// §3.7 close paths from the user, the peer and the channel.
func TestClosePaths(t *testing.T) {
	open := []fsm.State{fsm.WaitForHello, fsm.WaitForRa, fsm.WaitForRaVerifier, fsm.WaitForRaProver,
		fsm.WaitForDatAndRa, fsm.WaitForDatAndRaVerifier, fsm.Established, fsm.WaitForAck}
	for _, st := range open {
		t.Run(st.String()+"/user", func(t *testing.T) {
			h := reachState(t, st)
			ev := fsm.Event{Kind: fsm.EvClose}
			checkClosePath(t, h, st, ev, h.mustStep(ev, fsm.OK), &closeWant{sent: true, cause: pb.IdscpClose_USER_SHUTDOWN,
				msg: "User close", checkRemote: true, remote: false})
		})
		t.Run(st.String()+"/peer", func(t *testing.T) {
			h := reachState(t, st)
			ev := fsm.Event{Kind: fsm.EvPeerClose, Close: mClose(pb.IdscpClose_NO_VALID_DAT, "No valid DAT").GetIdscpClose()}
			checkClosePath(t, h, st, ev, h.mustStep(ev, fsm.OK), &closeWant{sent: false, cause: pb.IdscpClose_NO_VALID_DAT,
				msg: "No valid DAT", checkRemote: true, remote: true})
		})
		t.Run(st.String()+"/peer without body", func(t *testing.T) {
			h := reachState(t, st)
			ev := fsm.Event{Kind: fsm.EvPeerClose}
			checkClosePath(t, h, st, ev, h.mustStep(ev, fsm.OK), &closeWant{sent: false, checkRemote: true, remote: true})
		})
		t.Run(st.String()+"/eof", func(t *testing.T) {
			h := reachState(t, st)
			ev := fsm.Event{Kind: fsm.EvChannelEOF}
			acts := h.mustStep(ev, fsm.OK)
			checkClosePath(t, h, st, ev, acts, &closeWant{sent: false, checkRemote: true, remote: true})
			if len(sends(acts)) != 0 {
				t.Errorf("ChannelEOF sent %v", sends(acts))
			}
		})
		t.Run(st.String()+"/error", func(t *testing.T) {
			h := reachState(t, st)
			ev := fsm.Event{Kind: fsm.EvChannelError}
			acts := h.mustStep(ev, fsm.OK)
			checkClosePath(t, h, st, ev, acts, &closeWant{sent: false})
			if len(sends(acts)) != 0 {
				t.Errorf("ChannelError sent %v", sends(acts))
			}
		})
	}
	t.Run("pair user close", func(t *testing.T) {
		p := establishedPair(t)
		p.step(p.a, fsm.Event{Kind: fsm.EvClose})
		p.run(t)
		if p.a.h.state() != fsm.ClosedLocked || p.b.h.state() != fsm.ClosedLocked {
			t.Fatalf("A %v B %v", p.a.h.state(), p.b.h.state())
		}
		// B answered nothing: its only message is its Hello.
		if len(p.b.wire) != 1 {
			t.Errorf("B wrote %v after the peer's close", p.b.wire[1:])
		}
		if c := p.b.h.m.CloseInfo(); c.Sent || !c.Remote || c.Cause != pb.IdscpClose_USER_SHUTDOWN || c.Message != "User close" {
			t.Errorf("B CloseInfo %+v", c)
		}
		if c := p.a.h.m.CloseInfo(); !c.Sent || c.Remote {
			t.Errorf("A CloseInfo %+v", c)
		}
	})
	t.Run("pair channel error", func(t *testing.T) {
		p := establishedPair(t)
		p.step(p.a, fsm.Event{Kind: fsm.EvChannelError})
		if len(p.a.wire) != 1 {
			t.Errorf("A wrote %v on a channel error", p.a.wire[1:])
		}
		p.run(t) // B sees EOF and tries to close politely
		if p.b.h.state() != fsm.ClosedLocked || !p.b.h.m.CloseInfo().Remote {
			t.Fatalf("B %v %+v", p.b.h.state(), p.b.h.m.CloseInfo())
		}
	})
}

// Deviation (a) outside the table: results of a machine that never started.
func TestClosedUnlockedAndLocked(t *testing.T) {
	h := newHarness(t, testConfig())
	for _, k := range fsm.AllEventKinds() {
		ev := h.live(tableEvent(k))
		if k == fsm.EvStart {
			continue
		}
		acts, res := h.step(ev)
		want := fsm.Ignored
		switch k {
		case fsm.EvSend, fsm.EvReAttest, fsm.EvClose:
			want = fsm.NotStarted
		}
		if res != want || len(acts) != 0 || h.state() != fsm.ClosedUnlocked {
			t.Errorf("%v: %v %v in %v, want %v", k, res, acts, h.state(), want)
		}
	}
	if h.m.CloseInfo() != (fsm.CloseInfo{}) {
		t.Errorf("CloseInfo %+v", h.m.CloseInfo())
	}
	// It can still start after all that.
	h.mustStep(evStart(), fsm.OK)
	if h.state() != fsm.WaitForHello {
		t.Fatalf("state %v", h.state())
	}
	h.mustStep(fsm.Event{Kind: fsm.EvClose}, fsm.OK)
	assertLockedForever(t, h)
	// A locked machine cannot be restarted.
	if acts, res := h.m.Step(evStart(), nil); res != fsm.Locked || len(acts) != 0 {
		t.Fatalf("restart after close: %v %v", res, acts)
	}
}

// Step appends to the slice it is given.
func TestStepAppends(t *testing.T) {
	m := fsm.New(testConfig())
	buf := make([]fsm.Action, 1, 8)
	buf[0] = fsm.Action{Kind: fsm.ActAcked}
	out, res := m.Step(evStart(), buf)
	if res != fsm.OK || len(out) != 3 || out[0].Kind != fsm.ActAcked || &out[0] != &buf[0] {
		t.Fatalf("Step did not append: %v", out)
	}
}
