package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
)

// brokerOptions are the settings a broker URL leaves to flags.
type brokerOptions struct {
	historySize  int
	historyAge   time.Duration
	historyBytes int64
	logger       *slog.Logger
	metrics      ssehub.BrokerMetrics // nil counts nothing
	envelope     string               // Redis: the shape of what is published (--redis-envelope)
	waitReplicas int                  // Redis: replicas that confirm each publish (--redis-wait-replicas)
	waitTimeout  time.Duration        // Redis: how long to wait for them (--redis-wait-timeout)
	nats         natsOptions
}

// redisEnvelopeUsage documents --redis-envelope for serve and publish.
const redisEnvelopeUsage = "with a Redis broker, the `shape` of what is published on a channel for Python readers on the same Redis: invenio (invenio-sse's reader) or flask-sse (flask-sse's reader, which fails on other keys)"

// Usage of --redis-wait-replicas and --redis-wait-timeout, for serve and
// publish.
const (
	redisWaitReplicasUsage = "with a Redis broker: `replicas` that must confirm each publish (Redis WAIT) before it answers; when fewer do in time it answers 504, and sending it again with the same Idempotency-Key is safe. 0 waits for none"
	redisWaitTimeoutUsage  = "with --redis-wait-replicas: how long a publish waits for the replicas; less than the Redis client's read timeout (5s, or ?read_timeout= in the broker URL)"
)

// checkRedisWait refuses values of --redis-wait-replicas and
// --redis-wait-timeout that Redis cannot take.
func checkRedisWait(fs *flagSet, replicas int, timeout time.Duration) error {
	switch {
	case replicas < 0:
		return fmt.Errorf("%s: %q must be 0 or more", fs.source("redis-wait-replicas"), fs.Lookup("redis-wait-replicas").Value)
	case timeout < time.Millisecond:
		return fmt.Errorf("%s: %q must be 1ms or more", fs.source("redis-wait-timeout"), fs.Lookup("redis-wait-timeout").Value)
	}
	return nil
}

// checkRedisEnvelope refuses an unknown --redis-envelope at once.
func checkRedisEnvelope(v string) error {
	switch v {
	case "invenio", "flask-sse":
		return nil
	}
	return fmt.Errorf("--redis-envelope %q: use invenio or flask-sse", v)
}

// openBroker opens the broker a URL names. "memory:" (or "") is the
// embedded in-memory broker; redis:// and rediss:// name a Redis server
// (see openRedisBroker); nats:// and tls:// name NATS servers, several
// separated by commas (see openNATSBroker); redis-sentinel:// names the
// sentinels of a Redis master (see openSentinelBroker); redis-cluster://
// names nodes of a Redis Cluster (see openRedisClusterBroker). The returned close func
// releases what openBroker created.
func openBroker(ctx context.Context, raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	if isNATSURL(raw) {
		return openNATSBroker(raw, opt)
	}
	if isSentinelURL(raw) {
		return openSentinelBroker(raw, opt)
	}
	if isRedisClusterURL(raw) {
		return openRedisClusterBroker(raw, opt)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, errors.New("broker URL is not a valid URL")
	}
	switch u.Scheme {
	case "", "memory":
		b := ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: opt.historySize, HistoryAge: opt.historyAge, HistoryBytes: opt.historyBytes})
		return b, b.Close, nil
	case "redis", "rediss":
		return openRedisBroker(u, opt)
	}
	return nil, nil, fmt.Errorf("broker URL %q: unsupported scheme %q (use memory:, redis://, rediss://, redis-sentinel://, redis-cluster://, nats:// or tls://)", u.Redacted(), u.Scheme)
}

