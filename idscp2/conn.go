package idscp2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation"
	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
	pb "github.com/idscp2-sidecar/idscp2-sidecar/proto/idscp2pb"
)

// ErrClosed is in the chain of every error a closed connection returns.
var ErrClosed = errors.New("idscp2: connection closed")

// ErrMessageTooLarge is returned by Send for a payload whose frame would
// exceed MaxFrameSize; nothing is sent.
var ErrMessageTooLarge = errors.New("idscp2: message exceeds the maximum frame size")

// CloseError says why a connection ended: what this side or the peer sent,
// and what happened locally.
type CloseError struct {
	fsm.CloseInfo
	Err error // the channel error behind the close, if any
}

func (e *CloseError) Error() string {
	s := "idscp2: connection closed: " + e.Reason
	switch {
	case e.Sent && !e.Remote:
		s += fmt.Sprintf(" (sent %s %q)", e.Cause, e.Message)
	case e.Received:
		s += fmt.Sprintf(" (peer sent %s %q)", e.Cause, e.Message)
	case !e.Sent && !e.Remote && e.Cause != pb.IdscpClose_USER_SHUTDOWN:
		s += fmt.Sprintf(" (%s, no IdscpClose sent, as the reference)", e.Cause)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *CloseError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrClosed, e.Err}
	}
	return []error{ErrClosed}
}

// SendError is returned by Send when the message left this side but the
// connection closed before the peer acknowledged it: the peer may or may not
// have received it, so it must not be resent blindly.
type SendError struct {
	Err error
}

func (e *SendError) Error() string {
	return "idscp2: message sent but not acknowledged: " + e.Err.Error()
}
func (e *SendError) Unwrap() error { return e.Err }

// outFrame is one frame waiting to be written.
type outFrame struct {
	b    []byte
	data bool // an IdscpData frame (counted to avoid queueing retransmissions)
}

// driverRun is one running prover or verifier.
type driverRun struct {
	cancel context.CancelFunc
	in     chan []byte
	gen    uint64
}

// driverInbox bounds the messages queued for one driver run; a peer that
// sends more than this before the driver reads is misbehaving.
const driverInbox = 32

// Conn is one IDSCP2 connection over TLS. All methods are safe for
// concurrent use.
type Conn struct {
	cfg       *Config
	tc        *tls.Conn
	reader    frameReader
	localCert *x509.Certificate
	peerCert  *x509.Certificate
	log       *slog.Logger
	client    bool

	mu        sync.Mutex
	m         *fsm.Machine
	acts      []fsm.Action
	peerID    *dat.Identity // last accepted peer DAT
	pendingID *dat.Identity // verified, waiting for its event to be stepped
	changes   []stateChange // pending OnStateChange calls
	stateCh   chan struct{} // closed and replaced on every state change
	closeErr  *CloseError   // set when the machine locks
	chanErr   error         // the channel error that closed us, if any

	timers        [6]*time.Timer
	timerGen      [6]uint64
	timerArmed    [6]bool
	timerDeadline [6]time.Time

	prover, verifier *driverRun

	outq       []outFrame
	outBytes   int
	dataQueued int // IdscpData frames in outq or being written
	flushing   bool
	shutDown   bool   // the flusher has taken the final step: closing the transport
	dataFrame  []byte // the encoded unacknowledged data message, for retransmission
	spentFrame []byte // an acknowledged data frame to recycle once no write uses it

	sendSlot  chan struct{} // held by the one Send whose message is in flight
	ackWaiter chan struct{} // closed by the in-flight message's ACK

	recvq      [][]byte
	recvNotify chan struct{}
	heldAck    *bool // an ACK withheld while recvq is full

	established chan struct{} // closed when first ESTABLISHED
	closed      chan struct{} // closed when the machine locks
	done        chan struct{} // closed when every goroutine of the connection has exited
	doneOnce    sync.Once
	wg          sync.WaitGroup // reader, flusher, drivers
}

type stateChange struct{ from, to fsm.State }

