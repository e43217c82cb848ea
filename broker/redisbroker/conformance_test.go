package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/brokertest"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	brokertest.Run(t, func(t *testing.T) ssehub.Broker {
		return newBroker(t, srv, redisbroker.Options{})
	})
}

// TestConformanceSentinel runs the suite through go-redis's failover
// client, on a master the sentinels name.
func TestConformanceSentinel(t *testing.T) {
	set := redistest.StartSentinel(t)
	brokertest.Run(t, func(t *testing.T) ssehub.Broker {
		return newSentinelBroker(t, set, redisbroker.Options{})
	})
}

// newClient returns a client of srv that the test closes when it ends. It
// retries briefly, so that commands fail fast while a test has stopped
// Redis.
func newClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(testOptions(srv))
	t.Cleanup(func() { c.Close() })
	return c
}

// newBroker returns a broker with a client of its own, closed when the
// test ends.
func newBroker(t testing.TB, srv *redistest.Server, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	b, err := redisbroker.New(newClient(t, srv), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func testOptions(srv *redistest.Server) *redis.Options {
	return &redis.Options{
		Addr:               srv.Addr(),
		MinRetryBackoff:    time.Millisecond,
		MaxRetryBackoff:    5 * time.Millisecond,
		DialerRetries:      1,
		DialerRetryTimeout: time.Millisecond,
	}
}
