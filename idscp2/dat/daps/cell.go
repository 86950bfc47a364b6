package daps

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// cell caches one value obtained from the DAPS (the metadata document, the
// JWKS or the DAT). A value is fresh until renewAt and still usable until
// usableUntil. Fetches are single-flight and run in the background with
// their own deadline, so a caller that gives up does not abort a fetch
// others are waiting for:
//
//   - fresh value: returned at once;
//   - due for renewal but usable: returned at once, and a background fetch
//     is started unless one runs or a failed one was too recent;
//   - nothing usable: the caller waits for the (possibly shared) fetch as
//     long as its context allows.
type cell[T any] struct {
	name    string
	fetch   func(ctx context.Context, note func(error)) (v T, renewAt, usableUntil time.Time, err error)
	now     func() time.Time
	bg      context.Context
	timeout time.Duration
	wg      *sync.WaitGroup

	cur atomic.Pointer[entry[T]]

	mu        sync.Mutex
	flight    *flight[T]
	lastStart time.Time // start of the latest fetch
	failures  int       // consecutive failed fetches
	retryAt   time.Time // no background refresh before this, after a failure
	lastErr   error     // of the latest failed attempt, for callers that time out
	fetches   int       // fetches started, for tests
}

type entry[T any] struct {
	v                    T
	renewAt, usableUntil time.Time
}

type flight[T any] struct {
	done chan struct{}
	e    *entry[T]
	err  error
}

// get returns a usable value or waits for one; see the type's comment.
func (c *cell[T]) get(ctx context.Context) (T, error) {
	now := c.now()
	if e := c.cur.Load(); e != nil && now.Before(e.usableUntil) {
		if !now.Before(e.renewAt) {
			c.mu.Lock()
			if c.flight == nil && !now.Before(c.retryAt) && c.bg.Err() == nil {
				c.startLocked(now)
			}
			c.mu.Unlock()
		}
		return e.v, nil
	}
	c.mu.Lock()
	f := c.flight
	if f == nil {
		f = c.startLocked(now)
	}
	c.mu.Unlock()
	return c.wait(ctx, f)
}

// peek returns the cached value, if any, without fetching.
func (c *cell[T]) peek() (T, bool) {
	if e := c.cur.Load(); e != nil {
		return e.v, true
	}
	var zero T
	return zero, false
}

// refresh fetches now (or joins a running fetch) unless the latest fetch
// started less than minInterval ago; ran reports whether it fetched.
func (c *cell[T]) refresh(ctx context.Context, minInterval time.Duration) (v T, ran bool, err error) {
	now := c.now()
	c.mu.Lock()
	f := c.flight
	if f == nil {
		if !c.lastStart.IsZero() && now.Sub(c.lastStart) < minInterval {
			c.mu.Unlock()
			var zero T
			return zero, false, nil
		}
		f = c.startLocked(now)
	}
	c.mu.Unlock()
	v, err = c.wait(ctx, f)
	return v, true, err
}

// invalidate drops the cached value.
func (c *cell[T]) invalidate() { c.cur.Store(nil) }

// sinceLastFetch is how long ago the latest fetch started.
func (c *cell[T]) sinceLastFetch() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now().Sub(c.lastStart)
}

func (c *cell[T]) startLocked(now time.Time) *flight[T] {
	f := &flight[T]{done: make(chan struct{})}
	if err := c.bg.Err(); err != nil {
		f.err = fmt.Errorf("daps: driver closed: %w", err)
		close(f.done)
		return f
	}
	c.flight = f
	c.lastStart = now
	c.fetches++
	c.wg.Add(1)
	go c.run(f)
	return f
}

func (c *cell[T]) run(f *flight[T]) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.bg, c.timeout)
	v, renewAt, usable, err := c.fetch(ctx, c.note)
	cancel()
	c.mu.Lock()
	if err == nil {
		e := &entry[T]{v: v, renewAt: renewAt, usableUntil: usable}
		c.cur.Store(e)
		f.e = e
		c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
	} else {
		f.err = err
		c.failures++
		c.lastErr = err
		// Background refreshes back off after failures: 1 s, 2 s, ... 30 s.
		c.retryAt = c.now().Add(min(time.Second<<min(c.failures-1, 5), 30*time.Second))
	}
	c.flight = nil
	c.mu.Unlock()
	close(f.done)
}

// note records the error of a failed attempt of the running fetch.
func (c *cell[T]) note(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *cell[T]) wait(ctx context.Context, f *flight[T]) (T, error) {
	var zero T
	select {
	case <-f.done:
		if f.err != nil {
			return zero, f.err
		}
		return f.e.v, nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	if last == nil {
		return zero, fmt.Errorf("daps: no %s yet: %w (the DAPS has not answered)", c.name, ctx.Err())
	}
	return zero, &waitError{what: c.name, ctxErr: ctx.Err(), last: last}
}

// waitError is returned to a caller whose context ended while it waited
// for a fetch; it names the latest failure seen from the DAPS.
type waitError struct {
	what   string
	ctxErr error
	last   error
}

func (e *waitError) Error() string {
	return fmt.Sprintf("daps: no %s yet: %v; latest DAPS error: %v", e.what, e.ctxErr, e.last)
}

func (e *waitError) Unwrap() []error { return []error{e.ctxErr, e.last} }