func newConn(tc *tls.Conn, cfg *Config, client bool, localCert *x509.Certificate) *Conn {
	cs := tc.ConnectionState()
	c := &Conn{
		cfg:         cfg,
		tc:          tc,
		reader:      frameReader{conn: tc, limit: cfg.MaxFrameSize, timeout: cfg.FrameTimeout},
		localCert:   localCert,
		peerCert:    cs.PeerCertificates[0],
		client:      client,
		m:           fsm.New(cfg.fsmConfig()),
		stateCh:     make(chan struct{}),
		sendSlot:    make(chan struct{}, 1),
		recvNotify:  make(chan struct{}, 1),
		closed:      make(chan struct{}),
		established: make(chan struct{}),
		done:        make(chan struct{}),
	}
	role := "server"
	if client {
		role = "client"
	}
	c.log = cfg.Logger.With("peer", tc.RemoteAddr().String(), "role", role)
	return c
}

// start sends Hello and starts reading. The local DAT is fetched first,
// outside the lock, because it may take a DAPS round trip.
func (c *Conn) start(ctx context.Context) {
	token := c.localToken(ctx)
	c.mu.Lock()
	c.stepLocked(fsm.Event{Kind: fsm.EvStart, Token: token})
	c.wg.Add(1)
	c.unlockAndFlush(true)
	go c.readLoop()
}

// localToken returns the local DAT, or the reference's INVALID_DAT marker
// when the driver fails (the peer then refuses with NO_VALID_DAT).
func (c *Conn) localToken(ctx context.Context) []byte {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	tok, err := c.cfg.DAT.Token(ctx)
	if err != nil {
		c.log.Error("cannot obtain a DAT; sending INVALID_DAT", "err", err)
		return dat.InvalidToken
	}
	return tok
}

// stepLocked feeds one event to the machine and carries out its actions.
// c.mu must be held.
func (c *Conn) stepLocked(ev fsm.Event) fsm.Result {
	from := c.m.State()
	var res fsm.Result
	c.acts, res = c.m.Step(ev, c.acts[:0])
	for i := range c.acts {
		c.do(&c.acts[i])
		c.acts[i] = fsm.Action{} // drop references to payloads
	}
	if to := c.m.State(); to != from {
		if to == fsm.Established && !c.reader.trusted.Load() {
			c.reader.trusted.Store(true)
			close(c.established)
		}
		if c.cfg.OnStateChange != nil {
			c.changes = append(c.changes, stateChange{from, to})
		}
		close(c.stateCh)
		c.stateCh = make(chan struct{})
	}
	if limit := 2*c.cfg.MaxFrameSize + 1<<20; c.outBytes > limit && !c.m.State().Closed() {
		c.chanErr = fmt.Errorf("idscp2: %d bytes wait to be written: peer is not reading", c.outBytes)
		c.stepLocked(fsm.Event{Kind: fsm.EvChannelError})
	}
	return res
}

