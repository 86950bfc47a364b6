// Command harness measures, in one run on 127.0.0.1, an HTTP backend reached
// (a) directly, (b) through a pair of stunnel processes (TLS 1.3, mutual
// certificates) and (c) through a pair of idscp2-sidecar processes
// (consumer egress → IDSCP2/TCP → provider ingress), with a closed-loop
// load generator; plus the IDSCP2 handshake rate and the memory of idle
// IDSCP2 connections in a sidecar process. It prints a Markdown table and
// writes it, with a JSON copy, to bench/results/.
//
//	go run ./bench/harness            (or: make bench)
//	go run ./bench/harness -h         for the knobs
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/internal/testpki"
)

type benchCase struct {
	Conc int
	Size int
}

func (c benchCase) String() string { return fmt.Sprintf("c=%d, %s", c.Conc, sizeName(c.Size)) }
func (c benchCase) key() string    { return fmt.Sprintf("%dx%s", c.Conc, sizeName(c.Size)) }

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func parseCases(s string) ([]benchCase, error) {
	var out []benchCase
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		c, sz, ok := strings.Cut(item, "x")
		if !ok {
			return nil, fmt.Errorf("case %q: want CONCxSIZE, e.g. 64x1KiB", item)
		}
		conc, err := strconv.Atoi(c)
		if err != nil || conc < 1 {
			return nil, fmt.Errorf("case %q: bad concurrency", item)
		}
		size, err := parseSize(sz)
		if err != nil {
			return nil, fmt.Errorf("case %q: %v", item, err)
		}
		out = append(out, benchCase{conc, size})
	}
	return out, nil
}

func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	case strings.HasSuffix(s, "B"):
		s = strings.TrimSuffix(s, "B")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// backend answers GET /bytes/{n} with n bytes (Content-Length set).
func backend() http.Handler {
	buf := make([]byte, 16<<20)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > len(buf) {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(buf[:n])
	})
	return mux
}

type options struct {
	cases       []benchCase
	duration    time.Duration
	warmup      time.Duration
	hsDuration  time.Duration
	idleConns   int
	out         string
	sidecarBin  string
	noStunnel   bool
	noSidecar   bool
	profileDir  string
	profileCase string
	keep        bool
	poolSize    int
}

