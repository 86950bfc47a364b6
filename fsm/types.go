// Package fsm is the IDSCP2 state machine as idscp2-jvm 0.19.x runs it, in a
// pure form: events in, actions out. It does no I/O, starts no goroutines and
// reads no clock, so every transition is deterministic and table-tested.
//
// The caller (package idscp2) owns the secure channel, the timers and the
// attestation drivers. It feeds the machine one Event at a time, under its own
// lock, and carries out the returned Actions in order. Work that may block is
// done by the caller before the event is built: the local DAT is fetched into
// Event.Token and the peer DAT is verified into Event.Dat.
//
// Timers and driver runs carry a generation number. The machine accepts a
// timer or driver event only if it belongs to the run it currently has armed
// or started, so a timer that fires after it was cancelled, or a driver that
// reports after it was restarted, is ignored, as the reference ignores output
// from stale driver threads.
package fsm

import (
	"fmt"
	"time"
)

// State is one of the ten protocol states. The reference folds the two
// CLOSED states into one with a lock flag; the specification names both.
type State uint8

// States, named as in the IDSCP2 specification.
const (
	ClosedUnlocked          State = iota // initial: not started
	ClosedLocked                         // final: nothing happens any more
	WaitForHello                         // Hello sent, waiting for the peer's
	WaitForRa                            // both drivers running
	WaitForRaVerifier                    // own prover done, verifying the peer
	WaitForRaProver                      // peer verified, own prover running
	WaitForDatAndRa                      // asked for a fresh peer DAT, own prover running
	WaitForDatAndRaVerifier              // asked for a fresh peer DAT, no driver running
	Established                          // data flows
	WaitForAck                           // one data message is waiting for its ACK
	numStates
)

var stateNames = [numStates]string{
	"STATE_CLOSED_UNLOCKED", "STATE_CLOSED_LOCKED", "STATE_WAIT_FOR_HELLO", "STATE_WAIT_FOR_RA",
	"STATE_WAIT_FOR_RA_VERIFIER", "STATE_WAIT_FOR_RA_PROVER", "STATE_WAIT_FOR_DAT_AND_RA",
	"STATE_WAIT_FOR_DAT_AND_RA_VERIFIER", "STATE_ESTABLISHED", "STATE_WAIT_FOR_ACK",
}

