package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// stunnelPair is (b): client-mode stunnel → TLS 1.3, mutual certificates →
// server-mode stunnel → backend.
type stunnelPair struct {
	version        string
	client, server *proc
	url            string // the client-side stunnel's plain-HTTP front
}

func findStunnel() string {
	for _, name := range []string{"stunnel4", "stunnel"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func stunnelVersion(bin string) string {
	out, _ := exec.Command(bin, "-version").CombinedOutput()
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "stunnel ") {
			return strings.TrimSpace(line)
		}
	}
	return "stunnel (version unknown)"
}

// startStunnel writes both configurations into dir (PKI files already in
// dir/pki) and starts the pair in front of backendAddr.
func startStunnel(ctx context.Context, bin, dir, backendAddr string) (*stunnelPair, error) {
	serverAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	clientAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(dir, "pki")
	// TCP_NODELAY on both sides of each process, as a latency-minded user
	// would set it; one worker thread per connection (Debian's build uses
	// pthreads). Logs at "err" level only.
	common := `foreground = yes
pid =
debug = err
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
`
	server := common + fmt.Sprintf(`[bench-server]
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
`, serverAddr, backendAddr, filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"), filepath.Join(pki, "ca.pem"))
	client := common + fmt.Sprintf(`[bench-client]
client = yes
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkHost = localhost
sslVersionMin = TLSv1.3
`, clientAddr, serverAddr, filepath.Join(pki, "client.pem"), filepath.Join(pki, "client-key.pem"), filepath.Join(pki, "ca.pem"))
	sp := filepath.Join(dir, "stunnel-server.conf")
	cp := filepath.Join(dir, "stunnel-client.conf")
	if err := os.WriteFile(sp, []byte(server), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cp, []byte(client), 0o600); err != nil {
		return nil, err
	}
	st := &stunnelPair{version: stunnelVersion(bin), url: "http://" + clientAddr}
	if st.server, err = startProc(dir, "stunnel-server", bin, sp); err != nil {
		return nil, err
	}
	if st.client, err = startProc(dir, "stunnel-client", bin, cp); err != nil {
		st.close()
		return nil, err
	}
	for _, w := range []struct {
		p    *proc
		addr string
	}{{st.server, serverAddr}, {st.client, clientAddr}} {
		if err := waitTCP(ctx, w.p, w.addr, 10*time.Second); err != nil {
			st.close()
			return nil, err
		}
	}
	return st, nil
}

func (s *stunnelPair) procs() procSet { return procSet{s.client, s.server} }

func (s *stunnelPair) close() {
	if s == nil {
		return
	}
	s.client.stop()
	s.server.stop()
}
