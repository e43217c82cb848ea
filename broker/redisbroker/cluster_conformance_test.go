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

// TestClusterOptions: on Redis Cluster a prefix with a hash tag, which
// would put every channel in one slot, and the flask-sse envelope, which
// no Python reader could read from a sharded channel, are refused.
func TestClusterOptions(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	for _, opts := range []redisbroker.Options{{Prefix: "{ssehub}:"}, {Prefix: "a}"}, {Envelope: redisbroker.EnvelopeFlaskSSE}} {
		if b, err := redisbroker.New(cc, opts); err == nil {
			b.Close(context.Background())
			t.Errorf("New with %+v on a cluster: no error", opts)
		}
	}
	b, err := redisbroker.New(cc, redisbroker.Options{Prefix: "app:"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if !b.ChannelOrder() {
		t.Error("ChannelOrder() = false on a cluster")
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	one, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close(context.Background())
	if one.ChannelOrder() {
		t.Error("ChannelOrder() = true on one Redis, whose counter orders all channels")
	}
}