// do carries out one action. c.mu is held.
func (c *Conn) do(a *fsm.Action) {
	switch a.Kind {
	case fsm.ActSend:
		b, err := appendFrame(nil, a.Msg)
		if err != nil { // cannot happen for messages the machine builds
			c.log.Error("cannot encode message", "err", err)
			return
		}
		c.cfg.Observer.Message(true, MessageKind(a.Msg), len(b))
		c.enqueue(outFrame{b: b})
	case fsm.ActSendData:
		if a.Retransmit {
			if c.dataQueued > 0 {
				return // the previous copy is still on its way out
			}
			c.cfg.Observer.Message(true, "data_retransmit", len(c.dataFrame))
			c.enqueue(outFrame{b: c.dataFrame, data: true})
			return
		}
		b, err := appendDataFrame(getFrameBuf(dataFrameSize(len(a.Payload))), a.Payload, a.Bit)
		if err != nil {
			c.log.Error("cannot encode data", "err", err)
			return
		}
		c.dataFrame = b
		c.cfg.Observer.Message(true, "data", len(b))
		c.enqueue(outFrame{b: b, data: true})
	case fsm.ActSendAck:
		if len(c.recvq) > c.cfg.RecvQueue {
			bit := a.Bit
			c.heldAck = &bit // sent when Recv makes room: back-pressure on the peer
			return
		}
		c.cfg.Observer.Message(true, "ack", len(ackFrame(a.Bit)))
		c.enqueue(outFrame{b: ackFrame(a.Bit)})
	case fsm.ActStartTimer:
		c.startTimer(a.Timer, a.After, a.Gen)
	case fsm.ActCancelTimer:
		c.timerArmed[a.Timer] = false
		if t := c.timers[a.Timer]; t != nil {
			t.Stop()
		}
	case fsm.ActStartProver:
		c.prover = c.startDriver(true, a.Suite, a.Gen)
	case fsm.ActStartVerifier:
		c.verifier = c.startDriver(false, a.Suite, a.Gen)
	case fsm.ActStopProver:
		c.stopDriver(&c.prover)
	case fsm.ActStopVerifier:
		c.stopDriver(&c.verifier)
	case fsm.ActToProver:
		c.toDriver(c.prover, a.Payload, fsm.EvProverFailed)
	case fsm.ActToVerifier:
		c.toDriver(c.verifier, a.Payload, fsm.EvVerifierFailed)
	case fsm.ActDeliver:
		c.recvq = append(c.recvq, a.Payload)
		select {
		case c.recvNotify <- struct{}{}:
		default:
		}
	case fsm.ActAcked:
		c.spentFrame, c.dataFrame = c.dataFrame, nil
		c.recycleSpent()
		if c.ackWaiter != nil {
			close(c.ackWaiter)
			c.ackWaiter = nil
		}
		select {
		case <-c.sendSlot:
		default:
		}
	case fsm.ActCloseChannel:
		info := c.m.CloseInfo()
		c.closeErr = &CloseError{CloseInfo: info, Err: c.chanErr}
		c.log.Debug("connection closed", "reason", info.Reason, "cause", info.Cause.String(), "err", c.chanErr)
		close(c.closed)
		c.cfg.Observer.Closed(c, c.closeErr)
	}
}

// recycleSpent returns an acknowledged data frame to the pool once no write
// refers to it any more. c.mu is held.
func (c *Conn) recycleSpent() {
	if c.spentFrame != nil && c.dataQueued == 0 {
		putFrameBuf(c.spentFrame)
		c.spentFrame = nil
	}
}

func (c *Conn) enqueue(f outFrame) {
	c.outq = append(c.outq, f)
	c.outBytes += len(f.b)
	if f.data {
		c.dataQueued++
	}
}

// unlockAndFlush releases c.mu, reports state changes and writes what the
// step queued. mayBlock says whether this goroutine may block in a write.
// The reader must not: if both peers' readers blocked writing to each other
// with full buffers, neither would ever read again. It writes only small
// control frames, and only when the kernel send queue is empty so the write
// cannot block; otherwise a flusher goroutine writes.
func (c *Conn) unlockAndFlush(mayBlock bool) {
	changes := c.changes
	c.changes = nil
	start := !c.flushing && (len(c.outq) > 0 || c.m.State() == fsm.ClosedLocked && !c.shutDown)
	small := c.outBytes <= smallWrite // read after Unlock: must be a local
	if start {
		c.flushing = true
		c.wg.Add(1)
	}
	c.mu.Unlock()
	for _, ch := range changes {
		c.cfg.OnStateChange(c, ch.from, ch.to)
	}
	if !start {
		return
	}
	switch {
	case mayBlock:
		c.flush(false)
	case small && sendQueueEmpty(c.tc.NetConn()):
		c.flush(true)
	default:
		go c.flush(false)
	}
}

// smallWrite bounds what a reader writes itself (see unlockAndFlush): far
// below the smallest socket send buffer Linux allows (4608 bytes).
const smallWrite = 1024

// coalesceLimit is the size up to which queued frames are joined into one
// write: fewer TLS records and syscalls for ACK+data bursts.
const coalesceLimit = 32 << 10

