package fsm

import (
	"fmt"
	"slices"
	"time"

	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// Event is one input to the machine. Which fields are read depends on Kind
// (see the EventKind constants).
type Event struct {
	Kind    EventKind
	Payload []byte
	Bit     bool
	Gen     uint64
	Token   []byte
	Hello   *pb.IdscpHello
	Close   *pb.IdscpClose
	Dat     DatCheck
}

// ActionKind says what the caller must do.
type ActionKind uint8

// Actions, carried out by the caller in the order returned.
const (
	ActSend          ActionKind = iota + 1 // write Action.Msg
	ActSendData                            // write IdscpData{Payload, Bit}; Retransmit marks a resend of the buffered message
	ActSendAck                             // write IdscpAck{Bit}
	ActStartTimer                          // (re)arm Timer to fire after After with Gen
	ActCancelTimer                         // disarm Timer
	ActStartProver                         // start a prover run of Suite with Gen (a running one was stopped just before)
	ActStopProver                          // stop the prover run
	ActStartVerifier                       // start a verifier run of Suite with Gen
	ActStopVerifier                        // stop the verifier run
	ActToProver                            // hand Payload to the running prover
	ActToVerifier                          // hand Payload to the running verifier
	ActDeliver                             // hand Payload to the application
	ActAcked                               // the outstanding data message was acknowledged
	ActCloseChannel                        // close the secure channel; the machine is locked (see CloseInfo)
)

var actionNames = [...]string{"", "Send", "SendData", "SendAck", "StartTimer", "CancelTimer", "StartProver",
	"StopProver", "StartVerifier", "StopVerifier", "ToProver", "ToVerifier", "Deliver", "Acked", "CloseChannel"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) && k > 0 {
		return actionNames[k]
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one output of the machine.
type Action struct {
	Kind       ActionKind
	Msg        *pb.IdscpMessage
	Payload    []byte
	Bit        bool
	Retransmit bool
	Timer      Timer
	After      time.Duration
	Gen        uint64
	Suite      string
}

func (a Action) String() string {
	switch a.Kind {
	case ActSend:
		return fmt.Sprintf("Send(%s)", msgName(a.Msg))
	case ActSendData:
		return fmt.Sprintf("SendData(%dB,bit=%t,retransmit=%t)", len(a.Payload), a.Bit, a.Retransmit)
	case ActSendAck:
		return fmt.Sprintf("SendAck(bit=%t)", a.Bit)
	case ActStartTimer:
		return fmt.Sprintf("StartTimer(%s,%s)", a.Timer, a.After)
	case ActCancelTimer:
		return fmt.Sprintf("CancelTimer(%s)", a.Timer)
	case ActStartProver, ActStartVerifier:
		return fmt.Sprintf("%s(%s)", a.Kind, a.Suite)
	case ActToProver, ActToVerifier, ActDeliver:
		return fmt.Sprintf("%s(%dB)", a.Kind, len(a.Payload))
	}
	return a.Kind.String()
}

func msgName(m *pb.IdscpMessage) string {
	switch v := m.GetMessage().(type) {
	case *pb.IdscpMessage_IdscpHello:
		return "IdscpHello"
	case *pb.IdscpMessage_IdscpClose:
		return "IdscpClose(" + v.IdscpClose.GetCauseCode().String() + ")"
	case *pb.IdscpMessage_IdscpDatExpired:
		return "IdscpDatExpired"
	case *pb.IdscpMessage_IdscpDat:
		return "IdscpDat"
	case *pb.IdscpMessage_IdscpReRa:
		return "IdscpReRa"
	case *pb.IdscpMessage_IdscpRaProver:
		return "IdscpRaProver"
	case *pb.IdscpMessage_IdscpRaVerifier:
		return "IdscpRaVerifier"
	}
	return "?"
}

// Config holds the values the machine puts into messages and timers.
type Config struct {
	SupportedSuites  []string      // suites this side can prove with, by priority
	ExpectedSuites   []string      // suites this side accepts from the peer, by priority
	HandshakeTimeout time.Duration // reference default 20 s; also bounds each driver run
	AckTimeout       time.Duration // reference default 200 ms
	RaInterval       time.Duration // reference default 1 h
}

// CloseInfo records why the machine closed.
type CloseInfo struct {
	Cause    pb.IdscpClose_CloseCause // sent (Sent) or received (Remote) cause
	Message  string                   // sent or received cause_msg
	Sent     bool                     // this side sent IdscpClose
	Received bool                     // the peer sent IdscpClose
	Remote   bool                     // the peer ended the connection (IdscpClose or EOF)
	Reason   string                   // what happened, for logs and errors
}

// Machine is one connection's state machine. It is not safe for concurrent
// use: the caller serialises Step calls.
type Machine struct {
	cfg   Config
	state State

	proverSuite, verifierSuite string // negotiated from the Hellos

	timerGen [numTimers]uint64
	armed    [numTimers]bool

	proverGen, verifierGen         uint64
	proverRunning, verifierRunning bool

	// Alternating bit (both start at false) and the one buffered message.
	nextSendBit, expectedBit bool
	ackFlag                  bool
	buffered                 []byte

	closeInfo CloseInfo
}

// New returns a machine in ClosedUnlocked.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg}
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Suites returns the negotiated prover and verifier suites ("" before Hello).
func (m *Machine) Suites() (prover, verifier string) { return m.proverSuite, m.verifierSuite }

// CloseInfo returns why the machine closed; zero before it closes.
func (m *Machine) CloseInfo() CloseInfo { return m.closeInfo }

// AckPending reports whether a sent data message still waits for its ACK.
func (m *Machine) AckPending() bool { return m.ackFlag }

// WantsDat reports whether an IdscpHello (hello) or IdscpDat (!hello) would
// be verified in the current state. Callers use it to skip the cost of
// verifying tokens the machine would ignore.
func (m *Machine) WantsDat(hello bool) bool {
	if hello {
		return m.state == WaitForHello
	}
	return m.state == WaitForDatAndRa || m.state == WaitForDatAndRaVerifier
}

// Step feeds one event to the machine and appends the actions it takes to
// out, which it returns with the result.
func (m *Machine) Step(ev Event, out []Action) ([]Action, Result) {
	s := stepper{m: m, out: out}
	r := s.step(ev)
	return s.out, r
}

type stepper struct {
	m   *Machine
	out []Action
}

func (s *stepper) emit(a Action) { s.out = append(s.out, a) }

func (s *stepper) send(msg *pb.IdscpMessage) { s.emit(Action{Kind: ActSend, Msg: msg}) }

func (s *stepper) startTimer(t Timer, after time.Duration) {
	m := s.m
	m.timerGen[t]++
	m.armed[t] = true
	s.emit(Action{Kind: ActStartTimer, Timer: t, After: after, Gen: m.timerGen[t]})
}

func (s *stepper) cancelTimer(t Timer) {
	if s.m.armed[t] {
		s.m.armed[t] = false
		s.emit(Action{Kind: ActCancelTimer, Timer: t})
	}
}

// timerFired consumes a timer event: true if it belongs to the armed run.
func (m *Machine) timerFired(t Timer, gen uint64) bool {
	if !m.armed[t] || m.timerGen[t] != gen {
		return false
	}
	m.armed[t] = false
	return true
}

func (s *stepper) restartProver() {
	m := s.m
	s.stopProver()
	m.proverGen++
	m.proverRunning = true
	s.emit(Action{Kind: ActStartProver, Suite: m.proverSuite, Gen: m.proverGen})
	s.startTimer(TimerProver, m.cfg.HandshakeTimeout)
}

func (s *stepper) stopProver() {
	if s.m.proverRunning {
		s.m.proverRunning = false
		s.emit(Action{Kind: ActStopProver})
	}
	s.cancelTimer(TimerProver)
}

func (s *stepper) restartVerifier() {
	m := s.m
	s.stopVerifier()
	m.verifierGen++
	m.verifierRunning = true
	s.emit(Action{Kind: ActStartVerifier, Suite: m.verifierSuite, Gen: m.verifierGen})
	s.startTimer(TimerVerifier, m.cfg.HandshakeTimeout)
}

func (s *stepper) stopVerifier() {
	if s.m.verifierRunning {
		s.m.verifierRunning = false
		s.emit(Action{Kind: ActStopVerifier})
	}
	s.cancelTimer(TimerVerifier)
}

// proverFinished and verifierFinished record a run that reported OK.
func (s *stepper) proverFinished() {
	s.m.proverRunning = false
	s.cancelTimer(TimerProver)
}

func (s *stepper) verifierFinished() {
	s.m.verifierRunning = false
	s.cancelTimer(TimerVerifier)
}

// proverFailed and verifierFailed close with the reference's RA causes.
func (s *stepper) proverFailed() Result {
	s.m.proverRunning = false
	return s.closeWith(pb.IdscpClose_RA_PROVER_FAILED, msgProverFailed, "own prover failed")
}

func (s *stepper) verifierFailed() Result {
	s.m.verifierRunning = false
	return s.closeWith(pb.IdscpClose_RA_VERIFIER_FAILED, msgVerifierFailed, "peer attestation refused")
}

// proverEvent reports whether a prover result or message event belongs to
// the current run.
func (m *Machine) proverEvent(gen uint64) bool { return m.proverRunning && gen == m.proverGen }

func (m *Machine) verifierEvent(gen uint64) bool { return m.verifierRunning && gen == m.verifierGen }

func (s *stepper) to(st State) { s.m.state = st }

// shutdown enters ClosedLocked: cancel every timer, stop both drivers and
// close the channel (the reference's shutdownFsm).
func (s *stepper) shutdown(info CloseInfo) Result {
	m := s.m
	for t := Timer(0); t < numTimers; t++ {
		s.cancelTimer(t)
	}
	s.stopProver()
	s.stopVerifier()
	m.closeInfo = info
	m.state = ClosedLocked
	s.emit(Action{Kind: ActCloseChannel})
	return OK
}

// closeWith sends IdscpClose and shuts down.
func (s *stepper) closeWith(cause pb.IdscpClose_CloseCause, msg, reason string) Result {
	s.send(closeMsg(cause, msg))
	return s.shutdown(CloseInfo{Cause: cause, Message: msg, Sent: true, Reason: reason})
}

// sendDatExpired asks the peer for a fresh DAT and waits for it under the
// handshake timer.
func (s *stepper) sendDatExpired() {
	s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDatExpired{IdscpDatExpired: &pb.IdscpDatExpired{}}})
	s.startTimer(TimerHandshake, s.m.cfg.HandshakeTimeout)
}