// redactURL returns raw with any password replaced, for logs.
func redactURL(raw string) string {
	if isNATSURL(raw) {
		if _, shown, err := splitNATSURL(raw); err == nil {
			return shown
		}
		return "(invalid URL)"
	}
	if isSentinelURL(raw) {
		if s, err := parseSentinelURL(raw); err == nil {
			return s.shown
		}
		return "(invalid URL)"
	}
	if isRedisClusterURL(raw) {
		if _, shown, err := parseRedisClusterURL(raw); err == nil {
			return shown
		}
		return "(invalid URL)"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// Bounds of watchBroker's checks.
const (
	brokerCheckTimeout  = 3 * time.Second
	brokerCheckFirst    = 500 * time.Millisecond
	brokerCheckMaxDelay = 10 * time.Second
)

// watchBroker checks, once the hub listens, that its broker answers, and
// warns when it does not: the hub serves anyway (open streams keep their
// heartbeats, new ones are told when to come back, publishes get 503) and
// its broker reconnects by itself. watchBroker then checks again, backing
// off, until the broker answers, says so and returns. It returns at once
// for a broker that cannot check itself, and when ctx ends.
func watchBroker(ctx context.Context, logger *slog.Logger, b ssehub.Broker, rawURL string) {
	c, ok := b.(ssehub.Checker)
	if !ok {
		return
	}
	delay, warned := brokerCheckFirst, false
	for {
		cctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
		err := c.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if warned {
				logger.Info("broker reachable", "broker", redactURL(rawURL))
			}
			return
		}
		msg := strings.TrimPrefix(err.Error(), "ssehub: ")
		if !warned {
			logger.Warn("broker unreachable; serving anyway and retrying",
				"broker", redactURL(rawURL), "error", msg, "hint", brokerHint(rawURL))
			warned = true
		} else {
			logger.Debug("broker still unreachable", "broker", redactURL(rawURL), "error", msg)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, brokerCheckMaxDelay)
	}
}

// brokerHint says what to check when the broker at rawURL does not answer.
func brokerHint(rawURL string) string {
	if s, err := parseSentinelURL(rawURL); isSentinelURL(rawURL) && err == nil {
		return fmt.Sprintf("are the sentinels at %s running, and do they name a master %q that answers? /readyz answers 503 until it answers",
			strings.Join(s.opt.SentinelAddrs, ","), s.opt.MasterName)
	}
	if isRedisClusterURL(rawURL) {
		return "are the cluster's nodes running and reachable? /readyz answers 503 until the masters of the hub's channels answer"
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "check --broker"
	}
	return fmt.Sprintf("is the server at %s running and reachable? /readyz answers 503 until it answers", u.Host)
}

// directBroker reports whether a publish goes straight into the broker at
// raw rather than through a hub: it does for Redis and NATS, which hubs
// share, and not for the in-memory broker, which lives inside one hub.
func directBroker(raw string) (bool, error) {
	if raw == "" {
		return false, nil
	}
	if isNATSURL(raw) {
		_, _, err := splitNATSURL(raw)
		return err == nil, err
	}
	if isSentinelURL(raw) {
		_, err := parseSentinelURL(raw)
		return err == nil, err
	}
	if isRedisClusterURL(raw) {
		_, _, err := parseRedisClusterURL(raw)
		return err == nil, err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false, errors.New("--broker is not a valid URL")
	}
	switch u.Scheme {
	case "memory":
		return false, nil
	case "redis", "rediss":
		return true, nil
	}
	return false, fmt.Errorf("--broker %q: publish goes straight into redis://, rediss://, redis-sentinel://, redis-cluster://, nats:// or tls:// only", u.Redacted())
}

// publishBroker publishes m into the broker at raw, without a hub, and
// returns the event's id.
func publishBroker(ctx context.Context, raw string, m ssehub.Message, opt brokerOptions) (string, error) {
	b, closeBroker, err := openBroker(ctx, raw, opt)
	if err != nil {
		return "", errors.New(strings.TrimPrefix(err.Error(), "ssehub: "))
	}
	defer closeBroker(context.WithoutCancel(ctx))
	e, err := b.Publish(ctx, m)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "ssehub: ")
		switch {
		case errors.Is(err, redisbroker.ErrNotReplicated):
			return "", fmt.Errorf("%w: %s", errNotReplicated, msg)
		case errors.Is(err, ssehub.ErrOutcomeUnknown):
			return "", fmt.Errorf("%w: %s", errOutcomeUnknown, msg)
		case errors.Is(err, ssehub.ErrUnavailable):
			return "", fmt.Errorf("%w: %s", errNotPublished, msg)
		}
		return "", errors.New(msg)
	}
	return e.ID, nil
}
