package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
)

// runConnect is `idscp2 connect`: one connection, stdin lines out as data
// messages, received messages to stdout.
func runConnect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, f := newConnectFlags(stderr)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	cfg, _, err := f.config(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "idscp2 connect: %v\n", err)
		return exitUsage
	}
	if f.linger < 0 {
		fmt.Fprintf(stderr, "idscp2 connect: --linger must not be negative\n")
		return exitUsage
	}
	cfg.SkipHostnameVerification = f.skipHostnameVerification

	c, err := idscp2.Dial(ctx, "tcp", f.addr, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "idscp2 connect: %s\n", describe(err))
		return exitFailure
	}
	fmt.Fprint(stderr, handshakeReport("", c))

	// Receive in the background until the connection closes. Recv hands out
	// what was queued before the close, so nothing received is lost.
	received := make(chan struct{}, 1) // a message arrived (for --linger)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			msg, err := c.Recv(context.Background())
			if err != nil {
				return
			}
			if err := writeMessage(stdout, msg); err != nil {
				fmt.Fprintf(stderr, "idscp2 connect: stdout: %v\n", err)
			}
			select {
			case received <- struct{}{}:
			default:
			}
		}
	}()

	// finish closes the connection (a no-op if it is closed already), waits
	// for the receiver to drain, and turns the outcome into an exit code.
	// ok says whether this side had finished its work successfully.
	finish := func(ok bool) int {
		c.Close()
		<-recvDone
		cerr := c.Err()
		switch {
		case closedByUs(cerr):
			if ok {
				return exitOK
			}
			return exitFailure
		case ok && peerClosedNormally(cerr):
			// Everything was acknowledged before the peer hung up.
			fmt.Fprintf(stderr, "idscp2 connect: peer closed: %s\n", describe(cerr))
			return exitOK
		default:
			fmt.Fprintf(stderr, "idscp2 connect: %s\n", describe(cerr))
			return exitFailure
		}
	}

	// stdin is read in its own goroutine so that a peer close or a signal
	// is noticed while a read blocks. For a terminal that goroutine stays
	// blocked until the process exits.
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	stopRead := make(chan struct{})
	defer close(stopRead)
	go readLines(stdin, lines, readErr, stopRead)

	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := <-readErr; err != nil {
					fmt.Fprintf(stderr, "idscp2 connect: stdin: %v\n", err)
					return finish(false)
				}
				return finish(lingerFor(ctx, f.linger, received, recvDone))
			}
			if err := c.Send(ctx, line); err != nil {
				switch {
				case ctx.Err() != nil:
					fmt.Fprintf(stderr, "idscp2 connect: interrupted before the last line was acknowledged\n")
					return finish(false)
				case errors.Is(err, idscp2.ErrMessageTooLarge):
					fmt.Fprintf(stderr, "idscp2 connect: line of %d bytes: %v (--max-frame %d)\n", len(line), err, f.maxFrame)
					return finish(false)
				default: // the connection closed; finish reports why
					var se *idscp2.SendError
					if errors.As(err, &se) {
						fmt.Fprintf(stderr, "idscp2 connect: last line sent but not acknowledged\n")
					}
					return finish(false)
				}
			}
		case <-recvDone:
			return finish(false) // the peer closed (or the channel failed) first
		case <-ctx.Done():
			return finish(true) // SIGINT/SIGTERM: close with USER_SHUTDOWN
		}
	}
}

// lingerFor keeps the connection open after stdin EOF until the peer has
// sent nothing for d (so that echoes of the last lines arrive), the
// connection closes, or ctx ends. It returns true: all sends were
// acknowledged before it was called.
func lingerFor(ctx context.Context, d time.Duration, received, recvDone <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-received:
			t.Reset(d)
		case <-t.C:
			return true
		case <-recvDone:
			return true
		case <-ctx.Done():
			return true
		}
	}
}

// readLines sends each line of r, without its "\n", to lines, and closes
// lines at EOF or on a read error (then in errc; nil at EOF). A last line
// without a newline is sent too.
func readLines(r io.Reader, lines chan<- []byte, errc chan<- error, stop <-chan struct{}) {
	defer close(lines)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			select {
			case lines <- line:
			case <-stop:
				errc <- nil
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			errc <- err
			return
		}
	}
}