// answerDatExpired sends a fresh local DAT and re-runs the own prover, as the
// peer's IdscpDatExpired also asks for re-attestation.
func (s *stepper) answerDatExpired(token []byte) {
	s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpDat{IdscpDat: &pb.IdscpDat{Token: token}}})
	s.restartProver()
}

func (s *stepper) sendReRa() {
	s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpReRa{IdscpReRa: &pb.IdscpReRa{}}})
}

// recvData delivers in-sequence data and ACKs it; anything else is dropped
// silently, without an ACK, as the reference does.
func (s *stepper) recvData(ev Event) Result {
	m := s.m
	if ev.Bit != m.expectedBit {
		return OK
	}
	s.emit(Action{Kind: ActDeliver, Payload: ev.Payload})
	s.emit(Action{Kind: ActSendAck, Bit: ev.Bit})
	m.expectedBit = !m.expectedBit
	return OK
}

// recvAck completes the outstanding message if the ACK matches it.
func (s *stepper) recvAck(ev Event) bool {
	m := s.m
	if !m.ackFlag || ev.Bit != m.nextSendBit {
		return false
	}
	s.cancelTimer(TimerAck)
	m.nextSendBit = !m.nextSendBit
	m.ackFlag = false
	m.buffered = nil
	s.emit(Action{Kind: ActAcked})
	return true
}

