package redisbroker

// noMetrics is the ssehub.BrokerMetrics of a Broker given none.
type noMetrics struct{}

func (noMetrics) BrokerError()       {}
func (noMetrics) BrokerReconnected() {}
