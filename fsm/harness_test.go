package fsm_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// Shared test plumbing: a harness that drives one machine and mirrors, from
// the actions it emits, which timers are armed and which drivers run (with
// their latest generation numbers), so tests can build "live" timer and
// driver events. Every step is checked against machine-wide invariants.

const (
	dummy2     = "Dummy2"
	hsTimeout  = 20 * time.Second
	ackTimeout = 200 * time.Millisecond
	raInterval = time.Hour
	helloRenew = 100 * time.Second // RenewIn of the DAT carried by the peer's Hello
	datRenew   = 50 * time.Second  // RenewIn of a DAT carried by IdscpDat
)

var allTimers = []fsm.Timer{fsm.TimerHandshake, fsm.TimerProver, fsm.TimerVerifier, fsm.TimerRa, fsm.TimerDat, fsm.TimerAck}

func testConfig() fsm.Config {
	return fsm.Config{
		SupportedSuites:  []string{dummy2},
		ExpectedSuites:   []string{dummy2},
		HandshakeTimeout: hsTimeout,
		AckTimeout:       ackTimeout,
		RaInterval:       raInterval,
	}
}

// timerFor maps a timer event kind to its timer (ok=false for other kinds).
func timerFor(k fsm.EventKind) (fsm.Timer, bool) {
	for _, t := range allTimers {
		if t.Event() == k {
			return t, true
		}
	}
	return 0, false
}

func isProverEvent(k fsm.EventKind) bool {
	return k == fsm.EvProverOK || k == fsm.EvProverFailed || k == fsm.EvProverMsg
}

func isVerifierEvent(k fsm.EventKind) bool {
	return k == fsm.EvVerifierOK || k == fsm.EvVerifierFailed || k == fsm.EvVerifierMsg
}

type harness struct {
	tb   testing.TB
	name string
	m    *fsm.Machine

	timerGen [6]uint64 // latest Gen per timer seen in ActStartTimer
	armed    [6]bool

	proverGen, verifierGen         uint64
	proverRunning, verifierRunning bool

	everEstablished bool

	// The data message this side sent and has not seen acknowledged.
	outstanding    []byte
	outstandingBit bool

	steps      int
	lastBefore fsm.State
	fatal      bool // stop at the first invariant violation (fuzzing)
}

func newHarness(tb testing.TB, cfg fsm.Config) *harness {
	return &harness{tb: tb, name: "m", m: fsm.New(cfg)}
}

func (h *harness) state() fsm.State { return h.m.State() }

// armedTimers lists the timers the harness believes armed, in Timer order.
func (h *harness) armedTimers() []fsm.Timer {
	var ts []fsm.Timer
	for _, t := range allTimers {
		if h.armed[t] {
			ts = append(ts, t)
		}
	}
	return ts
}

// live fills in the current generation for timer and driver events.
func (h *harness) live(ev fsm.Event) fsm.Event {
	if t, ok := timerFor(ev.Kind); ok {
		ev.Gen = h.timerGen[t]
	} else if isProverEvent(ev.Kind) {
		ev.Gen = h.proverGen
	} else if isVerifierEvent(ev.Kind) {
		ev.Gen = h.verifierGen
	}
	return ev
}

// mustStep steps and fails the test unless the result is want.
func (h *harness) mustStep(ev fsm.Event, want fsm.Result) []fsm.Action {
	h.tb.Helper()
	acts, res := h.step(ev)
	if res != want {
		h.tb.Fatalf("%s: step %v in %v: result %v, want %v (actions %v)", h.name, ev.Kind, h.lastBefore, res, want, acts)
	}
	return acts
}

// stepLive steps ev with its live generation filled in.
func (h *harness) stepLive(ev fsm.Event) ([]fsm.Action, fsm.Result) { return h.step(h.live(ev)) }

