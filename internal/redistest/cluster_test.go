package redistest_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub/internal/redistest"
)

// TestClusterFailover starts a cluster, writes a key, kills its master
// and waits for a replica to take over, then restarts the old master,
// which comes back as a replica.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	if n := len(c.Masters()); n != 3 {
		t.Fatalf("%d masters; want 3", n)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	ctx := t.Context()
	if err := cc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := c.MasterOf("k")
	// WAIT: the replica has the key before its master dies.
	master, err := cc.MasterForKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := master.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	old.Kill()
	next := c.WaitFailover("k", old)
	if next == old {
		t.Fatal("the killed master still serves the key")
	}
	nc := redis.NewClient(&redis.Options{Addr: next.Addr()})
	defer nc.Close()
	if v, err := nc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET k on the new master = %q, %v", v, err)
	}
	old.Start()
	c.WaitHealthy()
	if got := c.MasterOf("k"); got != next {
		t.Fatalf("master of k is %s after the old one came back; want %s", got.Addr(), next.Addr())
	}
}
