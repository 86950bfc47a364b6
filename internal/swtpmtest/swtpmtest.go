// Package swtpmtest starts a software TPM (swtpm) for tests on free
// loopback ports, skipping the test with a clear message when swtpm is not
// installed (Debian package swtpm; .ci/run installs it).
package swtpmtest

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Start runs swtpm on free loopback ports P (data) and P+1 (control; the
// tpm2-tools swtpm TCTI expects it there) with a fresh state directory:
//
//	swtpm socket --tpm2 --tpmstate dir=D \
//	  --server type=tcp,port=P,bindaddr=127.0.0.1 \
//	  --ctrl type=tcp,port=P+1,bindaddr=127.0.0.1 \
//	  --flags not-need-init,startup-clear
//
// so neither swtpm_ioctl -i nor TPM2_Startup is needed. It returns the data
// port's address and the state directory; the process is killed when the
// test ends.
func Start(t testing.TB) (addr, dir string) {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Skip("swtpm not installed (Debian package swtpm; .ci/run installs it): swtpm tests skipped")
	}
	dir = t.TempDir()
	for attempt := 0; ; attempt++ {
		port := freePortPair(t)
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--tpmstate", "dir="+dir,
			"--server", "type=tcp,port="+strconv.Itoa(port)+",bindaddr=127.0.0.1",
			"--ctrl", "type=tcp,port="+strconv.Itoa(port+1)+",bindaddr=127.0.0.1",
			"--flags", "not-need-init,startup-clear",
			"--log", "file="+filepath.Join(dir, "swtpm.log"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start swtpm: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if listening(addr, exited) {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return addr, dir
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 3 { // another process took the ports meanwhile, four times
			t.Fatalf("swtpm did not start: %s", stderr.String())
		}
	}
}

// listening waits until addr accepts connections or the process exits.
func listening(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// freePortPair returns a port P such that P and P+1 are free (for now).
func freePortPair(t testing.TB) int {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no pair of free ports")
	return 0
}