// step feeds ev to the machine, updates the mirror and checks invariants.
func (h *harness) step(ev fsm.Event) ([]fsm.Action, fsm.Result) {
	h.tb.Helper()
	h.steps++
	before := h.m.State()
	h.lastBefore = before
	pendingBefore := h.m.AckPending()

	// The outside world's view of the event: a timer that fires with its
	// live generation is no longer armed; a driver that reports a result
	// with its live generation has finished.
	// Deviation (b): an event from a timer run that is not armed, or from a
	// driver run that is not the running one, must be ignored.
	stale := false
	if t, ok := timerFor(ev.Kind); ok {
		if h.armed[t] && ev.Gen == h.timerGen[t] {
			h.armed[t] = false
		} else {
			stale = true
		}
	}
	if isProverEvent(ev.Kind) && (!h.proverRunning || ev.Gen != h.proverGen) ||
		isVerifierEvent(ev.Kind) && (!h.verifierRunning || ev.Gen != h.verifierGen) {
		stale = true
	}
	proverDone := (ev.Kind == fsm.EvProverOK || ev.Kind == fsm.EvProverFailed) && h.proverRunning && ev.Gen == h.proverGen
	verifierDone := (ev.Kind == fsm.EvVerifierOK || ev.Kind == fsm.EvVerifierFailed) && h.verifierRunning && ev.Gen == h.verifierGen
	if proverDone {
		h.proverRunning = false
	}
	if verifierDone {
		h.verifierRunning = false
	}

	acts, res := h.m.Step(ev, nil)
	after := h.m.State()
	errf := func(format string, args ...any) {
		h.tb.Helper()
		msg := fmt.Sprintf("%s step %d (%v gen %d in %v → %v, %v, actions %s): %s", h.name, h.steps, ev.Kind, ev.Gen,
			before, after, res, describe(acts), fmt.Sprintf(format, args...))
		if h.fatal {
			h.tb.Fatal(msg)
		}
		h.tb.Error(msg)
	}

	if before == fsm.ClosedLocked {
		if res != fsm.Locked || len(acts) != 0 || after != fsm.ClosedLocked {
			errf("a locked machine must answer Locked with no actions")
		}
		return acts, res
	}

	if stale && (res != fsm.Ignored || len(acts) != 0 || after != before) {
		errf("stale timer/driver event not ignored")
	}
	delivers := 0
	for i, a := range acts {
		switch a.Kind {
		case fsm.ActStartTimer:
			if a.Gen <= h.timerGen[a.Timer] {
				errf("StartTimer(%v) gen %d not above previous %d", a.Timer, a.Gen, h.timerGen[a.Timer])
			}
			h.timerGen[a.Timer] = a.Gen
			h.armed[a.Timer] = true
		case fsm.ActCancelTimer:
			if !h.armed[a.Timer] {
				errf("CancelTimer(%v) for a timer that is not armed", a.Timer)
			}
			h.armed[a.Timer] = false
		case fsm.ActStartProver:
			if h.proverRunning {
				errf("StartProver while a prover still runs")
			}
			if a.Gen <= h.proverGen {
				errf("StartProver gen %d not above previous %d", a.Gen, h.proverGen)
			}
			h.proverGen = a.Gen
			h.proverRunning = true
		case fsm.ActStopProver:
			if !h.proverRunning {
				errf("StopProver without a running prover")
			}
			h.proverRunning = false
		case fsm.ActStartVerifier:
			if h.verifierRunning {
				errf("StartVerifier while a verifier still runs")
			}
			if a.Gen <= h.verifierGen {
				errf("StartVerifier gen %d not above previous %d", a.Gen, h.verifierGen)
			}
			h.verifierGen = a.Gen
			h.verifierRunning = true
		case fsm.ActStopVerifier:
			if !h.verifierRunning {
				errf("StopVerifier without a running verifier")
			}
			h.verifierRunning = false
		case fsm.ActToProver:
			if !h.proverRunning {
				errf("ToProver without a running prover")
			}
		case fsm.ActToVerifier:
			if !h.verifierRunning {
				errf("ToVerifier without a running verifier")
			}
		case fsm.ActDeliver:
			delivers++
			if ev.Kind != fsm.EvData || !before.Connected() {
				errf("Deliver outside EvData in ESTABLISHED/WAIT_FOR_ACK")
			}
			if !h.everEstablished {
				errf("Deliver before the machine was ever established")
			}
			if i+1 >= len(acts) || acts[i+1].Kind != fsm.ActSendAck || acts[i+1].Bit != ev.Bit {
				errf("Deliver not followed by SendAck with the received bit %t", ev.Bit)
			}
		case fsm.ActSendAck:
			if i == 0 || acts[i-1].Kind != fsm.ActDeliver {
				errf("SendAck without a delivery")
			}
		case fsm.ActSendData:
			if a.Retransmit {
				if ev.Kind != fsm.EvAckTimeout || before != fsm.WaitForAck {
					errf("retransmission outside an ACK timeout in WAIT_FOR_ACK")
				}
				if !bytes.Equal(a.Payload, h.outstanding) || a.Bit != h.outstandingBit {
					errf("retransmission %q/%t differs from outstanding %q/%t", a.Payload, a.Bit, h.outstanding, h.outstandingBit)
				}
			} else {
				if ev.Kind != fsm.EvSend || before != fsm.Established {
					errf("new data sent outside EvSend in ESTABLISHED")
				}
				if pendingBefore {
					errf("second outstanding data message")
				}
				h.outstanding = a.Payload
				h.outstandingBit = a.Bit
			}
		case fsm.ActAcked:
			if !pendingBefore || ev.Kind != fsm.EvAck || ev.Bit != h.outstandingBit {
				errf("Acked without an outstanding message matched by the ACK bit")
			}
		case fsm.ActSend:
			if a.Msg.GetIdscpClose() != nil {
				if after != fsm.ClosedLocked {
					errf("IdscpClose sent without closing")
				}
			}
		case fsm.ActCloseChannel:
			if i != len(acts)-1 {
				errf("CloseChannel is not the last action")
			}
		}
	}
	if delivers > 1 {
		errf("%d deliveries in one step", delivers)
	}
	closedNow := after == fsm.ClosedLocked
	if hasKind(acts, fsm.ActCloseChannel) != closedNow {
		errf("CloseChannel emitted iff the machine locks")
	}
	if closedNow {
		if ts := h.armedTimers(); len(ts) > 0 {
			errf("timers %v left armed after close", ts)
		}
		if h.proverRunning || h.verifierRunning {
			errf("drivers left running after close (prover %t, verifier %t)", h.proverRunning, h.verifierRunning)
		}
		if res != fsm.OK {
			errf("closing step result %v", res)
		}
	}
	if after == fsm.WaitForAck && !h.m.AckPending() {
		errf("WAIT_FOR_ACK without a pending message")
	}
	if after == fsm.Established && h.m.AckPending() {
		errf("ESTABLISHED with a pending message")
	}
	if after == fsm.WaitForAck && !h.armed[fsm.TimerAck] {
		errf("WAIT_FOR_ACK without an armed ACK timer")
	}
	if after != fsm.WaitForAck && h.armed[fsm.TimerAck] {
		errf("ACK timer armed outside WAIT_FOR_ACK")
	}
	if after == fsm.Established {
		h.everEstablished = true
	}
	return acts, res
}

