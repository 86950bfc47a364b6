package fsm_test

import (
	"slices"
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// The (state × event) table, written from docs §3.4 (transition table),
// §3.3 (timers), §3.5 (alternating bit) and §3.7 (close causes) of
// /work/shared/spec/idscp2.md, not from machine.go. Driver and timer events
// in the table are "live" (they carry the generation the machine handed
// out); stale ones are tested separately below.

// resources is what the spec says is armed and running in a state reached
// by reachState.
type resources struct {
	timers           []fsm.Timer
	prover, verifier bool
}

var specResources = map[fsm.State]resources{
	fsm.ClosedUnlocked: {},
	fsm.ClosedLocked:   {},
	// "handshakeTimer … started on entering WAIT_FOR_HELLO"
	fsm.WaitForHello: {timers: []fsm.Timer{fsm.TimerHandshake}},
	// Hello: "start datTimer; start the verifier driver, then the prover
	// driver (each with its own handshake timer)"
	fsm.WaitForRa: {timers: []fsm.Timer{fsm.TimerProver, fsm.TimerVerifier, fsm.TimerDat}, prover: true, verifier: true},
	// RA_PROVER_OK → "cancel the prover timer"
	fsm.WaitForRaVerifier: {timers: []fsm.Timer{fsm.TimerVerifier, fsm.TimerDat}, verifier: true},
	// RA_VERIFIER_OK → "cancel the verifier timer, reset raTimer"
	fsm.WaitForRaProver: {timers: []fsm.Timer{fsm.TimerProver, fsm.TimerRa, fsm.TimerDat}, prover: true},
	fsm.Established:     {timers: []fsm.Timer{fsm.TimerRa, fsm.TimerDat}},
	// SEND_DATA → "start ackTimer"
	fsm.WaitForAck: {timers: []fsm.Timer{fsm.TimerRa, fsm.TimerDat, fsm.TimerAck}},
	// DAT_TIMER_EXPIRED in ESTABLISHED → "cancel raTimer, send
	// IdscpDatExpired, reset handshakeTimer"
	fsm.WaitForDatAndRaVerifier: {timers: []fsm.Timer{fsm.TimerHandshake}},
	// DAT_TIMER_EXPIRED in WAIT_FOR_RA → "stop the verifier, send
	// IdscpDatExpired, reset handshakeTimer"
	fsm.WaitForDatAndRa: {timers: []fsm.Timer{fsm.TimerProver, fsm.TimerHandshake}, prover: true},
}

type closeWant struct {
	sent        bool
	cause       pb.IdscpClose_CloseCause
	msg         string
	checkRemote bool
	remote      bool
}

type want struct {
	stay  bool
	next  fsm.State
	res   fsm.Result
	acts  []fsm.Action
	close *closeWant
}

func flat(parts ...any) []fsm.Action {
	var out []fsm.Action
	for _, p := range parts {
		switch v := p.(type) {
		case fsm.Action:
			out = append(out, v)
		case []fsm.Action:
			out = append(out, v...)
		default:
			panic("flat: bad part")
		}
	}
	return out
}

func stay(res fsm.Result, parts ...any) want { return want{stay: true, res: res, acts: flat(parts...)} }
func to(next fsm.State, parts ...any) want {
	return want{next: next, res: fsm.OK, acts: flat(parts...)}
}

func closes(c pb.IdscpClose_CloseCause, msg string) want {
	return want{next: fsm.ClosedLocked, res: fsm.OK, close: &closeWant{sent: true, cause: c, msg: msg}}
}

var (
	ign     = stay(fsm.Ignored)
	locked  = stay(fsm.Locked)
	okStay  = stay(fsm.OK)
	notConn = stay(fsm.NotConnected)

	// §3.7: "Receiving IdscpClose in any non-CLOSED state → CLOSED, without a reply."
	peerClose = want{next: fsm.ClosedLocked, res: fsm.OK, close: &closeWant{sent: false, cause: pb.IdscpClose_ERROR,
		msg: "peer gone", checkRemote: true, remote: true}}
	// IDSCP_STOP → close(USER_SHUTDOWN,"User close")
	userClose = want{next: fsm.ClosedLocked, res: fsm.OK, close: &closeWant{sent: true, cause: pb.IdscpClose_USER_SHUTDOWN,
		msg: "User close", checkRemote: true, remote: false}}
	// §3.7 says a Close is attempted on EOF; the reference's channel refuses
	// to write once its reader has seen EOF, so nothing reaches the wire
	// (docs/protocol.md, D1). The machine sends nothing.
	eofClose = want{next: fsm.ClosedLocked, res: fsm.OK, close: &closeWant{sent: false, checkRemote: true, remote: true}}
	// §3.7: "A TLS I/O error → CLOSED without Close."
	errClose = want{next: fsm.ClosedLocked, res: fsm.OK, close: &closeWant{sent: false}}

	hsTimeoutCap   = closes(pb.IdscpClose_TIMEOUT, "Handshake Timeout") // WAIT_FOR_HELLO only
	hsTimeoutLower = closes(pb.IdscpClose_TIMEOUT, "Handshake timeout")
	proverFailed   = closes(pb.IdscpClose_RA_PROVER_FAILED, "RA_PROVER failed")
	verifierFailed = closes(pb.IdscpClose_RA_VERIFIER_FAILED, "RA_VERIFIER failed")
)

func transitionTable() map[fsm.State]map[fsm.EventKind]want {
	const (
		ClosedUnlocked          = fsm.ClosedUnlocked
		ClosedLocked            = fsm.ClosedLocked
		WaitForHello            = fsm.WaitForHello
		WaitForRa               = fsm.WaitForRa
		WaitForRaVerifier       = fsm.WaitForRaVerifier
		WaitForRaProver         = fsm.WaitForRaProver
		WaitForDatAndRa         = fsm.WaitForDatAndRa
		WaitForDatAndRaVerifier = fsm.WaitForDatAndRaVerifier
		Established             = fsm.Established
		WaitForAck              = fsm.WaitForAck
	)
	sendDat := aSend(mDat("fresh-dat"))
	sendDatExpired := aSend(mDatExpired())
	sendReRa := aSend(mReRa())
	startHs := aStart(fsm.TimerHandshake, hsTimeout)
	startRa := aStart(fsm.TimerRa, raInterval)
	startAck := aStart(fsm.TimerAck, ackTimeout)

	return map[fsm.State]map[fsm.EventKind]want{
		// Deviation (a): ClosedUnlocked answers Send/ReAttest/Close with
		// NotStarted, starts on Start, ignores the rest.
		ClosedUnlocked: {
			fsm.EvHello: ign, fsm.EvPeerClose: ign, fsm.EvDatExpired: ign, fsm.EvDat: ign, fsm.EvReRa: ign,
			fsm.EvRaProver: ign, fsm.EvRaVerifier: ign, fsm.EvData: ign, fsm.EvAck: ign,
			// "Send IdscpHello{version=2, dat, supportedRaSuite, expectedRaSuite} → WAIT_FOR_HELLO"
			fsm.EvStart: to(WaitForHello, aSend(mHello("my-dat", []string{dummy2}, []string{dummy2})), startHs),
			fsm.EvClose: stay(fsm.NotStarted), fsm.EvSend: stay(fsm.NotStarted), fsm.EvReAttest: stay(fsm.NotStarted),
			fsm.EvChannelEOF: ign, fsm.EvChannelError: ign,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			fsm.EvVerifierOK: ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout: ign, fsm.EvDatTimeout: ign, fsm.EvAckTimeout: ign,
		},
		// Deviation (a): ClosedLocked returns Locked for everything.
		ClosedLocked: {
			fsm.EvHello: locked, fsm.EvPeerClose: locked, fsm.EvDatExpired: locked, fsm.EvDat: locked, fsm.EvReRa: locked,
			fsm.EvRaProver: locked, fsm.EvRaVerifier: locked, fsm.EvData: locked, fsm.EvAck: locked,
			fsm.EvStart: locked, fsm.EvClose: locked, fsm.EvSend: locked, fsm.EvReAttest: locked,
			fsm.EvChannelEOF: locked, fsm.EvChannelError: locked,
			fsm.EvProverOK: locked, fsm.EvProverFailed: locked, fsm.EvProverMsg: locked,
			fsm.EvVerifierOK: locked, fsm.EvVerifierFailed: locked, fsm.EvVerifierMsg: locked,
			fsm.EvHandshakeTimeout: locked, fsm.EvProverTimeout: locked, fsm.EvVerifierTimeout: locked,
			fsm.EvRaTimeout: locked, fsm.EvDatTimeout: locked, fsm.EvAckTimeout: locked,
		},
		WaitForHello: {
			// steps 1, 7, 8, 9: cancel handshakeTimer; start datTimer; verifier, then prover; → WAIT_FOR_RA
			fsm.EvHello: to(WaitForRa, aCancel(fsm.TimerHandshake), aStart(fsm.TimerDat, helloRenew),
				startVerifier(), startProver()),
			fsm.EvPeerClose: peerClose, fsm.EvDatExpired: ign, fsm.EvDat: ign, fsm.EvReRa: ign,
			fsm.EvRaProver: ign, fsm.EvRaVerifier: ign, fsm.EvData: ign, fsm.EvAck: ign,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn, fsm.EvReAttest: okStay,
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			fsm.EvVerifierOK: ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: hsTimeoutCap, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout: ign, fsm.EvDatTimeout: ign, fsm.EvAckTimeout: ign,
		},
		WaitForRa: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			// "recv IdscpDatExpired → send IdscpDat{fresh local DAT}, restart the prover (stay)"
			fsm.EvDatExpired: stay(fsm.OK, sendDat, restartProver()),
			fsm.EvDat:        ign,
			fsm.EvReRa:       ign, // "IdscpReRa and IdscpData are dropped"
			fsm.EvRaProver:   stay(fsm.OK, aToV("p2v")), fsm.EvRaVerifier: stay(fsm.OK, aToP("v2p")),
			fsm.EvData: ign, fsm.EvAck: okStay,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn, fsm.EvReAttest: okStay,
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK:         to(WaitForRaVerifier, aCancel(fsm.TimerProver)),
			fsm.EvProverFailed:     proverFailed,
			fsm.EvProverMsg:        stay(fsm.OK, aSend(mRaProver("pm"))),
			fsm.EvVerifierOK:       to(WaitForRaProver, aCancel(fsm.TimerVerifier), startRa),
			fsm.EvVerifierFailed:   verifierFailed,
			fsm.EvVerifierMsg:      stay(fsm.OK, aSend(mRaVerifier("vm"))),
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: hsTimeoutLower, fsm.EvVerifierTimeout: hsTimeoutLower,
			fsm.EvRaTimeout: ign,
			// "DAT_TIMER_EXPIRED → stop the verifier, send IdscpDatExpired, reset handshakeTimer → WAIT_FOR_DAT_AND_RA"
			fsm.EvDatTimeout: to(WaitForDatAndRa, aStopV(), aCancel(fsm.TimerVerifier), sendDatExpired, startHs),
			fsm.EvAckTimeout: ign,
		},
		WaitForRaVerifier: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			fsm.EvDatExpired: to(WaitForRa, sendDat, startProver()),
			fsm.EvDat:        ign,
			fsm.EvReRa:       to(WaitForRa, startProver()),
			fsm.EvRaProver:   stay(fsm.OK, aToV("p2v")),
			fsm.EvRaVerifier: ign, // deviation (c): no prover running
			fsm.EvData:       ign, fsm.EvAck: okStay,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn, fsm.EvReAttest: okStay,
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			// "RA_VERIFIER_OK → cancel the verifier timer, reset raTimer … → ESTABLISHED"
			fsm.EvVerifierOK:       to(Established, aCancel(fsm.TimerVerifier), startRa),
			fsm.EvVerifierFailed:   verifierFailed,
			fsm.EvVerifierMsg:      stay(fsm.OK, aSend(mRaVerifier("vm"))),
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: hsTimeoutLower,
			fsm.EvRaTimeout:  ign,
			fsm.EvDatTimeout: to(WaitForDatAndRaVerifier, aStopV(), aCancel(fsm.TimerVerifier), sendDatExpired, startHs),
			fsm.EvAckTimeout: ign,
		},
		WaitForRaProver: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			fsm.EvDatExpired: stay(fsm.OK, sendDat, restartProver()),
			fsm.EvDat:        ign,
			fsm.EvReRa:       stay(fsm.OK, restartProver()),
			fsm.EvRaProver:   ign, // deviation (c): no verifier running
			fsm.EvRaVerifier: stay(fsm.OK, aToP("v2p")),
			fsm.EvData:       ign, fsm.EvAck: okStay,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn,
			// "REPEAT_RA → send IdscpReRa{""}, cancel raTimer, restart the verifier → WAIT_FOR_RA"
			fsm.EvReAttest:   to(WaitForRa, sendReRa, aCancel(fsm.TimerRa), startVerifier()),
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK:     to(Established, aCancel(fsm.TimerProver)),
			fsm.EvProverFailed: proverFailed,
			fsm.EvProverMsg:    stay(fsm.OK, aSend(mRaProver("pm"))),
			fsm.EvVerifierOK:   ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: hsTimeoutLower, fsm.EvVerifierTimeout: ign,
			// the RA timer produces REPEAT_RA; it has fired, so nothing to cancel
			fsm.EvRaTimeout: to(WaitForRa, sendReRa, startVerifier()),
			// "DAT_TIMER_EXPIRED → cancel raTimer, send IdscpDatExpired, reset handshakeTimer → WAIT_FOR_DAT_AND_RA"
			fsm.EvDatTimeout: to(WaitForDatAndRa, aCancel(fsm.TimerRa), sendDatExpired, startHs),
			fsm.EvAckTimeout: ign,
		},
		WaitForDatAndRa: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			fsm.EvDatExpired: stay(fsm.OK, sendDat, restartProver()),
			// "cancel handshakeTimer and verify the DAT; … valid → reset datTimer, restart the verifier → WAIT_FOR_RA"
			fsm.EvDat:        to(WaitForRa, aCancel(fsm.TimerHandshake), aStart(fsm.TimerDat, datRenew), startVerifier()),
			fsm.EvReRa:       stay(fsm.OK, restartProver()),
			fsm.EvRaProver:   ign,
			fsm.EvRaVerifier: stay(fsm.OK, aToP("v2p")),
			fsm.EvData:       ign, fsm.EvAck: okStay,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn, fsm.EvReAttest: okStay,
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK:     to(WaitForDatAndRaVerifier, aCancel(fsm.TimerProver)),
			fsm.EvProverFailed: proverFailed,
			fsm.EvProverMsg:    stay(fsm.OK, aSend(mRaProver("pm"))),
			fsm.EvVerifierOK:   ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: hsTimeoutLower, fsm.EvProverTimeout: hsTimeoutLower, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout: ign, fsm.EvDatTimeout: ign, fsm.EvAckTimeout: ign,
		},
		WaitForDatAndRaVerifier: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			fsm.EvDatExpired: to(WaitForDatAndRa, sendDat, startProver()),
			fsm.EvDat:        to(WaitForRaVerifier, aCancel(fsm.TimerHandshake), aStart(fsm.TimerDat, datRenew), startVerifier()),
			fsm.EvReRa:       to(WaitForDatAndRa, startProver()),
			fsm.EvRaProver:   ign, fsm.EvRaVerifier: ign,
			fsm.EvData: ign, fsm.EvAck: okStay,
			fsm.EvStart: ign, fsm.EvClose: userClose, fsm.EvSend: notConn, fsm.EvReAttest: okStay,
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			fsm.EvVerifierOK: ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: hsTimeoutLower, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout: ign, fsm.EvDatTimeout: ign, fsm.EvAckTimeout: ign,
		},
		Established: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			fsm.EvDatExpired: to(WaitForRaProver, sendDat, startProver()),
			fsm.EvDat:        ign,
			fsm.EvReRa:       to(WaitForRaProver, startProver()),
			fsm.EvRaProver:   ign, fsm.EvRaVerifier: ign,
			// §3.5: deliver, send IdscpAck{received bit}, alternate expected
			fsm.EvData:  stay(fsm.OK, aDeliver("data"), aAck(false)),
			fsm.EvAck:   ign, // "IdscpAck is ignored here"
			fsm.EvStart: ign, fsm.EvClose: userClose,
			// "SEND_DATA → send IdscpData{data, alternatingBit=nextSendBit}, … start ackTimer → WAIT_FOR_ACK"
			fsm.EvSend: to(WaitForAck, aData("payload", false, false), startAck),
			// "REPEAT_RA → cancel raTimer, send IdscpReRa{""}, restart the verifier → WAIT_FOR_RA_VERIFIER"
			fsm.EvReAttest:   to(WaitForRaVerifier, aCancel(fsm.TimerRa), sendReRa, startVerifier()),
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			fsm.EvVerifierOK: ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout:  to(WaitForRaVerifier, sendReRa, startVerifier()),
			fsm.EvDatTimeout: to(WaitForDatAndRaVerifier, aCancel(fsm.TimerRa), sendDatExpired, startHs),
			fsm.EvAckTimeout: ign,
		},
		WaitForAck: {
			fsm.EvHello: ign, fsm.EvPeerClose: peerClose,
			// "send DAT, restart the prover, cancel ackTimer → WAIT_FOR_RA_PROVER"
			fsm.EvDatExpired: to(WaitForRaProver, sendDat, startProver(), aCancel(fsm.TimerAck)),
			fsm.EvDat:        ign,
			// "restart the prover, cancel ackTimer → WAIT_FOR_RA_PROVER"
			fsm.EvReRa:     to(WaitForRaProver, startProver(), aCancel(fsm.TimerAck)),
			fsm.EvRaProver: ign, fsm.EvRaVerifier: ign,
			fsm.EvData: stay(fsm.OK, aDeliver("data"), aAck(false)), // full duplex
			// "if it matches → ESTABLISHED"
			fsm.EvAck:   to(Established, aCancel(fsm.TimerAck), aAcked()),
			fsm.EvStart: ign, fsm.EvClose: userClose,
			fsm.EvSend: stay(fsm.WouldBlock),
			// "REPEAT_RA → cancel raTimer and ackTimer, send IdscpReRa{""}, restart the verifier"
			fsm.EvReAttest:   to(WaitForRaVerifier, aCancel(fsm.TimerRa), aCancel(fsm.TimerAck), sendReRa, startVerifier()),
			fsm.EvChannelEOF: eofClose, fsm.EvChannelError: errClose,
			fsm.EvProverOK: ign, fsm.EvProverFailed: ign, fsm.EvProverMsg: ign,
			fsm.EvVerifierOK: ign, fsm.EvVerifierFailed: ign, fsm.EvVerifierMsg: ign,
			fsm.EvHandshakeTimeout: ign, fsm.EvProverTimeout: ign, fsm.EvVerifierTimeout: ign,
			fsm.EvRaTimeout:  to(WaitForRaVerifier, aCancel(fsm.TimerAck), sendReRa, startVerifier()),
			fsm.EvDatTimeout: to(WaitForDatAndRaVerifier, aCancel(fsm.TimerRa), aCancel(fsm.TimerAck), sendDatExpired, startHs),
			// "resend the buffered IdscpData unchanged and restart ackTimer (stay)"
			fsm.EvAckTimeout: stay(fsm.OK, aData("hello", false, true), startAck),
		},
	}
}

