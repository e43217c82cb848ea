package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of the nodes StartCluster
// starts: a master that does not answer for this long is failed over.
const ClusterNodeTimeout = 1000 * time.Millisecond

// clusterTimeout bounds how long a cluster may take to become healthy.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of three masters and three replicas that a
// test owns, each node a Server on a free loopback port. Nodes is fixed;
// which node is a master changes with failovers.
type Cluster struct {
	tb    testing.TB
	Nodes []*Server
}

// StartCluster starts six nodes with cluster-enabled, joins them with
// redis-cli --cluster create (three masters, one replica each), waits until
// every slot is served and every replica is attached, and stops the nodes
// when the test ends. The nodes keep serving the slots of other masters
// while one master is down (cluster-require-full-coverage no). Without
// redis-server or redis-cli it skips the test, or fails it when CI=true.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		requireBinary(tb, "redis-cli not found; install it (Debian: apt-get install redis-tools)")
	}
	c := &Cluster{tb: tb}
	args := []string{
		"--cluster-enabled", "yes",
		"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
		"--cluster-require-full-coverage", "no",
		// A replica that lost its master a moment ago may still take over.
		"--cluster-replica-validity-factor", "0",
	}
	for range 6 {
		c.Nodes = append(c.Nodes, StartWith(tb, Options{Args: args}))
	}
	create := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		create = append(create, n.Addr())
	}
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// requireBinary skips the test with msg, or fails it under CI=true.
func requireBinary(tb testing.TB, msg string) {
	tb.Helper()
	if ciRun() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// Addrs returns the host:port of every node.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns a redis-cluster:// URL that lists every node.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// Node returns the node at addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// nodeClient returns a client of one node, without retries, for the test
// to close.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
}

// clusterView is what one node says of the cluster.
type clusterView struct {
	ok       bool
	masters  map[string][][2]int // address -> slot ranges
	replicas map[string]string   // replica address -> its master's address, when attached
}

// view asks the node at addr for its view of the cluster: CLUSTER INFO and
// CLUSTER NODES.
func view(ctx context.Context, addr string) (clusterView, error) {
	cl := nodeClient(addr)
	defer cl.Close()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return clusterView{}, err
	}
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return clusterView{}, err
	}
	v := clusterView{
		ok:       strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384"),
		masters:  map[string][][2]int{},
		replicas: map[string]string{},
	}
	ids := map[string]string{} // node id -> address
	type replica struct{ addr, master string }
	var reps []replica
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		a, _, _ := strings.Cut(f[1], "@")
		ids[f[0]] = a
		flags := f[2]
		if strings.Contains(flags, "fail") || f[7] != "connected" {
			continue
		}
		switch {
		case strings.Contains(flags, "master"):
			var ranges [][2]int
			for _, r := range f[8:] {
				if strings.HasPrefix(r, "[") {
					continue // a slot being migrated
				}
				lo, hi, found := strings.Cut(r, "-")
				l, _ := strconv.Atoi(lo)
				h := l
				if found {
					h, _ = strconv.Atoi(hi)
				}
				ranges = append(ranges, [2]int{l, h})
			}
			v.masters[a] = ranges
		case strings.Contains(flags, "slave"):
			reps = append(reps, replica{a, f[3]})
		}
	}
	for _, r := range reps {
		v.replicas[r.addr] = ids[r.master]
	}
	return v, nil
}

// WaitHealthy waits until every running node reports cluster_state:ok with
// all slots served, all running nodes agree on the masters, and every
// running node that is no master is a replica whose replication link is up.
func (c *Cluster) WaitHealthy() {
	c.tb.Helper()
	if err := c.poll(clusterTimeout, c.healthy); err != nil {
		c.tb.Fatalf("redistest: cluster not healthy after %v: %v", clusterTimeout, err)
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	var first *clusterView
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		v, err := view(ctx, n.Addr())
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if !v.ok {
			return fmt.Errorf("%s: cluster state not ok", n.Addr())
		}
		if first == nil {
			first = &v
		} else if !sameMasters(first.masters, v.masters) {
			return fmt.Errorf("%s: sees other masters", n.Addr())
		}
	}
	if first == nil {
		return fmt.Errorf("no node running")
	}
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		if _, ok := first.masters[n.Addr()]; ok {
			continue
		}
		cl := nodeClient(n.Addr())
		info, err := cl.Info(ctx, "replication").Result()
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("%s: replica not attached", n.Addr())
		}
	}
	return nil
}

