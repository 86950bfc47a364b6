package main_test

// End-to-end tests of the idscp2-sidecar binary as a real process: built
// with `go build` into a temporary directory and run with exec, against an
// in-process demo environment (PKI, built-in DAPS, provider sidecar and
// backend from sidecar/demo).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/demo"
)

func TestProcess(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("signals: POSIX only")
	}
	bin := buildSidecar(t)
	t.Run("CheckInvalidConfig", func(t *testing.T) { testCheck(t, bin) })
	t.Run("RunReloadDrain", func(t *testing.T) { testRun(t, bin) })
	t.Run("Demo", func(t *testing.T) { testDemo(t, bin) })
}

// buildSidecar builds the command into t.TempDir().
func buildSidecar(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "idscp2-sidecar")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// procBackend is the provider's service: /gate waits until released,
// everything else echoes.
type procBackend struct {
	arrived chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (b *procBackend) release() { b.once.Do(func() { close(b.gate) }) }

func (b *procBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/gate" {
		b.arrived <- struct{}{}
		select {
		case <-b.gate:
		case <-r.Context().Done():
			return
		}
	}
	w.Write(body)
}

func startEnv(t *testing.T) (*demo.Env, *procBackend) {
	t.Helper()
	be := &procBackend{arrived: make(chan struct{}, 16), gate: make(chan struct{})}
	env, err := demo.Start(context.Background(), demo.Options{Dir: t.TempDir(), Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.release(); env.Close() })
	return env, be
}

// consumerConfig is a consumer configuration for env's provider.
func consumerConfig(env *demo.Env, extra string) string {
	pki := filepath.Join(env.Dir, "pki")
	return fmt.Sprintf(`identity:
  cert: %s
  key: %s
  ca: %s
daps:
  mode: daps
  url: %s
attestation:
  supportedSuites: [Dummy2, Dummy]
  expectedSuites: [Dummy2, Dummy]
peers:
  - name: provider
    address: %s
egress:
  - listen: 127.0.0.1:0
    peer: provider
admin:
  listen: 127.0.0.1:0
shutdown:
  drainTimeout: 20s
log:
  format: json
%s`, filepath.Join(pki, "client.pem"), filepath.Join(pki, "client-key.pem"), filepath.Join(pki, "ca.pem"), env.DAPSURL, env.ProviderAddr, extra)
}

func testCheck(t *testing.T, bin string) {
	env, _ := startEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(consumerConfig(env, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, bin, "run", "--check", "--config", good)
	if code != 0 || !strings.Contains(stderr, "is valid") {
		t.Errorf("run --check on a valid configuration: exit %d, stderr %q", code, stderr)
	}

	bad := filepath.Join(dir, "bad.yaml")
	text := strings.Replace(consumerConfig(env, ""), "    peer: provider\n", "    peer: nosuch\n    timout: 5s\n", 1)
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(text[:strings.Index(text, "    timout")], "\n")
	code, _, stderr = runCmd(t, bin, "run", "--check", "--config", bad)
	if code != 2 {
		t.Errorf("run --check on an invalid configuration: exit %d, want 2; stderr %q", code, stderr)
	}
	for _, want := range []string{`"timout"`, fmt.Sprintf("bad.yaml:%d:", line), `did you mean "timeout"`, `"nosuch" is not a defined peer`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("run --check stderr does not name the problem %q:\n%s", want, stderr)
		}
	}
	code, _, stderr = runCmd(t, bin, "run")
	if code != 2 || !strings.Contains(stderr, "--config") {
		t.Errorf("run without --config: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(t, bin, "run", "--config", filepath.Join(dir, "missing.yaml"))
	if code != 2 || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("run with a missing file: exit %d, stderr %q", code, stderr)
	}
}

func runCmd(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return code, o.String(), e.String()
}

// logWatcher collects a process's JSON log lines.
type logWatcher struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	more  chan struct{}
	done  chan struct{}
}

func watchLog(r io.Reader) *logWatcher {
	w := &logWatcher{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			json.Unmarshal(sc.Bytes(), &m)
			w.mu.Lock()
			w.lines = append(w.lines, m)
			w.raw = append(w.raw, sc.Text())
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// wait returns the first log line after index from with message msg.
func (w *logWatcher) wait(t *testing.T, from int, msg string) (map[string]any, int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		for i := from; i < len(w.lines); i++ {
			if w.lines[i] != nil && w.lines[i]["msg"] == msg {
				m := w.lines[i]
				w.mu.Unlock()
				return m, i + 1
			}
		}
		w.mu.Unlock()
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("no log line %q; the log:\n%s", msg, w.dump())
		}
	}
}

