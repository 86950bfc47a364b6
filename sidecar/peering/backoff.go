package peering

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is the reconnect schedule. After the n-th consecutive failure
// (n ≥ 1) the next dial waits Initial·Multiplierⁿ⁻¹, capped at Max, then
// spread by ±Jitter of itself. The zero value of each field means its
// default.
type Backoff struct {
	Initial    time.Duration // default 100ms
	Max        time.Duration // default 10s
	Multiplier float64       // default 2; values below 1 are raised to 1
	Jitter     float64       // fraction, default 0.2 (±20%); negative disables jitter
}

// Backoff defaults.
const (
	DefaultBackoffInitial    = 100 * time.Millisecond
	DefaultBackoffMax        = 10 * time.Second
	DefaultBackoffMultiplier = 2.0
	DefaultBackoffJitter     = 0.2
)

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier == 0 {
		b.Multiplier = DefaultBackoffMultiplier
	}
	if b.Multiplier < 1 {
		b.Multiplier = 1
	}
	switch {
	case b.Jitter == 0:
		b.Jitter = DefaultBackoffJitter
	case b.Jitter < 0:
		b.Jitter = 0
	case b.Jitter > 1:
		b.Jitter = 1
	}
	return b
}

// Delay returns the wait before the next dial after failures consecutive
// failures; 0 for failures ≤ 0. Defaults apply to zero fields.
func (b Backoff) Delay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	b = b.withDefaults()
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(failures-1))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}