// raDone is entered when the last running driver of a (re-)attestation
// succeeds: a message still waiting for its ACK is resent after one ACK
// timeout.
func (s *stepper) raDone() {
	if s.m.ackFlag {
		s.startTimer(TimerAck, s.m.cfg.AckTimeout)
		s.to(WaitForAck)
		return
	}
	s.to(Established)
}

func closeMsg(cause pb.IdscpClose_CloseCause, msg string) *pb.IdscpMessage {
	return &pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpClose{IdscpClose: &pb.IdscpClose{CauseCode: cause, CauseMsg: msg}}}
}

// negotiate picks the first suite of prefs that offered contains.
func negotiate(prefs, offered []string) string {
	for _, p := range prefs {
		if slices.Contains(offered, p) {
			return p
		}
	}
	return ""
}

// Close messages exactly as the reference words them.
const (
	msgUserClose        = "User close"
	msgHandshakeTimeout = "Handshake timeout"
	msgNoValidDat       = "No valid DAT"
	msgProverFailed     = "RA_PROVER failed"
	msgVerifierFailed   = "RA_VERIFIER failed"
)

func (s *stepper) step(ev Event) Result {
	m := s.m
	switch m.state {
	case ClosedLocked:
		return Locked
	case ClosedUnlocked:
		return s.stepClosed(ev)
	}

	// Events every open state handles alike.
	switch ev.Kind {
	case EvChannelError:
		return s.shutdown(CloseInfo{Reason: "secure channel error"})
	case EvClose:
		return s.closeWith(pb.IdscpClose_USER_SHUTDOWN, msgUserClose, "closed by this side")
	case EvChannelEOF:
		// The reference runs its user-close path here, but its channel no
		// longer writes once the reader saw EOF: nothing goes on the wire.
		return s.shutdown(CloseInfo{Remote: true, Reason: "peer closed the secure channel without IdscpClose"})
	case EvPeerClose:
		return s.shutdown(CloseInfo{Cause: ev.Close.GetCauseCode(), Message: ev.Close.GetCauseMsg(), Received: true, Remote: true,
			Reason: "peer sent IdscpClose"})
	case EvHandshakeTimeout, EvProverTimeout, EvVerifierTimeout, EvRaTimeout, EvDatTimeout, EvAckTimeout:
		t := timerOf(ev.Kind)
		if !m.timerFired(t, ev.Gen) {
			return Ignored
		}
		return s.timeout(t)
	case EvProverOK, EvProverFailed, EvProverMsg:
		if !m.proverEvent(ev.Gen) {
			return Ignored
		}
	case EvVerifierOK, EvVerifierFailed, EvVerifierMsg:
		if !m.verifierEvent(ev.Gen) {
			return Ignored
		}
	}

	// Events whose handling does not depend on which attestation state the
	// machine is in.
	switch ev.Kind {
	case EvReAttest: // repeatRa knows the states where it has an effect
		return s.repeatRa()
	case EvSend:
		if !m.state.Connected() {
			return NotConnected
		}
	case EvAck:
		if !m.state.Connected() && m.state != WaitForHello {
			s.recvAck(ev) // an ACK may complete a send while (re-)attesting
			return OK
		}
	}

	switch m.state {
	case WaitForHello:
		return s.waitForHello(ev)
	case WaitForRa:
		return s.waitForRa(ev)
	case WaitForRaVerifier:
		return s.waitForRaVerifier(ev)
	case WaitForRaProver:
		return s.waitForRaProver(ev)
	case WaitForDatAndRa:
		return s.waitForDatAndRa(ev)
	case WaitForDatAndRaVerifier:
		return s.waitForDatAndRaVerifier(ev)
	case Established:
		return s.established(ev)
	case WaitForAck:
		return s.waitForAck(ev)
	}
	return Ignored
}