func main() {
	var o options
	cases := flag.String("cases", "1x1KiB,64x1KiB,1x64KiB,64x64KiB,1x1MiB", "comma-separated CONCxSIZE load cases")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "recorded time per case and path")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unrecorded warm-up before each measurement")
	flag.DurationVar(&o.hsDuration, "handshake-duration", 3*time.Second, "time of each handshake-rate measurement")
	flag.IntVar(&o.idleConns, "idle-conns", 2000, "idle IDSCP2 connections opened to a fresh sidecar process (0 skips)")
	flag.StringVar(&o.out, "out", "bench/results", "directory for latest.md and latest.json (\"\" writes nothing)")
	flag.StringVar(&o.sidecarBin, "sidecar-bin", "", "use this idscp2-sidecar binary instead of building ./cmd/idscp2-sidecar")
	flag.BoolVar(&o.noStunnel, "no-stunnel", false, "skip the stunnel pair")
	flag.BoolVar(&o.noSidecar, "no-sidecar", false, "skip the sidecar pair (and the idle-connection measurement)")
	flag.StringVar(&o.profileDir, "profile", "", "write CPU profiles of both sidecars during the -profile-case run into this directory")
	flag.StringVar(&o.profileCase, "profile-case", "64x64KiB", "case to profile with -profile")
	flag.IntVar(&o.poolSize, "pool-size", 0, "peers[].poolSize of the consumer sidecar (0: the default, 2)")
	sidecarEnv := flag.String("sidecar-env", "", "comma-separated VAR=value added to the sidecar processes' environment, e.g. GOGC=400")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, logs)")
	flag.Parse()
	if *sidecarEnv != "" {
		procEnv = strings.Split(*sidecarEnv, ",")
	}
	var err error
	if o.cases, err = parseCases(*cases); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func run(ctx context.Context, o options) error {
	rep := &report{Meta: machineMeta()}
	busy0, steal0, total0 := cpuTimes()
	rep.Meta.Settings = fmt.Sprintf("duration %v per case and path after a %v warm-up; closed loop, keep-alive HTTP/1.1 GET; sidecars as processes, log level warn, daps.mode local", o.duration, o.warmup)
	if o.poolSize > 0 {
		rep.Meta.Settings += fmt.Sprintf(", poolSize %d", o.poolSize)
	}
	if len(procEnv) > 0 {
		rep.Meta.Settings += fmt.Sprintf(", sidecar environment %v", procEnv)
	}

	dir, err := os.MkdirTemp("", "idscp2-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("temporary directory %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	// PKI (ECDSA P-256, CA-signed leaves with SANs localhost/127.0.0.1) for
	// stunnel, the sidecars and the in-process IDSCP2 peers alike.
	pki, err := testpki.NewBundle()
	if err != nil {
		return err
	}
	if err := pki.WriteFiles(filepath.Join(dir, "pki")); err != nil {
		return err
	}
	issuerKey, err := writeIssuerKey(filepath.Join(dir, "issuer-key.pem"))
	if err != nil {
		return err
	}

	// Backend, in this process (it is the same for every path).
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	beSrv := &http.Server{Handler: backend(), ReadHeaderTimeout: 10 * time.Second}
	go beSrv.Serve(beLn)
	defer beSrv.Close()
	beAddr := beLn.Addr().String()

	type path struct {
		name  string
		url   string
		procs procSet
	}
	paths := []path{{name: "direct", url: "http://" + beAddr}}

	// (b) stunnel pair.
	if o.noStunnel {
		rep.Notes = append(rep.Notes, "stunnel pair skipped (-no-stunnel).")
	} else if bin := findStunnel(); bin == "" {
		msg := "stunnel pair SKIPPED: neither stunnel4 nor stunnel is on PATH (Debian: apt-get install stunnel4)."
		progress("%s", msg)
		rep.Notes = append(rep.Notes, msg)
	} else {
		st, err := startStunnel(ctx, bin, dir, beAddr)
		if err != nil {
			return fmt.Errorf("stunnel: %w", err)
		}
		defer st.close()
		rep.Meta.Stunnel = st.version
		paths = append(paths, path{"stunnel", st.url, st.procs()})
		progress("stunnel pair up: %s", st.version)
	}

	// (c) sidecar pair, as processes.
	var sc *sidecarPair
	sidecarBin := o.sidecarBin
	if !o.noSidecar {
		if sidecarBin == "" {
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			progress("building ./cmd/idscp2-sidecar")
			if sidecarBin, err = buildSidecar(root, dir); err != nil {
				return err
			}
		}
		if sc, err = startSidecars(ctx, sidecarBin, dir, beAddr, o.poolSize); err != nil {
			return fmt.Errorf("sidecars: %w", err)
		}
		defer sc.close()
		paths = append(paths, path{"sidecar", sc.url, sc.procs()})
		progress("sidecar pair up")
	}
	for _, p := range paths {
		if err := waitOK(ctx, p.url+"/bytes/16", 20*time.Second); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}

	// IDSCP2 alone: handshake rate and idle-connection memory.
	clientCfg, err := peerConfig(pki, pki.Client, issuerKey)
	if err != nil {
		return err
	}
	serverCfg, err := peerConfig(pki, pki.Server, issuerKey)
	if err != nil {
		return err
	}
	lctx, lcancel := context.WithCancel(ctx)
	ln, err := inProcessListener(lctx, serverCfg)
	if err != nil {
		lcancel()
		return err
	}
	progress("handshakes: in-process listener, 2 goroutines, %v", o.hsDuration)
	rep.Handshakes = append(rep.Handshakes, handshakeRate(ctx, "in-process listener (both sides in the harness)", ln.Addr().String(), clientCfg, 2, o.hsDuration))
	ln.Close()
	lcancel()
	if sc != nil {
		progress("handshakes: provider sidecar process, 2 goroutines, %v", o.hsDuration)
		rep.Handshakes = append(rep.Handshakes, handshakeRate(ctx, "provider sidecar process (server side there)", sc.ingress, clientCfg, 2, o.hsDuration))
	}
	if sc != nil && o.idleConns > 0 {
		progress("idle connections: %d to a fresh provider sidecar process", o.idleConns)
		p, ingress, admin, err := startProvider(ctx, sidecarBin, dir, "sidecar-idle", beAddr)
		if err != nil {
			return err
		}
		r, err := idleConnMemory(ctx, p, ingress, admin, clientCfg, o.idleConns)
		p.stop()
		if err != nil {
			rep.Notes = append(rep.Notes, "idle-connection measurement failed: "+err.Error())
			progress("idle connections: %v", err)
		} else {
			rep.Idle = &r
		}
	}

	// Load cases: for each, the paths back to back, so their figures come
	// from the same minute.
	for _, c := range o.cases {
		var results []pathResult
		for _, p := range paths {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			url := fmt.Sprintf("%s/bytes/%d", p.url, c.Size)
			var before, after procSample
			var profDone chan error
			onStart := func() {
				p.procs.resetPeaks()
				before = p.procs.sample()
				if o.profileDir != "" && p.name == "sidecar" && c.key() == o.profileCase {
					profDone = make(chan error, 2)
					os.MkdirAll(o.profileDir, 0o755)
					secs := max(1, int(o.duration.Seconds()))
					for _, a := range []struct{ name, admin string }{{"consumer", sc.consumerAdmin}, {"provider", sc.providerAdmin}} {
						go func() {
							profDone <- fetchProfile(a.admin, secs, filepath.Join(o.profileDir, fmt.Sprintf("%s-%s.cpu.pprof", a.name, c.key())))
						}()
					}
				}
			}
			onStop := func() { after = p.procs.sample() }
			progress("%s via %s", c, p.name)
			lr := runLoad(ctx, url, c.Conc, c.Size, o.warmup, o.duration, onStart, onStop)
			pr := pathResult{Path: p.name, Load: lr}
			if len(p.procs) > 0 {
				cpu := after.cpu - before.cpu
				pr.ProxyCPUSeconds = cpu
				pr.ProxyCores = cpu / lr.Elapsed.Seconds()
				if lr.Requests > 0 {
					pr.ProxyCPUPer1k = cpu / (float64(lr.Requests) / 1000)
				}
				pr.PeakRSSKiB = p.procs.peaks()
			}
			if profDone != nil {
				for range 2 {
					if err := <-profDone; err != nil {
						progress("profile: %v", err)
					}
				}
				progress("CPU profiles written to %s", o.profileDir)
			}
			if lr.Errors > 0 {
				progress("  %d errors, first: %s", lr.Errors, lr.FirstErr)
			}
			results = append(results, pr)
		}
		rep.Cases = append(rep.Cases, newCaseResult(c, results))
	}

	busy1, steal1, total1 := cpuTimes()
	if dt := float64(total1 - total0); dt > 0 {
		rep.Meta.MachineBusyPct = 100 * float64(busy1-busy0) / dt
		rep.Meta.MachineStealPct = 100 * float64(steal1-steal0) / dt
	}
	rep.evaluateTargets()
	md := rep.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, "latest.md"), []byte(md), 0o644); err != nil {
			return err
		}
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, "latest.json"), append(js, '\n'), 0o644); err != nil {
			return err
		}
		progress("wrote %s and %s", filepath.Join(o.out, "latest.md"), filepath.Join(o.out, "latest.json"))
	}
	return nil
}