// tableEvent is the event used for kind k in the table.
func tableEvent(k fsm.EventKind) fsm.Event {
	ev := fsm.Event{Kind: k}
	switch k {
	case fsm.EvHello:
		ev = evHello([]string{dummy2}, []string{dummy2})
	case fsm.EvPeerClose:
		ev.Close = mClose(pb.IdscpClose_ERROR, "peer gone").GetIdscpClose()
	case fsm.EvDatExpired:
		ev.Token = []byte("fresh-dat")
	case fsm.EvDat:
		ev.Dat = validDat(datRenew)
	case fsm.EvRaProver:
		ev.Payload = []byte("p2v")
	case fsm.EvRaVerifier:
		ev.Payload = []byte("v2p")
	case fsm.EvData:
		ev.Payload, ev.Bit = []byte("data"), false
	case fsm.EvAck:
		ev.Bit = false
	case fsm.EvStart:
		ev = evStart()
	case fsm.EvSend:
		ev.Payload = []byte("payload")
	case fsm.EvProverMsg:
		ev.Payload = []byte("pm")
	case fsm.EvVerifierMsg:
		ev.Payload = []byte("vm")
	}
	return ev
}

func TestTransitionTableCoversEveryPair(t *testing.T) {
	table := transitionTable()
	for _, st := range fsm.AllStates() {
		row, ok := table[st]
		if !ok {
			t.Errorf("no table row for %v", st)
			continue
		}
		for _, k := range fsm.AllEventKinds() {
			if _, ok := row[k]; !ok {
				t.Errorf("no table entry for (%v, %v)", st, k)
			}
		}
		if len(row) != len(fsm.AllEventKinds()) {
			t.Errorf("row %v has %d entries, want %d", st, len(row), len(fsm.AllEventKinds()))
		}
	}
	if len(table) != len(fsm.AllStates()) {
		t.Errorf("table has %d rows, want %d", len(table), len(fsm.AllStates()))
	}
}