func timerOf(k EventKind) Timer {
	for t, e := range timeoutEvent {
		if e == k {
			return Timer(t)
		}
	}
	panic("fsm: not a timer event: " + k.String())
}

// timeout handles a live timer expiry in an open state.
func (s *stepper) timeout(t Timer) Result {
	m := s.m
	switch t {
	case TimerHandshake, TimerProver, TimerVerifier:
		if m.state.Connected() {
			return Ignored // no TIMEOUT transition in ESTABLISHED / WAIT_FOR_ACK
		}
		if t == TimerProver {
			m.proverRunning = false
			s.emit(Action{Kind: ActStopProver})
		}
		if t == TimerVerifier {
			m.verifierRunning = false
			s.emit(Action{Kind: ActStopVerifier})
		}
		msg := msgHandshakeTimeout
		if m.state == WaitForHello {
			msg = "Handshake Timeout" // sic: the reference capitalises it here only
		}
		return s.closeWith(pb.IdscpClose_TIMEOUT, msg, t.String()+" timeout")
	case TimerRa:
		return s.repeatRa()
	case TimerDat:
		return s.datTimerExpired()
	case TimerAck:
		if m.state != WaitForAck {
			return Ignored
		}
		if !m.ackFlag {
			return s.shutdown(CloseInfo{Reason: "ACK timer fired without a buffered message"})
		}
		s.emit(Action{Kind: ActSendData, Payload: m.buffered, Bit: m.nextSendBit, Retransmit: true})
		s.startTimer(TimerAck, m.cfg.AckTimeout)
		return OK
	}
	return Ignored
}