type meta struct {
	Date      string `json:"date"`
	Machine   string `json:"machine"`
	NProc     int    `json:"nproc"`
	Model     string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Stunnel   string `json:"stunnel,omitempty"`
	Commit    string `json:"commit"`
	Command   string `json:"command"`
	Via       string `json:"via,omitempty"` // e.g. "make bench"
	Settings  string `json:"settings"`
	LoadAvg   string `json:"load_average_at_start"`
	// Whole-machine CPU over the run (/proc/stat): busy share of all CPUs
	// and the share stolen by the hypervisor.
	MachineBusyPct  float64 `json:"machine_busy_pct"`
	MachineStealPct float64 `json:"machine_steal_pct"`
}

// cpuTimes returns busy, steal and total jiffies of all CPUs.
func cpuTimes() (busy, steal, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest, guest_nice are already in user, nice
			break
		}
		total += n
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			steal = n
		default:
			busy += n
		}
	}
	return
}

func machineMeta() meta {
	m := meta{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	m.Machine = fmt.Sprintf("%d × %s, Linux %s", m.NProc, m.Model, m.Kernel)
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	m.Command = strings.TrimSpace("go run ./bench/harness " + strings.Join(os.Args[1:], " "))
	m.Via = os.Getenv("BENCH_COMMAND") // set by the Makefile
	return m
}