// flush writes queued frames until the queue is empty. Only one flush runs
// at a time (c.flushing). Once the machine is locked and the queue drained,
// it closes the transport. With oneBatch (the reader's small inline write),
// anything queued meanwhile is left to a flusher goroutine.
func (c *Conn) flush(oneBatch bool) {
	defer c.wg.Done()
	var batch []outFrame
	var joined []byte
	for n := 0; ; n++ {
		c.mu.Lock()
		if n > 0 && oneBatch && len(c.outq) > 0 {
			c.wg.Add(1)
			c.mu.Unlock()
			go c.flush(false)
			return
		}
		if len(c.outq) == 0 {
			c.flushing = false
			closing := c.m.State() == fsm.ClosedLocked && !c.shutDown
			c.shutDown = c.shutDown || closing
			c.mu.Unlock()
			if closing {
				c.closeTransport()
			}
			return
		}
		batch, c.outq = c.outq, batch[:0]
		c.mu.Unlock()

		err := c.writeBatch(batch, &joined)

		c.mu.Lock()
		for i, f := range batch {
			c.outBytes -= len(f.b)
			if f.data {
				c.dataQueued--
			}
			batch[i] = outFrame{}
		}
		c.recycleSpent()
		if err != nil && !c.m.State().Closed() {
			c.chanErr = err
			c.stepLocked(fsm.Event{Kind: fsm.EvChannelError})
		}
		c.mu.Unlock()
	}
}

