package ssehub

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Defaults for Config fields left at zero.
const (
	DefaultHeartbeat       = 15 * time.Second
	DefaultRetry           = 3 * time.Second
	DefaultQueueSize       = 256
	DefaultMaxMessageBytes = 1 << 20
	DefaultMaxChannels     = 32
	DefaultWriteTimeout    = 10 * time.Second
	DefaultReadTimeout     = 10 * time.Second
	DefaultPublishTimeout  = 5 * time.Second
	subscribeTimeout       = 10 * time.Second
)

// Config configures a Hub. The zero value is ready to use: an in-memory
// broker and the Default* values. For durations and sizes, zero means the
// default and a negative value turns the feature off where that makes sense.
type Config struct {
	// Broker carries events between publishers and hubs. Nil means a
	// MemoryBroker that the Hub creates, owns and closes. A Broker passed in
	// is not closed by the Hub.
	Broker Broker
	// Heartbeat is the interval of the comment lines that keep idle
	// streams open through proxies. Negative disables them.
	Heartbeat time.Duration
	// Retry is sent as "retry:" when a stream opens: how long a browser
	// waits before reconnecting. Negative sends none.
	Retry time.Duration
	// QueueSize is how many events may wait for one subscriber. A
	// subscriber whose queue is full is disconnected, to reconnect and
	// resume; publishers and other subscribers never wait for it.
	QueueSize int
	// MaxMessageBytes bounds a published message's data, and the body of a
	// publish request.
	MaxMessageBytes int
	// MaxChannels bounds how many channels one subscription may name.
	MaxChannels int
	// WriteTimeout bounds each write to a stream; a client that does not
	// read for that long is disconnected. Negative disables it.
	WriteTimeout time.Duration
	// Detach takes each HTTP/1.1 stream over from net/http once its
	// headers are sent (http.ResponseController's Hijack): no goroutine and
	// no buffers stay with an idle stream, and a small pool of writers
	// sends each stream's queued events in one write. An idle stream then
	// costs a few KB instead of over 20. Streams over HTTP/2 or TLS, and
	// ResponseWriters that cannot be hijacked, are served as usual.
	// Middleware that wraps the ResponseWriter sees the headers but not
	// the body of a detached stream, and http.Server.Shutdown does not wait
	// for detached streams: Hub.Close or Hub.Drain ends them.
	Detach bool
	// Logger receives one record per stream opened and closed, and broker
	// errors. Nil discards them.
	Logger *slog.Logger

	// Authorizer decides what HTTP requests may publish and read (see
	// Authorizer). Nil lets every request publish to and read every
	// channel. It does not apply to Hub.Publish and Hub.Subscribe, which
	// serve trusted Go code.
	Authorizer Authorizer
	// MaxConnections bounds how many streams the hub serves at once; a
	// stream over the limit is answered 503 with Retry-After. Zero or
	// negative means no limit.
	MaxConnections int
	// MaxConnectionsPerIP bounds how many streams the hub serves at once to
	// one client address (the host of http.Request.RemoteAddr, or see
	// TrustedProxies); over it,
	// 503 with Retry-After. Zero or negative means no limit.
	MaxConnectionsPerIP int
	// TrustedProxies are the addresses of reverse proxies in front of the
	// hub. For a request from one of them, the client address that
	// MaxConnectionsPerIP counts is taken from X-Forwarded-For: the
	// rightmost entry that is not itself a trusted proxy. From any other
	// address X-Forwarded-For is ignored, so a client cannot pick the
	// address it is counted under.
	TrustedProxies []netip.Prefix
	// ReadTimeout bounds reading the body of a publish request, so a client
	// that sends it slowly cannot hold the handler (408). It does not apply
	// to streams. Negative disables it.
	ReadTimeout time.Duration
	// Metrics receives counts of streams, channels and events, for
	// monitoring (see package promhub). Nil records nothing.
	Metrics Metrics
	// PublishTimeout bounds how long a publish waits for the broker. A
	// publish not confirmed by then fails with ErrOutcomeUnknown (HTTP 504)
	// when it may have been published, or ErrUnavailable (503) when the
	// broker tells it was not. Negative disables it.
	PublishTimeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, DefaultHeartbeat)
	def(&c.Retry, DefaultRetry)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.PublishTimeout, DefaultPublishTimeout)
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	switch {
	case c.QueueSize < 0:
		return c, fmt.Errorf("ssehub: QueueSize %d is negative", c.QueueSize)
	case c.MaxMessageBytes < 0:
		return c, fmt.Errorf("ssehub: MaxMessageBytes %d is negative", c.MaxMessageBytes)
	case c.MaxChannels < 0:
		return c, fmt.Errorf("ssehub: MaxChannels %d is negative", c.MaxChannels)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
