package fsm_test

import (
	"testing"

	"github.com/idscp2-sidecar/idscp2-sidecar/fsm"
)

// BenchmarkStep runs the steady-state ESTABLISHED cycle of one machine: the
// application sends (IdscpData out, ACK timer armed), the peer ACKs it, the
// peer's data arrives (delivered and ACKed). One iteration is three Steps;
// the bits alternate as on the wire.
func BenchmarkStep(b *testing.B) {
	m := fsm.New(testConfig())
	steps := []fsm.Event{
		evStart(),
		evHello([]string{dummy2}, []string{dummy2}),
		{Kind: fsm.EvProverOK, Gen: 1},
		{Kind: fsm.EvVerifierOK, Gen: 1},
	}
	for _, ev := range steps {
		if _, res := m.Step(ev, nil); res != fsm.OK {
			b.Fatalf("%v: %v", ev.Kind, res)
		}
	}
	if m.State() != fsm.Established {
		b.Fatalf("state %v", m.State())
	}
	payload := []byte("steady-state payload")
	send := fsm.Event{Kind: fsm.EvSend, Payload: payload}
	ack := fsm.Event{Kind: fsm.EvAck}
	data := fsm.Event{Kind: fsm.EvData, Payload: payload}
	acts := make([]fsm.Action, 0, 8)
	bit := false
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ack.Bit, data.Bit = bit, bit
		acts, _ = m.Step(send, acts[:0])
		acts, _ = m.Step(ack, acts[:0])
		acts, _ = m.Step(data, acts[:0])
		bit = !bit
	}
	b.StopTimer()
	if m.State() != fsm.Established || len(acts) != 2 || acts[0].Kind != fsm.ActDeliver {
		b.Fatalf("cycle broke: %v %v", m.State(), acts)
	}
}
