// Package promhub exports a Hub's metrics to Prometheus.
//
// New registers ssehub's collectors with a registry the caller owns and
// returns a Metrics to set as ssehub.Config.Metrics, and to hand to a broker
// that takes ssehub.BrokerMetrics. The package keeps no global state and
// registers nothing by itself:
//
//	reg := prometheus.NewRegistry()
//	m, err := promhub.New(reg)
//	...
//	hub, err := ssehub.New(ssehub.Config{Metrics: m})
//	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// No metric has a label whose values clients choose, such as a channel
// name, so the number of series stays fixed however the hub is used.
package promhub

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ssehub/ssehub"
)

// Namespace prefixes the name of every metric.
const Namespace = "ssehub"

// LatencyBuckets are the upper bounds, in seconds, of the publish-to-write
// latency histogram: from a local fan-out (well under a millisecond) to a
// subscriber served seconds late.
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds ssehub's Prometheus collectors. It implements
// ssehub.Metrics and ssehub.BrokerMetrics, and is safe for concurrent use.
type Metrics struct {
	streams          prometheus.Gauge
	streamsTotal     prometheus.Counter
	channels         prometheus.Gauge
	published        prometheus.Counter
	received         prometheus.Counter
	written          prometheus.Counter
	slow             prometheus.Counter
	replays          [3]prometheus.Counter // by ssehub.ReplayOutcome
	brokerErrors     prometheus.Counter
	brokerReconnects prometheus.Counter
	latency          prometheus.Histogram
}

var (
	_ ssehub.Metrics       = (*Metrics)(nil)
	_ ssehub.BrokerMetrics = (*Metrics)(nil)
)

// New creates the collectors and registers them with reg. It fails when reg
// already holds collectors of the same names, for example when New is called
// twice with one registry.
func New(reg prometheus.Registerer) (*Metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
	}
	m := &Metrics{
		streams:          gauge("streams_open", "Subscriptions open now: HTTP event streams and Go subscriptions."),
		streamsTotal:     counter("streams_opened_total", "Subscriptions opened."),
		channels:         gauge("channels_subscribed", "Channels this hub is subscribed to at its broker."),
		published:        counter("events_published_total", "Messages published through this hub."),
		received:         counter("events_received_total", "Events the broker delivered to this hub, once per event."),
		written:          counter("events_written_total", "Events written to HTTP event streams, once per stream."),
		slow:             counter("slow_subscribers_total", "Subscribers that fell behind the events the hub keeps, or were cut for taking no data within the write timeout."),
		brokerErrors:     counter("broker_errors_total", "Failed calls to the broker's server and broken broker connections."),
		brokerReconnects: counter("broker_reconnects_total", "Times the broker got its connection and subscriptions back after losing them."),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "publish_to_write_seconds",
			Help:      "Time from an event's publication to its flush to an HTTP event stream, for live events.",
			Buckets:   LatencyBuckets,
		}),
	}
	replays := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "replays_total",
		Help:      "Requests to resume from a last event id, by outcome: resumed, reset (unknown or evicted id) or failed.",
	}, []string{"outcome"})
	for o := range m.replays {
		// Resolved once, so the hot path does no label lookup, and every
		// outcome is exported from the start, at zero.
		m.replays[o] = replays.WithLabelValues(ssehub.ReplayOutcome(o).String())
	}
	for _, c := range []prometheus.Collector{
		m.streams, m.streamsTotal, m.channels, m.published, m.received, m.written,
		m.slow, replays, m.brokerErrors, m.brokerReconnects, m.latency,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// SubscriptionOpened implements ssehub.Metrics.
func (m *Metrics) SubscriptionOpened() { m.streams.Inc(); m.streamsTotal.Inc() }

// SubscriptionClosed implements ssehub.Metrics.
func (m *Metrics) SubscriptionClosed() { m.streams.Dec() }

// ChannelSubscribed implements ssehub.Metrics.
func (m *Metrics) ChannelSubscribed() { m.channels.Inc() }

// ChannelUnsubscribed implements ssehub.Metrics.
func (m *Metrics) ChannelUnsubscribed() { m.channels.Dec() }

// EventPublished implements ssehub.Metrics.
func (m *Metrics) EventPublished() { m.published.Inc() }

// EventReceived implements ssehub.Metrics.
func (m *Metrics) EventReceived() { m.received.Inc() }

// EventsWritten implements ssehub.Metrics.
func (m *Metrics) EventsWritten(n int) { m.written.Add(float64(n)) }

// WriteLatency implements ssehub.Metrics.
func (m *Metrics) WriteLatency(d time.Duration) { m.latency.Observe(d.Seconds()) }

// SlowSubscriber implements ssehub.Metrics.
func (m *Metrics) SlowSubscriber() { m.slow.Inc() }

// Replay implements ssehub.Metrics.
func (m *Metrics) Replay(o ssehub.ReplayOutcome) {
	if int(o) >= 0 && int(o) < len(m.replays) {
		m.replays[o].Inc()
	}
}

// BrokerError implements ssehub.BrokerMetrics.
func (m *Metrics) BrokerError() { m.brokerErrors.Inc() }

// BrokerReconnected implements ssehub.BrokerMetrics.
func (m *Metrics) BrokerReconnected() { m.brokerReconnects.Inc() }
