package ssehub

import "time"

// Metrics receives counts of what a Hub does, for monitoring: set it as
// Config.Metrics. Package promhub implements it with Prometheus
// collectors. A nil Metrics costs the hub one nil check per call site.
//
// The Hub calls these methods from many goroutines at once, often on the
// path that delivers every event, so they must be safe for concurrent use,
// must not block, and should be cheap (an atomic add).
type Metrics interface {
	// SubscriptionOpened is called when a subscription (an HTTP event
	// stream or a Go Subscription) starts, and SubscriptionClosed when it
	// ends; each opened subscription is closed exactly once.
	SubscriptionOpened()
	SubscriptionClosed()

	// ChannelSubscribed is called when the hub subscribes to a channel at
	// its broker (for the channel's first local subscriber), and
	// ChannelUnsubscribed when it lets the subscription go (after the last).
	ChannelSubscribed()
	ChannelUnsubscribed()

	// EventPublished is called for each message this hub published
	// through its broker.
	EventPublished()

	// EventReceived is called for each event the broker delivered to this
	// hub, once per event whatever the number of local subscribers.
	EventReceived()

	// EventsWritten is called after n events have been flushed to an HTTP
	// event stream, replayed events included.
	EventsWritten(n int)

	// WriteLatency is called for each live event flushed to an HTTP event
	// stream, with the time from its publication (Event.Time) to the
	// flush. Replayed events are not measured.
	WriteLatency(d time.Duration)

	// SlowSubscriber is called when a subscriber has fallen so far behind
	// that the events it had yet to read left the memory of the hub (it
	// goes on from the broker's history, or with a reset event), and when
	// a stream is cut because its client took no data for WriteTimeout.
	SlowSubscriber()

	// Replay is called for each subscription that asked to resume from a
	// last event id, and for each that resumed after falling behind, with
	// what came of it.
	Replay(outcome ReplayOutcome)
}

// ReplayOutcome says what came of a request to resume from a last event id.
type ReplayOutcome int

// Replay outcomes.
const (
	// ReplayResumed means the retained events after the id were replayed.
	ReplayResumed ReplayOutcome = iota
	// ReplayReset means the id was unknown or its successors evicted, or
	// the broker keeps no history: the subscriber got a ResetType event.
	ReplayReset
	// ReplayFailed means the broker failed to replay and the subscription
	// was refused.
	ReplayFailed
)

// String returns the outcome's name: "resumed", "reset" or "failed".
func (o ReplayOutcome) String() string {
	switch o {
	case ReplayResumed:
		return "resumed"
	case ReplayReset:
		return "reset"
	case ReplayFailed:
		return "failed"
	}
	return "unknown"
}

// BrokerMetrics receives what a Broker that holds a connection to a server
// (Redis, NATS) goes through, for monitoring. Such a broker takes one in its
// configuration; package promhub implements it alongside Metrics. Its
// methods must be safe for concurrent use and must not block.
type BrokerMetrics interface {
	// BrokerError is called when a call to the broker's server fails, or
	// the connection it holds breaks.
	BrokerError()
	// BrokerReconnected is called when the broker has a working connection
	// and live subscriptions again after losing them.
	BrokerReconnected()
}
