package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/ssehub/ssehub"
)

// brokerOptions are the settings a broker URL leaves to flags.
type brokerOptions struct {
	historySize  int
	historyAge   time.Duration
	historyBytes int64
	logger       *slog.Logger
	metrics      ssehub.BrokerMetrics // nil counts nothing
	envelope     string               // Redis: the shape of what is published (--redis-envelope)
}

// redisEnvelopeUsage documents --redis-envelope for serve and publish.
const redisEnvelopeUsage = "with a Redis broker, the `shape` of what is published on a channel for Python readers on the same Redis: invenio (invenio-sse's reader) or flask-sse (flask-sse's reader, which fails on other keys)"

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
// (see openRedisBroker). The returned close func releases what openBroker
// created.
func openBroker(ctx context.Context, raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
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
	return nil, nil, fmt.Errorf("broker URL %q: unsupported scheme %q (use memory:, redis:// or rediss://)", u.Redacted(), u.Scheme)
}

// redactURL returns raw with any password replaced, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}
