package natsbroker_test

import (
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/brokertest"
	"github.com/ssehub/ssehub/broker/natsbroker"
	"github.com/ssehub/ssehub/internal/natstest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	brokertest.Run(t, func(t *testing.T) ssehub.Broker {
		return newBroker(t, srv.URL(), natsbroker.Options{})
	})
}

// TestConformanceCluster runs the suite on a 3-node cluster, where the
// stream has 3 replicas and requests cross routes between servers.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	brokertest.Run(t, func(t *testing.T) ssehub.Broker {
		return newBroker(t, c.URL(), natsbroker.Options{})
	})
}
