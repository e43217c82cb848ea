package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
)

// openRedisBroker opens a Redis broker with a client of its own on the
// server u names: redis://[user:password@]host:port/db, or rediss:// for
// TLS. Query parameters are go-redis client options, such as
// ?dial_timeout=3s&pool_size=20.
func openRedisBroker(u *url.URL, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	ro, err := redis.ParseURL(u.String())
	if err != nil {
		// The message may quote the URL; never print its password.
		msg := err.Error()
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
		return nil, nil, fmt.Errorf("broker URL %q: %s", u.Redacted(), msg)
	}
	// go-redis logs to stderr by itself; its messages (failed dials) repeat
	// what the broker reports, so they go to the debug level. The logger is
	// process-wide, and this process opens one broker.
	redis.SetLogger(redisLogger{opt.logger})
	// Deadlines of the hub (publish timeout, readiness) bound the reads
	// from Redis too, instead of go-redis's own read timeout alone.
	ro.ContextTimeoutEnabled = true
	client := redis.NewClient(ro)
	return newRedisBroker(client, opt)
}

// newRedisBroker returns a Redis broker on client, whatever the topology,
// and a func that closes both; it closes client when the broker cannot be
// made.
func newRedisBroker(client redis.UniversalClient, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	b, err := redisbroker.New(client, opt.redisOptions())
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	closeAll := func(ctx context.Context) error {
		return errors.Join(b.Close(ctx), client.Close())
	}
	return b, closeAll, nil
}

// redisOptions returns the options of a Redis broker, whatever the
// topology.
func (opt brokerOptions) redisOptions() redisbroker.Options {
	return redisbroker.Options{
		HistorySize:  opt.historySize,
		HistoryAge:   opt.historyAge,
		HistoryBytes: opt.historyBytes,
		Logger:       opt.logger,
		Metrics:      opt.metrics,
		Envelope:     opt.envelope,
		WaitReplicas: opt.waitReplicas,
		WaitTimeout:  opt.waitTimeout,
	}
}

// redisLogger passes go-redis's log messages to slog at the debug level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log != nil {
		l.log.LogAttrs(ctx, slog.LevelDebug, "redis client", slog.String("detail", fmt.Sprintf(format, v...)))
	}
}