func sameMasters(a, b map[string][][2]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// poll calls f until it returns nil or timeout passes, and returns its last
// error.
func (c *Cluster) poll(timeout time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// Slot returns the hash slot of key (CLUSTER KEYSLOT).
func (c *Cluster) Slot(key string) int {
	c.tb.Helper()
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		cl := nodeClient(n.Addr())
		slot, err := cl.ClusterKeySlot(context.Background(), key).Result()
		cl.Close()
		if err == nil {
			return int(slot)
		}
	}
	c.tb.Fatalf("redistest: no node answers CLUSTER KEYSLOT")
	return 0
}

// MasterOf returns the node that a running node names as the master of
// key's slot.
func (c *Cluster) MasterOf(key string) *Server {
	c.tb.Helper()
	slot := c.Slot(key)
	var found *Server
	err := c.poll(clusterTimeout, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if !n.running() {
				continue
			}
			v, err := view(ctx, n.Addr())
			if err != nil {
				continue
			}
			for addr, ranges := range v.masters {
				for _, r := range ranges {
					if r[0] <= slot && slot <= r[1] {
						if found = c.Node(addr); found != nil && found.running() {
							return nil
						}
					}
				}
			}
		}
		return fmt.Errorf("no running master serves slot %d", slot)
	})
	if err != nil {
		c.tb.Fatalf("redistest: %v", err)
	}
	return found
}

// WaitFailover waits until a running node other than old serves key's
// slot as master, and returns it.
func (c *Cluster) WaitFailover(key string, old *Server) *Server {
	c.tb.Helper()
	slot := c.Slot(key)
	var found *Server
	err := c.poll(clusterTimeout, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if !n.running() || n == old {
				continue
			}
			v, err := view(ctx, n.Addr())
			if err != nil {
				return err
			}
			for _, r := range v.masters[n.Addr()] {
				if r[0] <= slot && slot <= r[1] {
					found = n
					return nil
				}
			}
		}
		return fmt.Errorf("slot %d has no new master", slot)
	})
	if err != nil {
		c.tb.Fatalf("redistest: %v", err)
	}
	return found
}

// Masters returns the nodes that serve slots as masters now.
func (c *Cluster) Masters() []*Server {
	c.tb.Helper()
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		v, err := view(context.Background(), n.Addr())
		if err != nil {
			continue
		}
		var out []*Server
		for addr, ranges := range v.masters {
			if len(ranges) > 0 {
				out = append(out, c.Node(addr))
			}
		}
		return out
	}
	c.tb.Fatalf("redistest: no node answers CLUSTER NODES")
	return nil
}

// running reports whether the server's process runs.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

func ciRun() bool { return os.Getenv("CI") == "true" }

// ReplicaOf returns a running node that replicates master, waiting until
// one is attached.
func (c *Cluster) ReplicaOf(master *Server) *Server {
	c.tb.Helper()
	var found *Server
	err := c.poll(clusterTimeout, func(ctx context.Context) error {
		v, err := view(ctx, master.Addr())
		if err != nil {
			return err
		}
		for rep, m := range v.replicas {
			if n := c.Node(rep); m == master.Addr() && n != nil && n.running() {
				found = n
				return nil
			}
		}
		return fmt.Errorf("%s has no replica", master.Addr())
	})
	if err != nil {
		c.tb.Fatalf("redistest: %v", err)
	}
	return found
}

// MoveSlot moves the hash slot of key, with its keys, from its master to
// the master to, as redis-cli --cluster reshard does: the slot is marked
// importing and migrating, its keys are sent with MIGRATE, then every
// master is told its new owner. It waits until the nodes agree.
func (c *Cluster) MoveSlot(key string, to *Server) {
	c.tb.Helper()
	ctx := context.Background()
	slot := c.Slot(key)
	from := c.MasterOf(key)
	if from == to {
		return
	}
	src, dst := nodeClient(from.Addr()), nodeClient(to.Addr())
	defer src.Close()
	defer dst.Close()
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		c.tb.Fatalf("redistest: %v", err)
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		c.tb.Fatalf("redistest: %v", err)
	}
	must := func(err error) {
		c.tb.Helper()
		if err != nil {
			c.tb.Fatalf("redistest: move slot %d: %v", slot, err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	host, port, _ := strings.Cut(to.Addr(), ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	for _, m := range c.Masters() {
		if m != from && m != to {
			cl := nodeClient(m.Addr())
			must(cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
			cl.Close()
		}
	}
	c.WaitHealthy()
	if got := c.MasterOf(key); got != to {
		c.tb.Fatalf("redistest: slot %d is on %s after the move; want %s", slot, got.Addr(), to.Addr())
	}
}
