package idscp2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Dial connects to an IDSCP2 server at addr ("host:port"), runs the TLS and
// IDSCP2 handshakes and returns once the connection is ESTABLISHED. The
// server certificate's SANs must match host unless
// Config.SkipHostnameVerification is set.
func Dial(ctx context.Context, network, addr string, cfg *Config) (*Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("idscp2: dial %s: %w", addr, err)
	}
	return DialServerName(ctx, network, addr, host, cfg)
}

// DialServerName is Dial with the server certificate checked against host
// instead of the host part of addr (a load balancer's address, say).
func DialServerName(ctx context.Context, network, addr, host string, cfg *Config) (*Conn, error) {
	rc, err := cfg.resolved()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c, err := dial(ctx, network, addr, host, rc)
	rc.Observer.Handshake(true, time.Since(start), err)
	return c, err
}

func dial(ctx context.Context, network, addr, host string, rc *Config) (*Conn, error) {
	hs := &handshakeState{}
	d := tls.Dialer{Config: rc.clientTLS(host, hs)}
	// The handshake timeout bounds TCP and TLS here; from Hello on, the
	// machine's own timers bound each phase, as in the reference, so a
	// timeout is reported to the peer with IdscpClose{TIMEOUT}.
	tctx, cancel := context.WithTimeout(ctx, rc.HandshakeTimeout)
	defer cancel()
	nc, err := d.DialContext(tctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("idscp2: dial %s: %w", addr, err)
	}
	c := newConn(nc.(*tls.Conn), rc, true, hs.localCert)
	rc.Observer.Opened(c)
	c.start(ctx)
	if err := c.waitEstablished(ctx); err != nil {
		c.Close()
		if ce := c.Err(); ce != nil {
			err = ce
		}
		return nil, fmt.Errorf("idscp2: dial %s: %w", addr, err)
	}
	return c, nil
}

// Listener accepts IDSCP2 connections. Handshakes run concurrently, bounded
// by Config.MaxHandshakes; Accept returns only ESTABLISHED connections.
type Listener struct {
	ln     net.Listener
	cfg    *Config
	ready  chan *Conn
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{}
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

// Listen listens on addr and serves IDSCP2 on it.
func Listen(network, addr string, cfg *Config) (*Listener, error) {
	rc, err := cfg.resolved()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return newListener(ln, rc), nil
}

// NewListener serves IDSCP2 on an existing listener (for socket activation
// and tests). The Listener owns ln.
func NewListener(ln net.Listener, cfg *Config) (*Listener, error) {
	rc, err := cfg.resolved()
	if err != nil {
		return nil, err
	}
	return newListener(ln, rc), nil
}

func newListener(ln net.Listener, cfg *Config) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		ln:     ln,
		cfg:    cfg,
		ready:  make(chan *Conn),
		ctx:    ctx,
		cancel: cancel,
		slots:  make(chan struct{}, cfg.MaxHandshakes),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next ESTABLISHED connection.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		l.errMu.Lock()
		defer l.errMu.Unlock()
		return nil, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting and aborts unfinished handshakes. Connections
// already returned by Accept are not affected.
func (l *Listener) Close() error {
	l.stop(net.ErrClosed)
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

func (l *Listener) stop(err error) {
	l.errMu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("idscp2: listener closed: %w", err)
	}
	l.errMu.Unlock()
	l.cancel()
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		nc, err := l.ln.Accept()
		if err != nil {
			<-l.slots
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.stop(err)
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			start := time.Now()
			c, err := l.handshake(nc)
			l.cfg.Observer.Handshake(false, time.Since(start), err)
			<-l.slots
			if err != nil {
				l.cfg.Logger.Info("IDSCP2 handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
				if l.cfg.OnHandshakeError != nil {
					l.cfg.OnHandshakeError(nc.RemoteAddr(), err)
				}
				return
			}
			select {
			case l.ready <- c:
			case <-l.ctx.Done():
				c.Close()
			}
		}()
	}
}

func (l *Listener) handshake(nc net.Conn) (*Conn, error) {
	tctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	hs := &handshakeState{}
	tc := tls.Server(nc, l.cfg.serverTLS(nc.RemoteAddr(), hs))
	if err := tc.HandshakeContext(tctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: %w", errTLS, err)
	}
	c := newConn(tc, l.cfg, false, hs.localCert)
	l.cfg.Observer.Opened(c)
	c.start(l.ctx)
	if err := c.waitEstablished(l.ctx); err != nil {
		c.Close()
		if ce := c.Err(); ce != nil {
			return nil, ce
		}
		return nil, err
	}
	return c, nil
}