// repeatRa is REPEAT_RA from the user or the RA timer.
func (s *stepper) repeatRa() Result {
	switch s.m.state {
	case WaitForRaProver:
		s.sendReRa()
		s.cancelTimer(TimerRa)
		s.restartVerifier()
		s.to(WaitForRa)
		return OK
	case Established, WaitForAck:
		s.cancelTimer(TimerRa)
		s.cancelTimer(TimerAck)
		s.sendReRa()
		s.restartVerifier()
		s.to(WaitForRaVerifier)
		return OK
	}
	return OK // already attesting: nothing to repeat
}

// datTimerExpired is DAT_TIMER_EXPIRED: ask the peer for a fresh DAT.
func (s *stepper) datTimerExpired() Result {
	switch s.m.state {
	case WaitForRa:
		s.stopVerifier()
		s.sendDatExpired()
		s.to(WaitForDatAndRa)
	case WaitForRaVerifier:
		s.stopVerifier()
		s.sendDatExpired()
		s.to(WaitForDatAndRaVerifier)
	case WaitForRaProver:
		s.cancelTimer(TimerRa)
		s.sendDatExpired()
		s.to(WaitForDatAndRa)
	case Established, WaitForAck:
		s.cancelTimer(TimerRa)
		s.cancelTimer(TimerAck)
		s.sendDatExpired()
		s.to(WaitForDatAndRaVerifier)
	default:
		return Ignored // the DAT timer is not armed before the first Hello
	}
	return OK
}

// peerDat handles a DatCheck from IdscpHello or IdscpDat: refuse, or arm the
// DAT timer.
func (s *stepper) peerDat(d DatCheck) bool {
	if !d.Valid {
		reason := "DAT refused"
		if d.Reason != "" {
			reason += ": " + d.Reason
		}
		s.closeWith(pb.IdscpClose_NO_VALID_DAT, msgNoValidDat, reason)
		return false
	}
	s.startTimer(TimerDat, d.RenewIn)
	return true
}

