package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

type pathResult struct {
	Path            string           `json:"path"` // direct | stunnel | sidecar
	Load            loadResult       `json:"load"`
	ProxyCPUSeconds float64          `json:"proxy_cpu_seconds,omitempty"` // both proxy processes, recorded window
	ProxyCores      float64          `json:"proxy_cores,omitempty"`       // the same per second of wall time
	ProxyCPUPer1k   float64          `json:"proxy_cpu_seconds_per_1k_requests,omitempty"`
	PeakRSSKiB      map[string]int64 `json:"peak_rss_kib,omitempty"` // VmHWM per process, reset at the start of the case
	// Ratios to (a) direct and (b) stunnel from the same case; 0 when that
	// path was not measured.
	Ratios map[string]ratios `json:"ratios,omitempty"`
	// AddedP50us is p50 minus the direct path's p50.
	AddedP50us float64 `json:"added_p50_us,omitempty"`
}

type ratios struct {
	RPS  float64 `json:"rps"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	CPU  float64 `json:"cpu_per_1k,omitempty"` // proxy CPU per request, to stunnel only
}

type caseResult struct {
	Case  string       `json:"case"`
	Conc  int          `json:"concurrency"`
	Size  int          `json:"body_bytes"`
	Paths []pathResult `json:"paths"`
}

func newCaseResult(c benchCase, paths []pathResult) caseResult {
	cr := caseResult{Case: c.key(), Conc: c.Conc, Size: c.Size, Paths: paths}
	base := map[string]*pathResult{}
	for i := range cr.Paths {
		base[cr.Paths[i].Path] = &cr.Paths[i]
	}
	for i := range cr.Paths {
		p := &cr.Paths[i]
		p.Ratios = map[string]ratios{}
		for _, b := range []string{"direct", "stunnel"} {
			q, ok := base[b]
			if !ok || q == p {
				continue
			}
			r := ratios{
				RPS:  div(p.Load.RPS, q.Load.RPS),
				P50:  div(p.Load.P50us, q.Load.P50us),
				P99:  div(p.Load.P99us, q.Load.P99us),
				P999: div(p.Load.P999us, q.Load.P999us),
			}
			if b == "stunnel" {
				r.CPU = div(p.ProxyCPUPer1k, q.ProxyCPUPer1k)
			}
			p.Ratios[b] = r
		}
		if d, ok := base["direct"]; ok && d != p {
			p.AddedP50us = p.Load.P50us - d.Load.P50us
		}
	}
	return cr
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (c *caseResult) path(name string) *pathResult {
	for i := range c.Paths {
		if c.Paths[i].Path == name {
			return &c.Paths[i]
		}
	}
	return nil
}

type target struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // met | missed | not measured
}

type report struct {
	Meta       meta              `json:"meta"`
	Cases      []caseResult      `json:"cases"`
	Handshakes []handshakeResult `json:"handshakes"`
	Idle       *idleResult       `json:"idle_connections,omitempty"`
	Targets    []target          `json:"targets"`
	Notes      []string          `json:"notes,omitempty"`
}

func (r *report) findCase(key string) *caseResult {
	for i := range r.Cases {
		if r.Cases[i].Case == key {
			return &r.Cases[i]
		}
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func (r *report) evaluateTargets() {
	// 1. Added latency at c=1, 1 KiB.
	t := target{Name: "latency added by the sidecar pair, c=1, 1 KiB, p50", Target: "≤ 1.2 × the stunnel pair's added p50", Verdict: "not measured"}
	if c := r.findCase("1x1KiB"); c != nil {
		s, st := c.path("sidecar"), c.path("stunnel")
		if s != nil && st != nil && c.path("direct") != nil {
			ratio := div(s.AddedP50us, st.AddedP50us)
			t.Measured = fmt.Sprintf("sidecar +%s, stunnel +%s: %.2f×", lat(s.AddedP50us), lat(st.AddedP50us), ratio)
			t.Verdict = verdict(st.AddedP50us > 0 && ratio <= 1.2)
		}
	}
	r.Targets = append(r.Targets, t)

	// 2. Throughput at c=64, 64 KiB.
	t = target{Name: "throughput, c=64, 64 KiB", Target: "≥ 90 % of the stunnel pair's", Verdict: "not measured"}
	if c := r.findCase("64x64KiB"); c != nil {
		s, st := c.path("sidecar"), c.path("stunnel")
		if s != nil && st != nil {
			ratio := div(s.Load.RPS, st.Load.RPS)
			t.Measured = fmt.Sprintf("%s vs %s req/s: %.0f %%", num(s.Load.RPS), num(st.Load.RPS), 100*ratio)
			t.Verdict = verdict(ratio >= 0.9)
		}
	}
	r.Targets = append(r.Targets, t)

	// 3. Handshakes.
	t = target{Name: "full IDSCP2 handshakes/s (P-256, Dummy2, cached DAT), 2 goroutines", Target: "≥ 1,000/s", Verdict: "not measured"}
	if len(r.Handshakes) > 0 {
		h := r.Handshakes[0]
		t.Measured = fmt.Sprintf("%s/s (%s)", num(h.PerSecond), h.Where)
		t.Verdict = verdict(h.PerSecond >= 1000 && h.Errors == 0)
	}
	r.Targets = append(r.Targets, t)

	// 4. Idle connections.
	t = target{Name: "RSS per idle ESTABLISHED IDSCP2 connection", Target: "≤ 64 KiB", Verdict: "not measured"}
	if r.Idle != nil {
		t.Measured = fmt.Sprintf("%.1f KiB RSS (%.1f KiB Go heap+stacks) at %d connections", r.Idle.RSSPerConnKiB, r.Idle.HeapPerConnKiB, r.Idle.Connections)
		t.Verdict = verdict(r.Idle.RSSPerConnKiB <= 64)
	}
	r.Targets = append(r.Targets, t)
}

// num formats with thousands separators and no decimals.
func num(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// lat formats a latency in µs as µs or ms.
func lat(us float64) string {
	switch {
	case us >= 10000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func ratioCell(p *pathResult, f func(ratios) float64) string {
	var parts []string
	for _, b := range []string{"direct", "stunnel"} {
		if r, ok := p.Ratios[b]; ok {
			parts = append(parts, fmt.Sprintf("%.2f", f(r)))
		} else {
			parts = append(parts, "–")
		}
	}
	return strings.Join(parts, " / ")
}

func (r *report) markdown() string {
	var b strings.Builder
	m := r.Meta
	fmt.Fprintf(&b, "### Harness run %s\n\n", m.Date)
	fmt.Fprintf(&b, "- machine: %s (load average at start %s; over the run all CPUs %.0f %% busy, %.1f %% stolen by the hypervisor)\n", m.Machine, m.LoadAvg, m.MachineBusyPct, m.MachineStealPct)
	fmt.Fprintf(&b, "- Go: %s; commit %s", m.GoVersion, m.Commit)
	if m.Stunnel != "" {
		fmt.Fprintf(&b, "; %s", m.Stunnel)
	}
	if m.Via != "" {
		fmt.Fprintf(&b, "\n- command: `%s` (runs `%s`)\n", m.Via, m.Command)
	} else {
		fmt.Fprintf(&b, "\n- command: `%s`\n", m.Command)
	}
	fmt.Fprintf(&b, "- %s\n\n", m.Settings)

	b.WriteString("| case | path | req/s | ×direct / ×stunnel | p50 | p99 | p999 | p50 ×direct / ×stunnel | p50 added | proxy CPU s / 1k req (cores) | proxy peak RSS | errors |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range r.Cases {
		for i, p := range c.Paths {
			name := ""
			if i == 0 {
				name = fmt.Sprintf("c=%d, %s", c.Conc, sizeName(c.Size))
			}
			added, cpu, rss := "", "", ""
			if p.Path != "direct" {
				added = "+" + lat(p.AddedP50us)
				if p.AddedP50us < 0 {
					added = "−" + lat(-p.AddedP50us)
				}
			}
			if len(p.PeakRSSKiB) > 0 {
				cpu = fmt.Sprintf("%.3f (%.2f)", p.ProxyCPUPer1k, p.ProxyCores)
				var parts []string
				for _, k := range slices.Sorted(maps.Keys(p.PeakRSSKiB)) {
					parts = append(parts, fmt.Sprintf("%.1f", float64(p.PeakRSSKiB[k])/1024))
				}
				rss = strings.Join(parts, " + ") + " MiB"
			}
			errs := fmt.Sprint(p.Load.Errors)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				name, p.Path, num(p.Load.RPS), ratioCell(&p, func(x ratios) float64 { return x.RPS }),
				lat(p.Load.P50us), lat(p.Load.P99us), lat(p.Load.P999us),
				ratioCell(&p, func(x ratios) float64 { return x.P50 }), added, cpu, rss, errs)
		}
	}
	b.WriteString("\nProxy CPU: utime+stime of both proxy processes over the recorded window (/proc/<pid>/stat), per 1,000 requests, and in cores used on average. Peak RSS: VmHWM of each process (client-side + server-side, alphabetical: consumer + provider, stunnel-client + stunnel-server), reset at the start of each case. The load generator and the backend run in the harness process on the same 2 cores.\n\n")

	if len(r.Handshakes) > 0 {
		b.WriteString("| IDSCP2 handshakes (TCP + mTLS 1.3 P-256 + Hello + 2 cached ES256 DAT verifications + Dummy2 both ways) | goroutines | handshakes/s | mean Dial | errors |\n|---|--:|--:|--:|--:|\n")
		for _, h := range r.Handshakes {
			fmt.Fprintf(&b, "| %s | %d | %s | %.2f ms | %d |\n", h.Where, h.Goroutines, num(h.PerSecond), h.MeanMs, h.Errors)
		}
		b.WriteString("\n")
	}
	if r.Idle != nil {
		i := r.Idle
		fmt.Fprintf(&b, "Idle connections: %d ESTABLISHED IDSCP2 connections opened (in %.1f s) from the harness to a %s: VmRSS %.1f → %.1f MiB = **%.1f KiB per connection**; Go heap+stacks after a forced GC %.1f KiB per connection; %.2f goroutines per connection.\n\n",
			i.Connections, i.OpenSeconds, i.Where, float64(i.RSSBeforeKiB)/1024, float64(i.RSSAfterKiB)/1024, i.RSSPerConnKiB, i.HeapPerConnKiB, i.GoroutinesPer)
	}
	b.WriteString("| target (issue 7) | goal | measured | verdict |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Target, t.Measured, t.Verdict)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}
	return b.String()
}