func hasKind(acts []fsm.Action, k fsm.ActionKind) bool {
	return slices.ContainsFunc(acts, func(a fsm.Action) bool { return a.Kind == k })
}

func kinds(acts []fsm.Action) []fsm.ActionKind {
	ks := make([]fsm.ActionKind, len(acts))
	for i, a := range acts {
		ks[i] = a.Kind
	}
	return ks
}

// ---- messages and events -------------------------------------------------

func mHello(tok string, sup, exp []string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpHello{IdscpHello: &pb.IdscpHello{
		Version: 2, DynamicAttributeToken: &pb.IdscpDat{Token: []byte(tok)}, SupportedRaSuite: sup, ExpectedRaSuite: exp}}}
}

func mClose(c pb.IdscpClose_CloseCause, msg string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpClose{IdscpClose: &pb.IdscpClose{CauseCode: c, CauseMsg: msg}}}
}

func mDatExpired() *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDatExpired{IdscpDatExpired: &pb.IdscpDatExpired{}}}
}

func mDat(tok string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDat{IdscpDat: &pb.IdscpDat{Token: []byte(tok)}}}
}

func mReRa() *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpReRa{IdscpReRa: &pb.IdscpReRa{}}}
}

func mRaProver(p string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaProver{IdscpRaProver: &pb.IdscpRaProver{Data: []byte(p)}}}
}

func mRaVerifier(p string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaVerifier{IdscpRaVerifier: &pb.IdscpRaVerifier{Data: []byte(p)}}}
}

func helloMsg(tok string, sup, exp []string) *pb.IdscpHello {
	return mHello(tok, sup, exp).GetIdscpHello()
}

func validDat(renew time.Duration) fsm.DatCheck { return fsm.DatCheck{Valid: true, RenewIn: renew} }

var invalidDat = fsm.DatCheck{Valid: false, Reason: "signature"}

func evHello(sup, exp []string) fsm.Event {
	return fsm.Event{Kind: fsm.EvHello, Hello: helloMsg("peer-dat", sup, exp), Dat: validDat(helloRenew)}
}

// ---- expected actions ----------------------------------------------------