func (s *stepper) stepClosed(ev Event) Result {
	m := s.m
	switch ev.Kind {
	case EvStart:
		s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpHello{IdscpHello: &pb.IdscpHello{
			Version:               2,
			DynamicAttributeToken: &pb.IdscpDat{Token: ev.Token},
			SupportedRaSuite:      m.cfg.SupportedSuites,
			ExpectedRaSuite:       m.cfg.ExpectedSuites,
		}}})
		s.startTimer(TimerHandshake, m.cfg.HandshakeTimeout)
		s.to(WaitForHello)
		return OK
	case EvSend, EvReAttest, EvClose:
		return NotStarted
	}
	return Ignored
}

func (s *stepper) waitForHello(ev Event) Result {
	m := s.m
	switch ev.Kind {
	case EvHello:
		s.cancelTimer(TimerHandshake)
		h := ev.Hello
		m.proverSuite = negotiate(h.GetExpectedRaSuite(), m.cfg.SupportedSuites)
		m.verifierSuite = negotiate(m.cfg.ExpectedSuites, h.GetSupportedRaSuite())
		// The reference closes without IdscpClose on a suite mismatch.
		if m.proverSuite == "" {
			return s.shutdown(CloseInfo{Cause: pb.IdscpClose_NO_RA_MECHANISM_MATCH_PROVER, Reason: fmt.Sprintf(
				"no RA suite to prove with: peer expects %q, this side supports %q", h.GetExpectedRaSuite(), m.cfg.SupportedSuites)})
		}
		if m.verifierSuite == "" {
			return s.shutdown(CloseInfo{Cause: pb.IdscpClose_NO_RA_MECHANISM_MATCH_VERIFIER, Reason: fmt.Sprintf(
				"no RA suite to verify with: this side expects %q, peer supports %q", m.cfg.ExpectedSuites, h.GetSupportedRaSuite())})
		}
		if h.GetDynamicAttributeToken() == nil {
			return s.closeWith(pb.IdscpClose_NO_VALID_DAT, msgNoValidDat, "peer Hello carries no DAT")
		}
		if !s.peerDat(ev.Dat) {
			return OK
		}
		s.restartVerifier()
		s.restartProver()
		s.to(WaitForRa)
		return OK
	}
	return Ignored
}

func (s *stepper) waitForRa(ev Event) Result {
	m := s.m
	switch ev.Kind {
	case EvProverOK:
		s.proverFinished()
		s.to(WaitForRaVerifier)
		return OK
	case EvVerifierOK:
		s.verifierFinished()
		s.startTimer(TimerRa, m.cfg.RaInterval)
		s.to(WaitForRaProver)
		return OK
	case EvProverFailed:
		return s.proverFailed()
	case EvVerifierFailed:
		return s.verifierFailed()
	case EvProverMsg:
		return s.sendProverMsg(ev)
	case EvVerifierMsg:
		return s.sendVerifierMsg(ev)
	case EvRaVerifier:
		return s.toProver(ev)
	case EvRaProver:
		return s.toVerifier(ev)
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		return OK
	}
	return Ignored // IdscpReRa and IdscpData are dropped here
}

func (s *stepper) waitForRaVerifier(ev Event) Result {
	m := s.m
	switch ev.Kind {
	case EvVerifierOK:
		s.verifierFinished()
		s.startTimer(TimerRa, m.cfg.RaInterval)
		s.raDone()
		return OK
	case EvVerifierFailed:
		return s.verifierFailed()
	case EvVerifierMsg:
		return s.sendVerifierMsg(ev)
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		s.to(WaitForRa)
		return OK
	case EvRaProver:
		return s.toVerifier(ev)
	case EvReRa:
		s.restartProver()
		s.to(WaitForRa)
		return OK
	}
	return Ignored
}