// TestReachStateResources checks that the states reachState builds hold
// exactly the timers and drivers the spec says.
func TestReachStateResources(t *testing.T) {
	for _, st := range fsm.AllStates() {
		h := reachState(t, st)
		r := specResources[st]
		if got := h.armedTimers(); !slices.Equal(got, sortedTimers(r.timers)) {
			t.Errorf("%v: armed timers %v, spec %v", st, got, sortedTimers(r.timers))
		}
		if h.proverRunning != r.prover || h.verifierRunning != r.verifier {
			t.Errorf("%v: prover %t verifier %t, spec %t %t", st, h.proverRunning, h.verifierRunning, r.prover, r.verifier)
		}
	}
}

func sortedTimers(ts []fsm.Timer) []fsm.Timer {
	out := slices.Clone(ts)
	slices.Sort(out)
	return out
}

func TestTransitionTable(t *testing.T) {
	table := transitionTable()
	for _, st := range fsm.AllStates() {
		for _, k := range fsm.AllEventKinds() {
			w, ok := table[st][k]
			if !ok {
				continue // reported by TestTransitionTableCoversEveryPair
			}
			t.Run(st.String()+"/"+k.String(), func(t *testing.T) {
				h := reachState(t, st)
				ev := h.live(tableEvent(k))
				acts, res := h.step(ev)
				next := w.next
				if w.stay {
					next = st
				}
				if res != w.res {
					t.Errorf("result %v, want %v", res, w.res)
				}
				if got := h.state(); got != next {
					t.Errorf("next state %v, want %v", got, next)
				}
				if w.close != nil {
					checkClosePath(t, h, st, ev, acts, w.close)
					return
				}
				checkActions(t, "actions", acts, w.acts)
			})
		}
	}
}