func aSend(m *pb.IdscpMessage) fsm.Action { return fsm.Action{Kind: fsm.ActSend, Msg: m} }
func aData(p string, bit, re bool) fsm.Action {
	return fsm.Action{Kind: fsm.ActSendData, Payload: []byte(p), Bit: bit, Retransmit: re}
}
func aAck(bit bool) fsm.Action { return fsm.Action{Kind: fsm.ActSendAck, Bit: bit} }
func aStart(t fsm.Timer, after time.Duration) fsm.Action {
	return fsm.Action{Kind: fsm.ActStartTimer, Timer: t, After: after}
}
func aCancel(t fsm.Timer) fsm.Action                               { return fsm.Action{Kind: fsm.ActCancelTimer, Timer: t} }
func aStartP(suite string) fsm.Action                              { return fsm.Action{Kind: fsm.ActStartProver, Suite: suite} }
func aStartV(suite string) fsm.Action                              { return fsm.Action{Kind: fsm.ActStartVerifier, Suite: suite} }
func aStopP() fsm.Action                                           { return fsm.Action{Kind: fsm.ActStopProver} }
func aStopV() fsm.Action                                           { return fsm.Action{Kind: fsm.ActStopVerifier} }
func aToP(p string) fsm.Action                                     { return fsm.Action{Kind: fsm.ActToProver, Payload: []byte(p)} }
func aToV(p string) fsm.Action                                     { return fsm.Action{Kind: fsm.ActToVerifier, Payload: []byte(p)} }
func aDeliver(p string) fsm.Action                                 { return fsm.Action{Kind: fsm.ActDeliver, Payload: []byte(p)} }
func aAcked() fsm.Action                                           { return fsm.Action{Kind: fsm.ActAcked} }
func aCloseChannel() fsm.Action                                    { return fsm.Action{Kind: fsm.ActCloseChannel} }
func aSendClose(c pb.IdscpClose_CloseCause, msg string) fsm.Action { return aSend(mClose(c, msg)) }

// Composite action runs used throughout the spec's table.
func startProver() []fsm.Action {
	return []fsm.Action{aStartP(dummy2), aStart(fsm.TimerProver, hsTimeout)}
}
func restartProver() []fsm.Action {
	return append([]fsm.Action{aStopP(), aCancel(fsm.TimerProver)}, startProver()...)
}
func startVerifier() []fsm.Action {
	return []fsm.Action{aStartV(dummy2), aStart(fsm.TimerVerifier, hsTimeout)}
}

// sameAction compares the salient fields of an action.
func sameAction(want, got fsm.Action) bool {
	if want.Kind != got.Kind {
		return false
	}
	switch want.Kind {
	case fsm.ActSend:
		return proto.Equal(want.Msg, got.Msg)
	case fsm.ActSendData:
		return bytes.Equal(want.Payload, got.Payload) && want.Bit == got.Bit && want.Retransmit == got.Retransmit
	case fsm.ActSendAck:
		return want.Bit == got.Bit
	case fsm.ActStartTimer:
		return want.Timer == got.Timer && want.After == got.After
	case fsm.ActCancelTimer:
		return want.Timer == got.Timer
	case fsm.ActStartProver, fsm.ActStartVerifier:
		return want.Suite == got.Suite
	case fsm.ActToProver, fsm.ActToVerifier, fsm.ActDeliver:
		return bytes.Equal(want.Payload, got.Payload)
	}
	return true
}

func describe(acts []fsm.Action) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, a := range acts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
		switch a.Kind {
		case fsm.ActSend:
			if c := a.Msg.GetIdscpClose(); c != nil {
				fmt.Fprintf(&b, "{%q}", c.GetCauseMsg())
			}
		case fsm.ActSendData, fsm.ActDeliver, fsm.ActToProver, fsm.ActToVerifier:
			fmt.Fprintf(&b, "{%q}", a.Payload)
		case fsm.ActStartTimer:
			fmt.Fprintf(&b, "#%d", a.Gen)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// checkActions compares in order.
func checkActions(tb testing.TB, what string, got, want []fsm.Action) {
	tb.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = sameAction(want[i], got[i])
	}
	if !ok {
		tb.Errorf("%s:\n got  %s\n want %s", what, describe(got), describe(want))
	}
}

// findSend returns the messages of the ActSend actions.
func sends(acts []fsm.Action) []*pb.IdscpMessage {
	var ms []*pb.IdscpMessage
	for _, a := range acts {
		if a.Kind == fsm.ActSend {
			ms = append(ms, a.Msg)
		}
	}
	return ms
}