func (s *stepper) waitForRaProver(ev Event) Result {
	switch ev.Kind {
	case EvProverOK:
		s.proverFinished()
		s.raDone()
		return OK
	case EvProverFailed:
		return s.proverFailed()
	case EvProverMsg:
		return s.sendProverMsg(ev)
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		return OK
	case EvRaVerifier:
		return s.toProver(ev)
	case EvReRa:
		s.restartProver()
		return OK
	}
	return Ignored
}

func (s *stepper) waitForDatAndRa(ev Event) Result {
	switch ev.Kind {
	case EvProverOK:
		s.proverFinished()
		s.to(WaitForDatAndRaVerifier)
		return OK
	case EvProverFailed:
		return s.proverFailed()
	case EvProverMsg:
		return s.sendProverMsg(ev)
	case EvDat:
		s.cancelTimer(TimerHandshake)
		if !s.peerDat(ev.Dat) {
			return OK
		}
		s.restartVerifier()
		s.to(WaitForRa)
		return OK
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		return OK
	case EvRaVerifier:
		return s.toProver(ev)
	case EvReRa:
		s.restartProver()
		return OK
	}
	return Ignored
}

func (s *stepper) waitForDatAndRaVerifier(ev Event) Result {
	switch ev.Kind {
	case EvDat:
		s.cancelTimer(TimerHandshake)
		if !s.peerDat(ev.Dat) {
			return OK
		}
		s.restartVerifier()
		s.to(WaitForRaVerifier)
		return OK
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		s.to(WaitForDatAndRa)
		return OK
	case EvReRa:
		s.restartProver()
		s.to(WaitForDatAndRa)
		return OK
	}
	return Ignored
}

func (s *stepper) established(ev Event) Result {
	m := s.m
	switch ev.Kind {
	case EvSend:
		m.ackFlag = true
		m.buffered = ev.Payload
		s.emit(Action{Kind: ActSendData, Payload: ev.Payload, Bit: m.nextSendBit})
		s.startTimer(TimerAck, m.cfg.AckTimeout)
		s.to(WaitForAck)
		return OK
	case EvReRa:
		s.restartProver()
		s.to(WaitForRaProver)
		return OK
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		s.to(WaitForRaProver)
		return OK
	case EvData:
		return s.recvData(ev)
	}
	return Ignored // IdscpAck among others
}

func (s *stepper) waitForAck(ev Event) Result {
	switch ev.Kind {
	case EvSend:
		return WouldBlock
	case EvReRa:
		s.restartProver()
		s.cancelTimer(TimerAck)
		s.to(WaitForRaProver)
		return OK
	case EvDatExpired:
		s.answerDatExpired(ev.Token)
		s.cancelTimer(TimerAck)
		s.to(WaitForRaProver)
		return OK
	case EvData:
		return s.recvData(ev)
	case EvAck:
		if s.recvAck(ev) {
			s.to(Established)
		}
		return OK
	}
	return Ignored
}

func (s *stepper) sendProverMsg(ev Event) Result {
	s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaProver{IdscpRaProver: &pb.IdscpRaProver{Data: ev.Payload}}})
	return OK
}

func (s *stepper) sendVerifierMsg(ev Event) Result {
	s.send(&pb.IdscpMessage{Message: &pb.IdscpMessage_IdscpRaVerifier{IdscpRaVerifier: &pb.IdscpRaVerifier{Data: ev.Payload}}})
	return OK
}

// toProver hands the peer verifier's message to the running prover. With no
// prover running the message has no reader and is dropped; the reference
// queues it for a driver that never reads it, which comes to the same.
func (s *stepper) toProver(ev Event) Result {
	if !s.m.proverRunning {
		return Ignored
	}
	s.emit(Action{Kind: ActToProver, Payload: ev.Payload})
	return OK
}

func (s *stepper) toVerifier(ev Event) Result {
	if !s.m.verifierRunning {
		return Ignored
	}
	s.emit(Action{Kind: ActToVerifier, Payload: ev.Payload})
	return OK
}
