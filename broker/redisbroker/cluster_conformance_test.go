package redisbroker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/brokertest"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

func TestClusterConformance(t *testing.T) {
	c := redistest.StartCluster(t)
	brokertest.Run(t, func(t *testing.T) ssehub.Broker {
		return newClusterBroker(t, c, redisbroker.Options{})
	})
}

// newClusterClient returns a client of cluster c that the test closes
// when it ends. It gives up fast on a node that is down.
func newClusterClient(t testing.TB, c *redistest.Cluster) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:           c.Addrs(),
		MinRetryBackoff: time.Millisecond,
		MaxRetryBackoff: 5 * time.Millisecond,
		DialTimeout:     500 * time.Millisecond,
	})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// newClusterBroker returns a broker on cluster c with a client of its
// own, closed when the test ends.
func newClusterBroker(t testing.TB, c *redistest.Cluster, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	b, err := redisbroker.New(newClusterClient(t, c), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// testLogger returns a logger that writes to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