// ---- reaching states -----------------------------------------------------

// reachState drives a fresh machine from ClosedUnlocked to st along a
// realistic path. The harness carries the live timer and driver gens.
//
//	WaitForHello            Start
//	WaitForRa               + peer Hello
//	WaitForRaVerifier       + ProverOK
//	WaitForRaProver         WaitForRa + VerifierOK
//	Established             WaitForRaVerifier + VerifierOK
//	WaitForAck              Established + Send("hello")
//	WaitForDatAndRaVerifier Established + DAT timer
//	WaitForDatAndRa         WaitForRa + DAT timer
//	ClosedLocked            WaitForHello + user close
func reachState(t testing.TB, st fsm.State) *harness {
	t.Helper()
	h := newHarness(t, testConfig())
	h.name = st.String()
	path := map[fsm.State][]fsm.Event{
		fsm.ClosedUnlocked:          nil,
		fsm.WaitForHello:            {evStart()},
		fsm.WaitForRa:               {evStart(), evHello([]string{dummy2}, []string{dummy2})},
		fsm.WaitForRaVerifier:       {evStart(), evHello([]string{dummy2}, []string{dummy2}), {Kind: fsm.EvProverOK}},
		fsm.WaitForRaProver:         {evStart(), evHello([]string{dummy2}, []string{dummy2}), {Kind: fsm.EvVerifierOK}},
		fsm.Established:             establishPath(),
		fsm.WaitForAck:              append(establishPath(), fsm.Event{Kind: fsm.EvSend, Payload: []byte("hello")}),
		fsm.WaitForDatAndRaVerifier: append(establishPath(), fsm.Event{Kind: fsm.EvDatTimeout}),
		fsm.WaitForDatAndRa:         {evStart(), evHello([]string{dummy2}, []string{dummy2}), {Kind: fsm.EvDatTimeout}},
		fsm.ClosedLocked:            {evStart(), {Kind: fsm.EvClose}},
	}[st]
	for _, ev := range path {
		if _, res := h.stepLive(ev); res != fsm.OK {
			t.Fatalf("reaching %v: %v gave %v", st, ev.Kind, res)
		}
	}
	if h.state() != st {
		t.Fatalf("reaching %v: ended in %v", st, h.state())
	}
	return h
}

func evStart() fsm.Event { return fsm.Event{Kind: fsm.EvStart, Token: []byte("my-dat")} }

func establishPath() []fsm.Event {
	return []fsm.Event{evStart(), evHello([]string{dummy2}, []string{dummy2}), {Kind: fsm.EvProverOK}, {Kind: fsm.EvVerifierOK}}
}

// ---- two wired machines ----------------------------------------------------

// node is one side of a wired pair.
type node struct {
	h         *harness
	name      string
	token     string   // this side's DAT
	fresh     []string // DATs handed out on IdscpDatExpired, in order
	rejectDat bool     // this side refuses the peer's DATs
	auto      bool     // complete every driver run with OK at once (Dummy2)

	inbox     []fsm.Event // from the peer, in wire order
	local     []fsm.Event // driver completions
	wire      []*pb.IdscpMessage
	wireData  []fsm.Action // ActSendData and ActSendAck as written
	delivered [][]byte
	closed    bool
	eof       bool // the peer's channel end is closed
}

type pair struct {
	a, b *node
}

func newPair(tb testing.TB, cfgA, cfgB fsm.Config) *pair {
	p := &pair{
		a: &node{h: newHarness(tb, cfgA), name: "A", token: "dat-A", auto: true},
		b: &node{h: newHarness(tb, cfgB), name: "B", token: "dat-B", auto: true},
	}
	p.a.h.name, p.b.h.name = "A", "B"
	return p
}

func (p *pair) other(n *node) *node {
	if n == p.a {
		return p.b
	}
	return p.a
}

func (n *node) checkDat(tok []byte) fsm.DatCheck {
	if n.rejectDat || string(tok) == "invalid" {
		return invalidDat
	}
	return validDat(helloRenew)
}

func (n *node) freshToken() []byte {
	tok := fmt.Sprintf("%s-fresh-%d", n.token, len(n.fresh)+1)
	n.fresh = append(n.fresh, tok)
	return []byte(tok)
}

