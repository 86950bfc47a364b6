package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one closed-loop run.
type loadResult struct {
	Requests int           `json:"requests"`
	Errors   int           `json:"errors"` // transport errors, non-200 answers, short bodies
	FirstErr string        `json:"first_error,omitempty"`
	Elapsed  time.Duration `json:"-"`
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"-"`
	P99      time.Duration `json:"-"`
	P999     time.Duration `json:"-"`
	Max      time.Duration `json:"-"`
	P50us    float64       `json:"p50_us"`
	P99us    float64       `json:"p99_us"`
	P999us   float64       `json:"p999_us"`
	MaxUs    float64       `json:"max_us"`
}

// newClient is a keep-alive HTTP/1.1 client with room for conc connections
// to one host, as a well-behaved legacy client would have.
func newClient(conc int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conc,
			MaxIdleConnsPerHost: conc,
			MaxConnsPerHost:     conc,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// runLoad is a closed-loop load: conc workers, each with one request
// outstanding at a time on its own keep-alive connection, send GET url
// and read the whole body (wantBytes long). The first warmup is not
// recorded (connections are opened, pools warmed); then every request that
// completes within d is recorded. onStart is called when recording starts,
// onStop when it stops (both may be nil), so callers can sample CPU
// counters over exactly the recorded window.
func runLoad(ctx context.Context, url string, conc, wantBytes int, warmup, d time.Duration, onStart, onStop func()) loadResult {
	client := newClient(conc)
	defer client.Transport.(*http.Transport).CloseIdleConnections()

	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr string
	)
	var recording, stopped atomic.Bool
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			buf := make([]byte, 64<<10)
			nerr := 0
			var ferr string
			<-start
			for !stopped.Load() && ctx.Err() == nil {
				t0 := time.Now()
				err := get(ctx, client, url, wantBytes, buf)
				took := time.Since(t0)
				if stopped.Load() {
					break // finished after the window: not counted
				}
				if !recording.Load() {
					continue
				}
				if err != nil {
					nerr++
					if ferr == "" {
						ferr = err.Error()
					}
					continue
				}
				lat = append(lat, took)
			}
			mu.Lock()
			all = append(all, lat...)
			errs += nerr
			if firstErr == "" {
				firstErr = ferr
			}
			mu.Unlock()
		}()
	}
	close(start)
	sleepCtx(ctx, warmup)
	if onStart != nil {
		onStart()
	}
	t0 := time.Now()
	recording.Store(true)
	sleepCtx(ctx, d)
	stopped.Store(true)
	elapsed := time.Since(t0)
	if onStop != nil {
		onStop()
	}
	wg.Wait()

	r := loadResult{Requests: len(all), Errors: errs, FirstErr: firstErr, Elapsed: elapsed}
	r.RPS = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		slices.Sort(all)
		r.P50, r.P99, r.P999, r.Max = quantile(all, 0.50), quantile(all, 0.99), quantile(all, 0.999), all[len(all)-1]
	}
	r.P50us, r.P99us, r.P999us, r.MaxUs = us(r.P50), us(r.P99), us(r.P999), us(r.Max)
	return r
}

// quantile of sorted samples (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func get(ctx context.Context, c *http.Client, url string, want int, buf []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if int(n) != want {
		return fmt.Errorf("body %d bytes, want %d", n, want)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