func (c *Conn) writeBatch(batch []outFrame, joined *[]byte) error {
	c.tc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	for i := 0; i < len(batch); {
		// Join a run of small frames; write a large one on its own.
		j, size := i, 0
		for j < len(batch) && size+len(batch[j].b) <= coalesceLimit {
			size += len(batch[j].b)
			j++
		}
		var b []byte
		if j-i <= 1 {
			b = batch[i].b
			j = i + 1
		} else {
			b = (*joined)[:0]
			for _, f := range batch[i:j] {
				b = append(b, f.b...)
			}
			*joined = b
		}
		if _, err := c.tc.Write(b); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// closeTransport closes the TLS connection after the final frames went out,
// and marks the connection done once all its goroutines have exited.
func (c *Conn) closeTransport() {
	c.tc.SetWriteDeadline(time.Now().Add(time.Second)) // bound close_notify
	c.tc.Close()
	c.doneOnce.Do(func() {
		go func() {
			c.wg.Wait()
			close(c.done)
		}()
	})
}

// startTimer arms timer t. One time.Timer per kind is reused; a callback
// that was already running when the timer was re-armed sees the new
// deadline and does nothing.
func (c *Conn) startTimer(t fsm.Timer, after time.Duration, gen uint64) {
	c.timerGen[t] = gen
	c.timerArmed[t] = true
	c.timerDeadline[t] = time.Now().Add(after)
	if c.timers[t] == nil {
		c.timers[t] = time.AfterFunc(after, func() { c.onTimer(t) })
		return
	}
	c.timers[t].Reset(after)
}

func (c *Conn) onTimer(t fsm.Timer) {
	c.mu.Lock()
	if !c.timerArmed[t] || time.Now().Before(c.timerDeadline[t]) || c.m.State().Closed() {
		c.mu.Unlock()
		return
	}
	c.timerArmed[t] = false
	c.stepLocked(fsm.Event{Kind: t.Event(), Gen: c.timerGen[t]})
	c.unlockAndFlush(true)
}

func (c *Conn) startDriver(prover bool, suite string, gen uint64) *driverRun {
	ctx, cancel := context.WithCancel(context.Background())
	run := &driverRun{cancel: cancel, in: make(chan []byte, driverInbox), gen: gen}
	msgKind, okKind, failKind := fsm.EvVerifierMsg, fsm.EvVerifierOK, fsm.EvVerifierFailed
	if prover {
		msgKind, okKind, failKind = fsm.EvProverMsg, fsm.EvProverOK, fsm.EvProverFailed
	}
	sess := &attestation.Session{
		Suite:        suite,
		LocalCert:    c.localCert,
		PeerCert:     c.peerCert,
		PeerIdentity: c.peerID,
		In:           run.in,
		Out: func(b []byte) error {
			return c.driverEvent(fsm.Event{Kind: msgKind, Gen: gen, Payload: b})
		},
	}
	var runFn func() error
	if prover {
		p, ok := c.cfg.Attestation.Prover(suite)
		runFn = func() error {
			if !ok {
				return fmt.Errorf("no prover for suite %q", suite)
			}
			return p.Prove(ctx, sess)
		}
	} else {
		v, ok := c.cfg.Attestation.Verifier(suite)
		runFn = func() error {
			if !ok {
				return fmt.Errorf("no verifier for suite %q", suite)
			}
			return v.Verify(ctx, sess)
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		start := time.Now()
		err := runFn()
		if ctx.Err() != nil {
			return // stopped: the machine no longer waits for this run
		}
		c.cfg.Observer.Attestation(prover, suite, time.Since(start), err)
		kind := okKind
		if err != nil {
			kind = failKind
			c.log.Warn("attestation driver failed", "suite", suite, "prover", prover, "err", err)
		}
		c.driverEvent(fsm.Event{Kind: kind, Gen: gen})
	}()
	return run
}

func (c *Conn) stopDriver(run **driverRun) {
	if *run != nil {
		(*run).cancel()
		*run = nil
	}
}

// toDriver hands a peer RA message to a running driver. A full inbox fails
// the run (asynchronously: the machine is mid-step).
func (c *Conn) toDriver(run *driverRun, msg []byte, failKind fsm.EventKind) {
	if run == nil {
		return
	}
	select {
	case run.in <- msg:
	default:
		c.log.Warn("peer flooded an attestation driver", "queued", driverInbox)
		gen := run.gen
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.driverEvent(fsm.Event{Kind: failKind, Gen: gen})
		}()
	}
}

// driverEvent steps a driver's output. Stale runs are filtered by the
// machine's generation check.
func (c *Conn) driverEvent(ev fsm.Event) error {
	c.mu.Lock()
	if c.m.State() == fsm.ClosedLocked {
		c.mu.Unlock()
		return c.closeErr
	}
	c.stepLocked(ev)
	c.unlockAndFlush(true)
	return nil
}

// readLoop reads frames and steps them until the channel ends.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	for {
		frame, err := c.reader.read()
		if err != nil {
			c.mu.Lock()
			if !c.m.State().Closed() {
				if errors.Is(err, io.EOF) {
					c.stepLocked(fsm.Event{Kind: fsm.EvChannelEOF})
				} else {
					c.chanErr = err
					c.stepLocked(fsm.Event{Kind: fsm.EvChannelError})
				}
			}
			c.unlockAndFlush(false)
			return
		}
		ev, ok := c.eventFor(frame)
		if !ok {
			continue
		}
		c.mu.Lock()
		if c.m.State() == fsm.ClosedLocked {
			c.mu.Unlock()
			return
		}
		if ev.Kind == fsm.EvHello || ev.Kind == fsm.EvDat {
			// The DAT was verified outside the lock; a stale result cannot be
			// used because only this goroutine feeds peer messages.
			if id := c.pendingID; id != nil {
				c.peerID = id
				c.pendingID = nil
			}
		}
		c.stepLocked(ev)
		c.unlockAndFlush(false)
	}
}