// toEvent turns a wire message into the receiver's event.
func (n *node) toEvent(msg *pb.IdscpMessage) fsm.Event {
	switch v := msg.GetMessage().(type) {
	case *pb.IdscpMessage_IdscpHello:
		ev := fsm.Event{Kind: fsm.EvHello, Hello: v.IdscpHello}
		if v.IdscpHello.GetDynamicAttributeToken() != nil {
			ev.Dat = n.checkDat(v.IdscpHello.GetDynamicAttributeToken().GetToken())
		}
		return ev
	case *pb.IdscpMessage_IdscpClose:
		return fsm.Event{Kind: fsm.EvPeerClose, Close: v.IdscpClose}
	case *pb.IdscpMessage_IdscpDatExpired:
		return fsm.Event{Kind: fsm.EvDatExpired, Token: n.freshToken()}
	case *pb.IdscpMessage_IdscpDat:
		d := n.checkDat(v.IdscpDat.GetToken())
		if d.Valid {
			d.RenewIn = datRenew
		}
		return fsm.Event{Kind: fsm.EvDat, Dat: d}
	case *pb.IdscpMessage_IdscpReRa:
		return fsm.Event{Kind: fsm.EvReRa}
	case *pb.IdscpMessage_IdscpRaProver:
		return fsm.Event{Kind: fsm.EvRaProver, Payload: v.IdscpRaProver.GetData()}
	case *pb.IdscpMessage_IdscpRaVerifier:
		return fsm.Event{Kind: fsm.EvRaVerifier, Payload: v.IdscpRaVerifier.GetData()}
	}
	panic("unexpected message")
}

// step feeds ev to n and routes the resulting actions.
func (p *pair) step(n *node, ev fsm.Event) ([]fsm.Action, fsm.Result) {
	acts, res := n.h.step(ev)
	peer := p.other(n)
	for _, a := range acts {
		switch a.Kind {
		case fsm.ActSend:
			n.wire = append(n.wire, a.Msg)
			if !n.closed {
				peer.inbox = append(peer.inbox, peer.toEvent(a.Msg))
			}
		case fsm.ActSendData:
			n.wireData = append(n.wireData, a)
			if !n.closed {
				peer.inbox = append(peer.inbox, fsm.Event{Kind: fsm.EvData, Payload: a.Payload, Bit: a.Bit})
			}
		case fsm.ActSendAck:
			n.wireData = append(n.wireData, a)
			if !n.closed {
				peer.inbox = append(peer.inbox, fsm.Event{Kind: fsm.EvAck, Bit: a.Bit})
			}
		case fsm.ActStartProver:
			if n.auto {
				n.local = append(n.local, fsm.Event{Kind: fsm.EvProverOK, Gen: a.Gen})
			}
		case fsm.ActStartVerifier:
			if n.auto {
				n.local = append(n.local, fsm.Event{Kind: fsm.EvVerifierOK, Gen: a.Gen})
			}
		case fsm.ActDeliver:
			n.delivered = append(n.delivered, a.Payload)
		case fsm.ActCloseChannel:
			if !n.closed {
				n.closed = true
				// What was written arrives, then the channel ends.
				peer.inbox = append(peer.inbox, fsm.Event{Kind: fsm.EvChannelEOF})
			}
		}
	}
	return acts, res
}

// deliverOne hands n the next event from its inbox.
func (p *pair) deliverOne(n *node) bool {
	if len(n.inbox) == 0 {
		return false
	}
	ev := n.inbox[0]
	n.inbox = n.inbox[1:]
	p.step(n, ev)
	return true
}

// runLocal hands n its next driver completion.
func (p *pair) runLocal(n *node) bool {
	if len(n.local) == 0 {
		return false
	}
	ev := n.local[0]
	n.local = n.local[1:]
	p.step(n, ev)
	return true
}

// run drains all queues, alternating between the sides.
func (p *pair) run(tb testing.TB) {
	tb.Helper()
	for i := 0; ; i++ {
		if i > 10000 {
			tb.Fatalf("pair does not settle")
		}
		progressed := false
		for _, n := range []*node{p.a, p.b} {
			if p.runLocal(n) {
				progressed = true
			}
			if p.deliverOne(n) {
				progressed = true
			}
		}
		if !progressed {
			return
		}
	}
}

// start starts both sides and runs the handshake to completion.
func (p *pair) start(tb testing.TB) {
	tb.Helper()
	p.step(p.a, fsm.Event{Kind: fsm.EvStart, Token: []byte(p.a.token)})
	p.step(p.b, fsm.Event{Kind: fsm.EvStart, Token: []byte(p.b.token)})
	p.run(tb)
}
