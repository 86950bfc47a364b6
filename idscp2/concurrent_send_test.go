package idscp2

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConcurrentSends: many goroutines sending on one connection each get
// their own message acknowledged; none waits for a signal another took.
func TestConcurrentSends(t *testing.T) {
	checkNoLeak(t)
	p := connectPair(t, testConfig(testPKI.Client), testConfig(testPKI.Server))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const senders, each = 50, 20
	got := make(map[string]int)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range senders * each {
			m, err := p.server.Recv(ctx)
			if err != nil {
				return
			}
			got[string(m)]++
		}
	}()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := p.client.Send(ctx, fmt.Appendf(nil, "%d/%d", g, i)); err != nil {
					t.Errorf("send %d/%d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-done
	if len(got) != senders*each {
		t.Fatalf("received %d distinct messages, want %d", len(got), senders*each)
	}
	for m, n := range got {
		if n != 1 {
			t.Errorf("%s received %d times", m, n)
		}
	}
}
