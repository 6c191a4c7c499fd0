package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/pkg/metrics"
)

// TestRefusalReasonsInitialised: every reason the gateway counts a
// refusal under exists at 0 before the first refusal, so that rate()
// sees it. The reasons of errors are defined here, the initial series in
// pkg/metrics: this keeps them together.
func TestRefusalReasonsInitialised(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					if have[mf.GetName()] == nil {
						have[mf.GetName()] = map[string]bool{}
					}
					have[mf.GetName()][l.GetValue()] = true
				}
			}
		}
	}
	for _, r := range []string{"origin", "draining", "bad_handshake", errGatewayFull.Error(), errIPFull.Error(),
		errPendingFull.Error(), errPendingIPFull.Error()} {
		if !have["roomcast_connections_refused_total"][r] {
			t.Errorf(`roomcast_connections_refused_total{reason=%q} is not initialised`, r)
		}
	}
}
