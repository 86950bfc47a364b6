package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// MustCollector finds a labelled child of one of the unexported vectors.
func MustCollector(t *testing.T, m *Metrics, name string, labels ...string) prometheus.Collector {
	t.Helper()
	switch name {
	case "idscp2_handshakes_total":
		return m.handshakes.WithLabelValues(labels...)
	case "idscp2_dat_verifications_total":
		return m.datVerifications.WithLabelValues(labels...)
	case "idscp2_messages_total":
		return m.messages.WithLabelValues(labels...)
	case "idscp2_closes_total":
		return m.closes.WithLabelValues(labels...)
	case "idscp2_connections_open":
		return m.connectionsOpen.WithLabelValues(labels...)
	}
	t.Fatalf("unknown metric %s", name)
	return nil
}
