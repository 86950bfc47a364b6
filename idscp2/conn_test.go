package idscp2

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
)

func TestEchoDummy2(t *testing.T) {
	checkNoLeak(t)
	p := connectPair(t, testConfig(testPKI.Client), testConfig(testPKI.Server))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for {
			m, err := p.server.Recv(ctx)
			if err != nil {
				return
			}
			if err := p.server.Send(ctx, m); err != nil {
				return
			}
		}
	}()
	for i := range 20 {
		msg := fmt.Appendf(nil, "message %d", i)
		if err := p.client.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
		got, err := p.client.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("got %q want %q", got, msg)
		}
	}
	if s := p.client.State(); s != fsm.Established {
		t.Fatalf("state %s", s)
	}
	p.client.Close()
	p.server.Close()
	p.ln.Close()
}
