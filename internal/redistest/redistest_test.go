package redistest_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub/internal/redistest"
)

func TestStopStart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered while the server is stopped")
	}
	srv.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	// Without the append-only file a restarted server is empty.
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k = %d, %v; want 0", n, err)
	}
}

func TestAppendOnlyKeepsData(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	port := srv.Port()
	srv.Restart()
	if srv.Port() != port {
		t.Fatalf("port changed from %d to %d", port, srv.Port())
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET k after restart = %q, %v; want \"v\"", v, err)
	}
}

func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 100 * time.Millisecond})
	defer c.Close()
	ctx := t.Context()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("SET answered while the server is frozen")
	}
	srv.Thaw()
	// The SET sent while frozen is carried out once thawed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(ctx, "k").Result()
		if err == nil && v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET k after thaw = %q, %v; want \"v\"", v, err)
		}
	}
	// Cleanup stops a frozen server too.
	srv.Freeze()
}
