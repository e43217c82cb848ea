package redistest_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub/internal/redistest"
)

// TestSentinelFailover kills the master and checks that the sentinels
// promote the replica, that a failover client follows it with the data
// written before, and that the old master rejoins as a replica.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinel(t)
	old := set.Master()
	if old != set.Nodes()[0] {
		t.Fatalf("master %s, want the first node %s", old.Addr(), set.Nodes()[0].Addr())
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: set.SentinelAddrs()})
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The replica has the key before the master dies.
	if err := c.Wait(ctx, 1, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	old.Kill()
	promoted := set.WaitFailover(old, 30*time.Second)
	if promoted != set.Nodes()[1] {
		t.Fatalf("promoted %s, want the replica %s", promoted.Addr(), set.Nodes()[1].Addr())
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := c.Get(ctx, "k").Result()
		if err == nil && v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET k through the failover client after failover: %q, %v", v, err)
		}
		<-tick.C
	}
	set.Rejoin(old)
	r := redis.NewClient(&redis.Options{Addr: old.Addr()})
	defer r.Close()
	if v, err := r.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET k on the rejoined node: %q, %v", v, err)
	}
	if err := r.Set(ctx, "k", "w", 0).Err(); err == nil {
		t.Fatal("SET on the rejoined node succeeded; want READONLY")
	}
	want := "redis-sentinel://" + set.SentinelAddrs()[0] + "," + set.SentinelAddrs()[1] + "," + set.SentinelAddrs()[2] + "/" + redistest.MasterName
	if set.URL() != want {
		t.Fatalf("URL %q, want %q", set.URL(), want)
	}
}

// TestSentinelFailoverAfterStall kills the master while the sentinels are
// not scheduled for longer than their TILT trigger, as on a loaded test
// machine, and checks that they still promote the replica within the
// time the failover tests wait: they leave TILT mode after seconds, not
// Redis's default 30.
func TestSentinelFailoverAfterStall(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinel(t)
	old := set.Master()
	old.Kill()
	set.Stall(2500 * time.Millisecond)
	if promoted := set.WaitFailover(old, 20*time.Second); promoted != set.Nodes()[1] {
		t.Fatalf("promoted %s, want the replica %s", promoted.Addr(), set.Nodes()[1].Addr())
	}
}
