package ssehub_test

import (
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/brokertest"
)

func TestMemoryBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(*testing.T) ssehub.Broker {
		return ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
	})
}