func (w *logWatcher) dump() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.raw, "\n")
}

func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err == nil {
				return v
			}
		}
	}
	t.Fatalf("%s: no metric %s", url, name)
	return 0
}

func testRun(t *testing.T, bin string) {
	env, be := startEnv(t)
	path := filepath.Join(t.TempDir(), "consumer.yaml")
	good := consumerConfig(env, "")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when the process has exited; then exitErr is set
	var exitErr error
	log := watchLog(stderr)
	go func() {
		<-log.done
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	eg, i := log.wait(t, 0, "egress listening")
	adm, _ := log.wait(t, 0, "admin listening")
	egress, admin := "http://"+eg["addr"].(string), "http://"+adm["addr"].(string)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func(what, url string, want int, body string) {
		t.Helper()
		resp, err := c.Post(url, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.Contains(string(b), body) {
			t.Errorf("%s: %d %q, want %d with %q", what, resp.StatusCode, b, want, body)
		}
	}
	get("request through the process", egress+"/echo", 200, "through the process")
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := c.Get(admin + p)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %v %v", p, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	if _, i = log.wait(t, i, "egress request"); i == 0 {
		t.Error("no access-log line")
	}

	// SIGHUP reloads.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, i = log.wait(t, i, "configuration reloaded")

	// SIGHUP with an invalid file: refused, the running configuration stays.
	if err := os.WriteFile(path, []byte(good+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var refused map[string]any
	refused, i = log.wait(t, i, "reload refused; the running configuration stays")
	if e, _ := refused["err"].(string); !strings.Contains(e, `"bogus"`) {
		t.Errorf("the refused reload's log line does not name the problem: %v", refused)
	}
	if v := metric(t, admin+"/metrics", "idscp2_config_last_reload_successful"); v != 0 {
		t.Errorf("idscp2_config_last_reload_successful = %v after a refused reload, want 0", v)
	}
	get("request after a refused reload", egress+"/echo", 200, "still serving")

	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, i = log.wait(t, i, "configuration reloaded")
	if v := metric(t, admin+"/metrics", "idscp2_config_last_reload_successful"); v != 1 {
		t.Errorf("idscp2_config_last_reload_successful = %v after a good reload, want 1", v)
	}

	// SIGTERM with a request in flight: it completes, then the process exits 0.
	closesBefore := userShutdowns(t, env.ProviderMetrics)
	inflight := make(chan error, 1)
	go func() {
		resp, err := c.Post(egress+"/gate", "text/plain", strings.NewReader("in flight"))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "in flight" {
				err = fmt.Errorf("%d %q", resp.StatusCode, b)
			}
		}
		inflight <- err
	}()
	select {
	case <-be.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the in-flight request did not reach the backend")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, i = log.wait(t, i, "draining")
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", strings.TrimPrefix(egress, "http://"))
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the egress listener still accepts connections while draining")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-exited:
		t.Fatalf("the process exited (%v) before its in-flight request finished\n%s", exitErr, log.dump())
	default:
	}
	be.release()
	if err := <-inflight; err != nil {
		t.Errorf("in-flight request during SIGTERM: %v", err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0\n%s", exitErr, log.dump())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit after SIGTERM")
	}
	log.wait(t, i, "stopped")
	deadline = time.Now().Add(10 * time.Second)
	for userShutdowns(t, env.ProviderMetrics) < closesBefore+1 {
		if time.Now().After(deadline) {
			t.Fatal("the provider saw no IdscpClose USER_SHUTDOWN from the process")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func userShutdowns(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "idscp2_closes_total{") && strings.Contains(line, `by="peer"`) && strings.Contains(line, `cause="USER_SHUTDOWN"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func testDemo(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo")
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	s := out.String()
	for _, want := range []string{
		"== 1. plain HTTP through the tunnel",
		"200 OK in",
		`"greeting":"hello from the provider's backend"`,
		`"securityProfile":"idsc:BASE_SECURITY_PROFILE"`,
		"== 2. IDS multipart through the tunnel",
		"ids:DescriptionResponseMessage, correlationMessage matches: true",
		"securityToken present (the provider sidecar's DAT): true",
		`"@type":"ids:BaseConnector"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
}