func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Connected reports whether data may be sent in s (ESTABLISHED or
// WAIT_FOR_ACK), as the reference's isConnected.
func (s State) Connected() bool { return s == Established || s == WaitForAck }

// Closed reports whether s is one of the CLOSED states.
func (s State) Closed() bool { return s == ClosedUnlocked || s == ClosedLocked }

// EventKind says what happened.
type EventKind uint8

// Events. Peer messages are numbered after their IdscpMessage oneof field
// (EvHello = 1 … EvAck = 9), as the reference keys them.
const (
	EvHello      EventKind = iota + 1 // peer IdscpHello; Event.Hello, Event.Dat
	EvPeerClose                       // peer IdscpClose; Event.Close
	EvDatExpired                      // peer IdscpDatExpired; Event.Token = fresh local DAT
	EvDat                             // peer IdscpDat; Event.Dat
	EvReRa                            // peer IdscpReRa
	EvRaProver                        // peer IdscpRaProver; Event.Payload for the local verifier
	EvRaVerifier                      // peer IdscpRaVerifier; Event.Payload for the local prover
	EvData                            // peer IdscpData; Event.Payload, Event.Bit
	EvAck                             // peer IdscpAck; Event.Bit

	EvStart        // user: START_IDSCP_HANDSHAKE; Event.Token = local DAT
	EvClose        // user: close (IDSCP_STOP)
	EvSend         // user: SEND_DATA; Event.Payload
	EvReAttest     // user: repeatRa (REPEAT_RA)
	EvChannelEOF   // secure channel ended cleanly (IDSCP_STOP)
	EvChannelError // secure channel failed (ERROR)

	EvProverOK       // RA_PROVER_OK; Event.Gen
	EvProverFailed   // RA_PROVER_FAILED; Event.Gen
	EvProverMsg      // RA_PROVER_MSG; Event.Gen, Event.Payload for the peer verifier
	EvVerifierOK     // RA_VERIFIER_OK; Event.Gen
	EvVerifierFailed // RA_VERIFIER_FAILED; Event.Gen
	EvVerifierMsg    // RA_VERIFIER_MSG; Event.Gen, Event.Payload for the peer prover

	EvHandshakeTimeout // handshake timer (TIMEOUT); Event.Gen
	EvProverTimeout    // prover handshake timer (TIMEOUT); Event.Gen
	EvVerifierTimeout  // verifier handshake timer (TIMEOUT); Event.Gen
	EvRaTimeout        // re-attestation timer (REPEAT_RA); Event.Gen
	EvDatTimeout       // DAT timer (DAT_TIMER_EXPIRED); Event.Gen
	EvAckTimeout       // ACK timer (ACK_TIMER_EXPIRED); Event.Gen
	numEventKinds
)

var eventNames = [numEventKinds]string{
	"", "IdscpHello", "IdscpClose", "IdscpDatExpired", "IdscpDat", "IdscpReRa", "IdscpRaProver",
	"IdscpRaVerifier", "IdscpData", "IdscpAck",
	"Start", "Close", "Send", "ReAttest", "ChannelEOF", "ChannelError",
	"ProverOK", "ProverFailed", "ProverMsg", "VerifierOK", "VerifierFailed", "VerifierMsg",
	"HandshakeTimeout", "ProverTimeout", "VerifierTimeout", "RaTimeout", "DatTimeout", "AckTimeout",
}

func (k EventKind) String() string {
	if k > 0 && k < numEventKinds {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// AllEventKinds lists every event kind, for table tests and fuzzing.
func AllEventKinds() []EventKind {
	ks := make([]EventKind, 0, numEventKinds-1)
	for k := EvHello; k < numEventKinds; k++ {
		ks = append(ks, k)
	}
	return ks
}

// AllStates lists every state.
func AllStates() []State {
	ss := make([]State, 0, numStates)
	for s := ClosedUnlocked; s < numStates; s++ {
		ss = append(ss, s)
	}
	return ss
}

// Timer names the machine's timers.
type Timer uint8

// Timers.
const (
	TimerHandshake Timer = iota // waiting for Hello or a requested DAT
	TimerProver                 // own prover run
	TimerVerifier               // own verifier run
	TimerRa                     // periodic re-attestation of the peer
	TimerDat                    // the peer DAT's renewal point
	TimerAck                    // retransmission of unacknowledged data
	numTimers
)

var timerNames = [numTimers]string{"handshake", "prover", "verifier", "ra", "dat", "ack"}

func (t Timer) String() string {
	if t < numTimers {
		return timerNames[t]
	}
	return fmt.Sprintf("Timer(%d)", uint8(t))
}

// timeoutEvent maps a timer to the event its expiry produces.
var timeoutEvent = [numTimers]EventKind{
	EvHandshakeTimeout, EvProverTimeout, EvVerifierTimeout, EvRaTimeout, EvDatTimeout, EvAckTimeout,
}

// Event returns the event kind the timer produces when it fires.
func (t Timer) Event() EventKind { return timeoutEvent[t] }

// DatCheck is the caller's verification of a peer DAT (IdscpHello or
// IdscpDat), done before the event is stepped because it may block.
type DatCheck struct {
	Valid   bool          // verified, bound to the peer certificate, not expired
	RenewIn time.Duration // when to ask for a fresh one (remaining validity × renewal threshold)
	Reason  string        // why it was refused, for the close record
}

// Result tells the caller how the machine took an event, mirroring the
// reference's FsmResultCode where it matters to callers.
type Result uint8

// Results.
const (
	OK           Result = iota // handled
	Ignored                    // no transition for this event in this state (UNKNOWN_TRANSITION)
	NotConnected               // SEND_DATA outside ESTABLISHED
	WouldBlock                 // SEND_DATA while an ACK is outstanding
	NotStarted                 // the machine has not been started
	Locked                     // the machine is closed for good
)

var resultNames = [...]string{"OK", "UNKNOWN_TRANSITION", "NOT_CONNECTED", "WOULD_BLOCK", "FSM_NOT_STARTED", "FSM_LOCKED"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}