// checkClosePath checks a transition into ClosedLocked from st: the
// IdscpClose (or none), one CancelTimer per armed timer (except the one that
// fired), a stop per running driver (except one that reported its own
// failure), ActCloseChannel last; then CloseInfo; then Locked forever.
func checkClosePath(t *testing.T, h *harness, st fsm.State, ev fsm.Event, acts []fsm.Action, cw *closeWant) {
	t.Helper()
	r := specResources[st]
	var wantCancel []fsm.Timer
	fired, isTimer := timerFor(ev.Kind)
	for _, tm := range r.timers {
		if !(isTimer && tm == fired) {
			wantCancel = append(wantCancel, tm)
		}
	}
	wantStopP := r.prover && ev.Kind != fsm.EvProverFailed
	wantStopV := r.verifier && ev.Kind != fsm.EvVerifierFailed

	var gotCancel []fsm.Timer
	var closes []*pb.IdscpClose
	stopP, stopV, closeCh := 0, 0, 0
	for _, a := range acts {
		switch a.Kind {
		case fsm.ActCancelTimer:
			gotCancel = append(gotCancel, a.Timer)
		case fsm.ActStopProver:
			stopP++
		case fsm.ActStopVerifier:
			stopV++
		case fsm.ActCloseChannel:
			closeCh++
		case fsm.ActSend:
			if c := a.Msg.GetIdscpClose(); c != nil {
				closes = append(closes, c)
				continue
			}
			t.Errorf("unexpected send %v on a close path", a)
		default:
			t.Errorf("unexpected action %v on a close path", a)
		}
	}
	if len(acts) == 0 || acts[len(acts)-1].Kind != fsm.ActCloseChannel || closeCh != 1 {
		t.Errorf("close path must end with exactly one CloseChannel: %s", describe(acts))
	}
	slices.Sort(gotCancel)
	if !slices.Equal(gotCancel, sortedTimers(wantCancel)) {
		t.Errorf("cancelled timers %v, want %v (%s)", gotCancel, sortedTimers(wantCancel), describe(acts))
	}
	if stopP != b2i(wantStopP) || stopV != b2i(wantStopV) {
		t.Errorf("StopProver×%d StopVerifier×%d, want %d/%d", stopP, stopV, b2i(wantStopP), b2i(wantStopV))
	}
	if cw.sent {
		if len(closes) != 1 || closes[0].GetCauseCode() != cw.cause || closes[0].GetCauseMsg() != cw.msg {
			t.Errorf("sent %v, want one IdscpClose{%v, %q}", closes, cw.cause, cw.msg)
		}
	} else if len(closes) != 0 {
		t.Errorf("sent %v, want no IdscpClose", closes)
	}
	info := h.m.CloseInfo()
	if info.Sent != cw.sent {
		t.Errorf("CloseInfo.Sent %t, want %t", info.Sent, cw.sent)
	}
	if cw.sent || cw.checkRemote {
		if info.Cause != cw.cause || info.Message != cw.msg {
			t.Errorf("CloseInfo cause %v %q, want %v %q", info.Cause, info.Message, cw.cause, cw.msg)
		}
	}
	if cw.checkRemote && info.Remote != cw.remote {
		t.Errorf("CloseInfo.Remote %t, want %t", info.Remote, cw.remote)
	}
	if info.Reason == "" {
		t.Errorf("CloseInfo.Reason empty")
	}
	assertLockedForever(t, h)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// assertLockedForever steps every event kind, live and stale, twice.
func assertLockedForever(t testing.TB, h *harness) {
	t.Helper()
	info := h.m.CloseInfo()
	for round := 0; round < 2; round++ {
		for _, k := range fsm.AllEventKinds() {
			for _, ev := range []fsm.Event{h.live(tableEvent(k)), {Kind: k, Gen: 12345}} {
				acts, res := h.m.Step(ev, nil)
				if res != fsm.Locked || len(acts) != 0 || h.state() != fsm.ClosedLocked {
					t.Fatalf("after close: %v → %v %v in %v, want Locked, no actions", k, res, acts, h.state())
				}
			}
		}
	}
	if h.m.CloseInfo() != info {
		t.Errorf("CloseInfo changed after close")
	}
}

// ---- deviation (b): stale timer events ---------------------------------

// TestStaleTimerEvents: a timer event whose Gen is not the armed run's, or
// for a timer that is not armed, is Ignored with no actions and changes
// nothing; the live run still fires afterwards.
func TestStaleTimerEvents(t *testing.T) {
	for _, st := range fsm.AllStates() {
		if st == fsm.ClosedLocked {
			continue
		}
		for _, tm := range allTimers {
			t.Run(st.String()+"/"+tm.String(), func(t *testing.T) {
				h := reachState(t, st)
				live := h.timerGen[tm]
				armed := slices.Contains(specResources[st].timers, tm)
				stale := []uint64{live + 1, live + 1000}
				if live > 0 {
					stale = append(stale, live-1)
				}
				if !armed {
					stale = append(stale, live) // latest gen but cancelled / fired / never armed
				}
				for _, g := range stale {
					acts, res := h.step(fsm.Event{Kind: tm.Event(), Gen: g})
					if res != fsm.Ignored || len(acts) != 0 || h.state() != st {
						t.Fatalf("gen %d (live %d, armed %t): %v %s → %v, want Ignored, no actions", g, live, armed, res, describe(acts), h.state())
					}
				}
				if armed {
					// The live run still works, exactly once.
					_, res := h.step(fsm.Event{Kind: tm.Event(), Gen: live})
					if res != fsm.OK {
						t.Fatalf("live %v timer after stale ones: %v", tm, res)
					}
					if h.state() != fsm.ClosedLocked && !h.armed[tm] {
						acts, res := h.step(fsm.Event{Kind: tm.Event(), Gen: live})
						if res != fsm.Ignored || len(acts) != 0 {
							t.Fatalf("second firing of the same run: %v %s", res, describe(acts))
						}
					}
				}
			})
		}
	}
}

// TestTimerRearmedOldGenIgnored: after a timer is cancelled and re-armed,
// the previous run's expiry is stale.
func TestTimerRearmedOldGenIgnored(t *testing.T) {
	cases := []struct {
		timer fsm.Timer
		from  fsm.State
		cycle []fsm.Event // cancels (or consumes) and re-arms the timer
		end   fsm.State
	}{
		{fsm.TimerHandshake, fsm.WaitForHello, []fsm.Event{evHello([]string{dummy2}, []string{dummy2}),
			{Kind: fsm.EvDatTimeout}}, fsm.WaitForDatAndRa},
		{fsm.TimerProver, fsm.WaitForRaProver, []fsm.Event{{Kind: fsm.EvReRa}}, fsm.WaitForRaProver},
		{fsm.TimerVerifier, fsm.WaitForRaProver, []fsm.Event{{Kind: fsm.EvReAttest}}, fsm.WaitForRa},
		{fsm.TimerRa, fsm.Established, []fsm.Event{{Kind: fsm.EvReAttest}, {Kind: fsm.EvVerifierOK}}, fsm.Established},
		{fsm.TimerDat, fsm.Established, []fsm.Event{{Kind: fsm.EvDatTimeout}, {Kind: fsm.EvDat, Dat: validDat(datRenew)},
			{Kind: fsm.EvVerifierOK}}, fsm.Established},
		{fsm.TimerAck, fsm.WaitForAck, []fsm.Event{{Kind: fsm.EvAck, Bit: false}, {Kind: fsm.EvSend, Payload: []byte("2")}}, fsm.WaitForAck},
	}
	for _, c := range cases {
		t.Run(c.timer.String(), func(t *testing.T) {
			h := reachState(t, c.from)
			old := h.timerGen[c.timer]
			for _, ev := range c.cycle {
				if _, res := h.stepLive(ev); res != fsm.OK {
					t.Fatalf("%v: %v", ev.Kind, res)
				}
			}
			if h.state() != c.end || !h.armed[c.timer] || h.timerGen[c.timer] == old {
				t.Fatalf("setup: state %v armed %t gen %d (old %d)", h.state(), h.armed[c.timer], h.timerGen[c.timer], old)
			}
			acts, res := h.step(fsm.Event{Kind: c.timer.Event(), Gen: old})
			if res != fsm.Ignored || len(acts) != 0 || h.state() != c.end {
				t.Fatalf("old gen: %v %s → %v", res, describe(acts), h.state())
			}
		})
	}
}

// ---- deviation (b): stale driver events --------------------------------

func TestStaleDriverEvents(t *testing.T) {
	proverKinds := []fsm.EventKind{fsm.EvProverOK, fsm.EvProverFailed, fsm.EvProverMsg}
	verifierKinds := []fsm.EventKind{fsm.EvVerifierOK, fsm.EvVerifierFailed, fsm.EvVerifierMsg}
	for _, st := range fsm.AllStates() {
		if st == fsm.ClosedLocked {
			continue
		}
		for _, k := range append(slices.Clone(proverKinds), verifierKinds...) {
			t.Run(st.String()+"/"+k.String(), func(t *testing.T) {
				h := reachState(t, st)
				isP := isProverEvent(k)
				live, running := h.verifierGen, specResources[st].verifier
				if isP {
					live, running = h.proverGen, specResources[st].prover
				}
				stale := []uint64{live + 1, live + 77}
				if live > 0 {
					stale = append(stale, live-1)
				}
				if !running {
					stale = append(stale, live)
				}
				for _, g := range stale {
					acts, res := h.step(fsm.Event{Kind: k, Gen: g, Payload: []byte("x")})
					if res != fsm.Ignored || len(acts) != 0 || h.state() != st {
						t.Fatalf("gen %d (live %d, running %t): %v %s → %v", g, live, running, res, describe(acts), h.state())
					}
				}
			})
		}
	}

	// A restarted driver's previous run is stale.
	t.Run("prover restarted", func(t *testing.T) {
		h := reachState(t, fsm.WaitForRaProver)
		old := h.proverGen
		h.mustStep(fsm.Event{Kind: fsm.EvReRa}, fsm.OK)
		for _, k := range proverKinds {
			acts, res := h.step(fsm.Event{Kind: k, Gen: old, Payload: []byte("x")})
			if res != fsm.Ignored || len(acts) != 0 || h.state() != fsm.WaitForRaProver {
				t.Fatalf("%v from the old run: %v %s", k, res, describe(acts))
			}
		}
		h.mustStep(h.live(fsm.Event{Kind: fsm.EvProverOK}), fsm.OK)
		if h.state() != fsm.Established {
			t.Fatalf("state %v", h.state())
		}
	})
	t.Run("verifier restarted", func(t *testing.T) {
		h := reachState(t, fsm.Established)
		old := h.verifierGen
		h.mustStep(fsm.Event{Kind: fsm.EvReAttest}, fsm.OK)
		for _, k := range verifierKinds {
			acts, res := h.step(fsm.Event{Kind: k, Gen: old, Payload: []byte("x")})
			if res != fsm.Ignored || len(acts) != 0 || h.state() != fsm.WaitForRaVerifier {
				t.Fatalf("%v from the old run: %v %s", k, res, describe(acts))
			}
		}
		h.mustStep(h.live(fsm.Event{Kind: fsm.EvVerifierOK}), fsm.OK)
		if h.state() != fsm.Established {
			t.Fatalf("state %v", h.state())
		}
	})
	t.Run("verifier stopped by DAT expiry", func(t *testing.T) {
		h := reachState(t, fsm.WaitForRa)
		old := h.verifierGen
		h.mustStep(h.live(fsm.Event{Kind: fsm.EvDatTimeout}), fsm.OK)
		for _, k := range verifierKinds {
			if acts, res := h.step(fsm.Event{Kind: k, Gen: old}); res != fsm.Ignored || len(acts) != 0 {
				t.Fatalf("%v from the stopped run: %v %s", k, res, describe(acts))
			}
		}
	})
}

// ---- deviation (c): RA messages for a driver that is not running ---------

func TestRaMessageWithoutDriverDropped(t *testing.T) {
	for _, st := range fsm.AllStates() {
		if st.Closed() {
			continue
		}
		r := specResources[st]
		for _, k := range []fsm.EventKind{fsm.EvRaProver, fsm.EvRaVerifier} {
			// IdscpRaProver is for the local verifier, IdscpRaVerifier for the local prover.
			running := r.verifier
			if k == fsm.EvRaVerifier {
				running = r.prover
			}
			h := reachState(t, st)
			acts, res := h.step(fsm.Event{Kind: k, Payload: []byte("ra")})
			if running {
				want := aToV("ra")
				if k == fsm.EvRaVerifier {
					want = aToP("ra")
				}
				if res != fsm.OK {
					t.Errorf("%v/%v: %v", st, k, res)
				}
				checkActions(t, st.String()+"/"+k.String(), acts, []fsm.Action{want})
			} else if res != fsm.Ignored || len(acts) != 0 || h.state() != st {
				t.Errorf("%v/%v without driver: %v %s → %v, want Ignored", st, k, res, describe(acts), h.state())
			}
		}
	}
}
