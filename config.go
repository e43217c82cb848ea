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
	DefaultBacklog         = DefaultHistorySize
	DefaultBacklogBytes    = DefaultHistoryBytes
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
	// Backlog is how many recent events of each channel the hub keeps in
	// memory for its subscribers when the broker does not keep them in
	// this process (a remote broker, or a MemoryBroker without history; a
	// MemoryBroker's history is read directly). Subscribers read them at
	// their own pace; one that falls further behind goes on from the
	// broker's history, or with a ResetType event, as a client that
	// reconnects would. Zero means DefaultBacklog.
	Backlog int
	// BacklogBytes bounds the memory of those events, over all channels;
	// one channel may take at most a quarter of it. Zero means
	// DefaultBacklogBytes.
	BacklogBytes int64
	// MaxMessageBytes bounds a published message's data, and the body of a
	// publish request.
	MaxMessageBytes int
	// MaxChannels bounds how many channels one subscription may name.
	MaxChannels int
	// WriteTimeout bounds how long a stream may wait for its client to
	// take what it writes; a client that takes nothing for that long
	// (between half of it and all of it, as the hub moves the deadline on
	// only now and then) is disconnected. Negative disables it.
	WriteTimeout time.Duration
	// Detach takes each HTTP/1.x stream over from net/http once its
	// headers are sent (http.ResponseController's Hijack): no goroutine and
	// no buffers stay with an idle stream, and a small pool of writers
	// sends each stream everything it has to send in one write. An idle
	// stream then costs a few KB instead of over 20. Streams over HTTP/2 or
	// TLS, and ResponseWriters that cannot be hijacked, are served as usual.
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
	if c.Backlog == 0 {
		c.Backlog = DefaultBacklog
	}
	if c.BacklogBytes == 0 {
		c.BacklogBytes = DefaultBacklogBytes
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	switch {
	case c.Backlog < 0:
		return c, fmt.Errorf("ssehub: Backlog %d is negative", c.Backlog)
	case c.BacklogBytes < 0:
		return c, fmt.Errorf("ssehub: BacklogBytes %d is negative", c.BacklogBytes)
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