// eventFor decodes a frame into an event, doing the blocking work (DAT
// verification, local DAT fetch) first. ok is false for frames that are
// dropped, as the reference drops unparseable or empty messages.
func (c *Conn) eventFor(frame []byte) (fsm.Event, bool) {
	obs := c.cfg.Observer
	if payload, bit, ok := decodeData(frame); ok {
		obs.Message(false, "data", len(frame)+prefixLen)
		return fsm.Event{Kind: fsm.EvData, Payload: payload, Bit: bit}, true
	}
	msg, err := decodeMessage(frame)
	if err != nil {
		obs.Dropped("unparseable")
		c.log.Warn("dropping unparseable IDSCP2 message", "len", len(frame), "err", err)
		return fsm.Event{}, false
	}
	obs.Message(false, MessageKind(msg), len(frame)+prefixLen)
	switch v := msg.GetMessage().(type) {
	case *pb.IdscpMessage_IdscpHello:
		ev := fsm.Event{Kind: fsm.EvHello, Hello: v.IdscpHello}
		if c.wantsDat(true) && v.IdscpHello.GetDynamicAttributeToken() != nil {
			ev.Dat = c.verifyDat(v.IdscpHello.GetDynamicAttributeToken().GetToken())
		}
		return ev, true
	case *pb.IdscpMessage_IdscpClose:
		return fsm.Event{Kind: fsm.EvPeerClose, Close: v.IdscpClose}, true
	case *pb.IdscpMessage_IdscpDatExpired:
		return fsm.Event{Kind: fsm.EvDatExpired, Token: c.localToken(context.Background())}, true
	case *pb.IdscpMessage_IdscpDat:
		ev := fsm.Event{Kind: fsm.EvDat}
		if c.wantsDat(false) {
			ev.Dat = c.verifyDat(v.IdscpDat.GetToken())
		}
		return ev, true
	case *pb.IdscpMessage_IdscpReRa:
		return fsm.Event{Kind: fsm.EvReRa}, true
	case *pb.IdscpMessage_IdscpRaProver:
		return fsm.Event{Kind: fsm.EvRaProver, Payload: v.IdscpRaProver.GetData()}, true
	case *pb.IdscpMessage_IdscpRaVerifier:
		return fsm.Event{Kind: fsm.EvRaVerifier, Payload: v.IdscpRaVerifier.GetData()}, true
	case *pb.IdscpMessage_IdscpData:
		return fsm.Event{Kind: fsm.EvData, Payload: v.IdscpData.GetData(), Bit: v.IdscpData.GetAlternatingBit()}, true
	case *pb.IdscpMessage_IdscpAck:
		return fsm.Event{Kind: fsm.EvAck, Bit: v.IdscpAck.GetAlternatingBit()}, true
	}
	obs.Dropped("empty")
	c.log.Debug("dropping IDSCP2 message without content")
	return fsm.Event{}, false
}

// wantsDat reports whether the machine would verify a DAT arriving now. If
// so, the handshake timer is suspended: the reference cancels it when the
// Hello or requested DAT arrives, before verifying, so a slow DAPS cannot
// turn a timely message into a timeout. The machine cancels it for good
// when it steps the message.
func (c *Conn) wantsDat(hello bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.m.WantsDat(hello) {
		return false
	}
	c.timerArmed[fsm.TimerHandshake] = false
	if t := c.timers[fsm.TimerHandshake]; t != nil {
		t.Stop()
	}
	return true
}

// verifyDat checks a peer DAT; the identity is kept aside until the event
// that carries it is stepped.
func (c *Conn) verifyDat(token []byte) fsm.DatCheck {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.HandshakeTimeout)
	defer cancel()
	id, err := c.cfg.DAT.Verify(ctx, token, c.peerCert)
	if err != nil {
		c.cfg.Observer.DatVerified(dat.ReasonOf(err))
		c.log.Warn("peer DAT refused", "reason", string(dat.ReasonOf(err)), "err", err)
		return fsm.DatCheck{Reason: err.Error()}
	}
	renew := id.RenewIn(time.Now(), c.cfg.DAT.RenewalThreshold())
	if renew <= 0 {
		c.cfg.Observer.DatVerified(dat.ReasonExpired)
		return fsm.DatCheck{Reason: "DAT has no remaining validity"}
	}
	c.cfg.Observer.DatVerified("")
	c.mu.Lock()
	c.pendingID = id
	c.mu.Unlock()
	return fsm.DatCheck{Valid: true, RenewIn: renew}
}
