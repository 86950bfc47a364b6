package idscp2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Send sends one data message and returns when the peer has acknowledged it.
// Messages are sent one at a time (IDSCP2 is stop-and-wait): concurrent
// calls queue. While the connection re-attests or renews the DAT, Send waits
// for it to be established again instead of failing as the reference does.
//
// If ctx ends after the message left, Send returns ctx.Err() but the
// connection keeps retransmitting it until it is acknowledged; the next
// Send waits for that. If the connection closes after the message left and
// before its ACK, the error is a *SendError: the peer may have it.
// payload may be reused once Send returns.
func (c *Conn) Send(ctx context.Context, payload []byte) error {
	if dataFrameSize(len(payload))-prefixLen > c.cfg.MaxFrameSize {
		return ErrMessageTooLarge
	}
	select {
	case c.sendSlot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return c.closeErr
	}
	// The slot is released by the ACK (or, below, if nothing was sent).
	for {
		c.mu.Lock()
		st := c.m.State()
		if st == fsm.ClosedLocked {
			c.mu.Unlock()
			<-c.sendSlot
			return c.closeErr
		}
		if st == fsm.Established {
			// Each message gets its own signal, closed by its ACK: a Send
			// that gave up cannot take another's.
			acked := make(chan struct{})
			c.ackWaiter = acked
			c.stepLocked(fsm.Event{Kind: fsm.EvSend, Payload: payload})
			c.unlockAndFlush(true)
			select {
			case <-acked:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-c.closed:
				select { // the ACK may have come with the peer's close
				case <-acked:
					return nil
				default:
					return &SendError{Err: c.closeErr}
				}
			}
		}
		changed := c.stateCh
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			<-c.sendSlot
			return ctx.Err()
		}
	}
}

// Recv returns the next message from the peer. Messages wait in a queue of
// Config.RecvQueue; when it is full, this side withholds its ACK and the
// peer stops sending until Recv makes room. The returned slice is the
// caller's.
func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	for {
		c.mu.Lock()
		if len(c.recvq) > 0 {
			p := c.recvq[0]
			c.recvq[0] = nil
			c.recvq = c.recvq[1:]
			if len(c.recvq) == 0 {
				c.recvq = c.recvq[:0:0]
			}
			if c.heldAck != nil && len(c.recvq) <= c.cfg.RecvQueue && !c.m.State().Closed() {
				c.enqueue(outFrame{b: ackFrame(*c.heldAck)})
				c.heldAck = nil
			}
			c.unlockAndFlush(true)
			return p, nil
		}
		if c.m.State() == fsm.ClosedLocked {
			c.mu.Unlock()
			return nil, c.closeErr
		}
		c.mu.Unlock()
		select {
		case <-c.recvNotify:
		case <-c.closed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ready waits until the connection is established (again). It returns the
// close error if the connection closes first.
func (c *Conn) Ready(ctx context.Context) error {
	for {
		c.mu.Lock()
		st, changed := c.m.State(), c.stateCh
		c.mu.Unlock()
		if st.Connected() {
			return nil
		}
		if st == fsm.ClosedLocked {
			return c.closeErr
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitEstablished waits for the first ESTABLISHED. Unlike Ready it succeeds
// even if the connection has closed since: a peer may close right after the
// handshake, and that is the caller's first Recv's news, not a failed dial.
func (c *Conn) waitEstablished(ctx context.Context) error {
	select {
	case <-c.established:
		return nil
	default:
	}
	select {
	case <-c.established:
		return nil
	case <-c.closed:
		select {
		case <-c.established:
			return nil
		default:
			return c.closeErr
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReAttest asks for a new attestation of the peer (the reference's
// repeatRa). Sends wait until it completes.
func (c *Conn) ReAttest() error {
	c.mu.Lock()
	if c.m.State() == fsm.ClosedLocked {
		c.mu.Unlock()
		return c.closeErr
	}
	c.stepLocked(fsm.Event{Kind: fsm.EvReAttest})
	c.unlockAndFlush(true)
	return nil
}

// Close sends IdscpClose{USER_SHUTDOWN}, closes the channel and waits until
// every goroutine of the connection has exited. Closing twice is harmless.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.m.State() != fsm.ClosedLocked {
		c.stepLocked(fsm.Event{Kind: fsm.EvClose})
	}
	c.unlockAndFlush(true)
	<-c.done
	return nil
}

// Done is closed when the connection has closed and all its goroutines
// have exited.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr == nil {
		return nil
	}
	return c.closeErr
}

// State returns the protocol state.
func (c *Conn) State() fsm.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.State()
}

// Suites returns the negotiated suites: the one this side proves with and
// the one it verifies the peer with.
func (c *Conn) Suites() (prover, verifier string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Suites()
}

// PeerIdentity returns the peer's last accepted DAT, nil before the first.
func (c *Conn) PeerIdentity() *dat.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerID
}

// PeerCertificate returns the peer's TLS leaf certificate.
func (c *Conn) PeerCertificate() *x509.Certificate { return c.peerCert }

// LocalCertificate returns the TLS leaf certificate this side presented.
func (c *Conn) LocalCertificate() *x509.Certificate { return c.localCert }

// IsClient reports whether this side dialled the connection.
func (c *Conn) IsClient() bool { return c.client }

// ConnectionState returns the TLS state (version, cipher suite, peer chain).
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// RemoteAddr and LocalAddr return the transport addresses.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }
func (c *Conn) LocalAddr() net.Addr  { return c.tc.LocalAddr() }
