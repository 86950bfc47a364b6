package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
)

// runListen is `idscp2 listen`: accept connections, print their handshakes
// and messages, optionally echo, optionally stop after the first one.
func runListen(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, f := newListenFlags(stderr)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	out := &syncWriter{w: stdout}
	errw := &syncWriter{w: stderr}
	cfg, logger, err := f.config(errw)
	if err != nil {
		fmt.Fprintf(errw, "idscp2 listen: %v\n", err)
		return exitUsage
	}
	cfg.VerifyClientAddress = f.verifyClientAddress

	// Failed handshakes never reach Accept; report them here. With --once
	// the first one ends the run if no connection was accepted before.
	hsFailed := make(chan struct{}, 1)
	cfg.OnHandshakeError = func(remote net.Addr, err error) {
		fmt.Fprintf(errw, "[%s] handshake failed: %s\n", remote, describe(err))
		select {
		case hsFailed <- struct{}{}:
		default:
		}
	}

	ln, err := idscp2.Listen("tcp", f.addr, cfg)
	if err != nil {
		fmt.Fprintf(errw, "idscp2 listen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(errw, "listening on %s\n", ln.Addr())
	if f.addrFile != "" {
		if err := writeFileAtomic(f.addrFile, ln.Addr().String()+"\n"); err != nil {
			ln.Close()
			fmt.Fprintf(errw, "idscp2 listen: --addr-file: %v\n", err)
			return exitFailure
		}
	}

	stopped := make(chan struct{}) // closed when the run is over
	acc := make(chan *idscp2.Conn)
	accErr := make(chan error, 1)
	var wg sync.WaitGroup // the accept loop and every connection
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(acc)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				accErr <- err
				return
			}
			select {
			case acc <- c:
			case <-stopped:
				c.Close()
				return
			}
		}
	}()

	var (
		mu    sync.Mutex
		conns = map[*idscp2.Conn]struct{}{}
	)
	ended := make(chan int) // exit code of each connection that ended
	serve := func(c *idscp2.Conn) {
		defer wg.Done()
		code := serveConn(c, f.echo, out, errw, logger)
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		select {
		case ended <- code:
		case <-stopped:
		}
	}
	// shutdown ends the run: no more connections, every open one closed
	// with USER_SHUTDOWN (in parallel: each Close waits for its goroutines).
	shutdown := func(code int) int {
		close(stopped)
		ln.Close()
		mu.Lock()
		open := make([]*idscp2.Conn, 0, len(conns))
		for c := range conns {
			open = append(open, c)
		}
		mu.Unlock()
		for _, c := range open {
			go c.Close()
		}
		wg.Wait()
		return code
	}

	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(errw, "shutting down\n")
			return shutdown(exitOK)
		case c, ok := <-acc:
			if !ok {
				if ctx.Err() != nil {
					acc = nil
					continue // the ctx case reports it
				}
				fmt.Fprintf(errw, "idscp2 listen: %v\n", <-accErr)
				return shutdown(exitFailure)
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go serve(c)
			if f.once {
				ln.Close() // refuse further clients; the accept goroutine ends
				acc, hsFailed = nil, nil
			}
		case code := <-ended:
			if f.once {
				return shutdown(code)
			}
		case <-hsFailed:
			if f.once {
				return shutdown(exitFailure)
			}
		}
	}
}

// serveConn runs one accepted connection until it closes and returns the
// exit code --once uses for it: 0 if the peer closed with USER_SHUTDOWN.
func serveConn(c *idscp2.Conn, echo bool, out, errw io.Writer, logger *slog.Logger) int {
	prefix := "[" + c.RemoteAddr().String() + "] "
	fmt.Fprint(errw, handshakeReport(prefix, c))
	for {
		msg, err := c.Recv(context.Background())
		if err != nil {
			break
		}
		if err := writeMessage(out, msg); err != nil {
			fmt.Fprintf(errw, "%sstdout: %v\n", prefix, err)
		}
		if echo {
			// Send waits for the ACK; messages arriving meanwhile queue in
			// the connection (and, when its queue is full, the peer waits).
			if err := c.Send(context.Background(), msg); err != nil {
				logger.Info("echo failed", "peer", c.RemoteAddr().String(), "err", err)
			}
		}
	}
	c.Close() // wait for the connection's goroutines
	err := c.Err()
	fmt.Fprintf(errw, "%sclosed: %s\n", prefix, describe(err))
	if peerClosedNormally(err) {
		return exitOK
	}
	return exitFailure
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so a reader polling for path never sees it half written.
func writeFileAtomic(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
