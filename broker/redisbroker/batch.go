package redisbroker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Publishes that come while others are on their way to Redis go together:
// their script calls are written as one pipeline, on one connection, and
// read back in one go. A publish that finds no pipeline on its way goes at
// once, alone; under load, the calls that queued meanwhile go in the next
// pipeline. Redis runs each call as it would alone, so every publish keeps
// its own idempotency key, attempt and reply; what is shared is the round
// trip, the system calls on both sides and, with Options.WaitReplicas, one
// WAIT after the batch's calls, which covers them all.
const (
	// maxFlights is how many pipelines one broker has on their way at
	// once. Two keep Redis busy while the hub reads the answers of one
	// and writes the next; more only split the calls into smaller batches.
	maxFlights = 2
	// maxBatch bounds the calls of one pipeline, and maxBatchBytes their
	// arguments' bytes (a call larger than that goes alone), so that a
	// burst of large messages does not make one huge write and reply.
	maxBatch      = 128
	maxBatchBytes = 1 << 20
)

// call is one script call of a publish, run in a pipeline with others.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	bytes  int             // what the arguments weigh, for maxBatchBytes
	ctx    context.Context // the caller's: a call whose ctx ended stays out

	// Set by the flight before done is closed.
	reply []int64
	err   error
	// With WAIT: the replicas that confirmed every write of the pipeline
	// up to this call's, or why WAIT did not answer.
	replicas int64
	waitErr  error
	done     chan struct{}
}

// batcher gathers calls into pipelines.
type batcher struct {
	client   redis.UniversalClient
	cluster  *redis.ClusterClient // when client is one: a WAIT goes to each master of the batch
	replicas int                  // WAIT for this many replicas after the calls; 0: no WAIT
	timeout  time.Duration        // WAIT's timeout

	mu      sync.Mutex
	queue   []*call
	flights int // pipelines on their way, each a goroutine running fly
}

// do runs c, in a pipeline with the calls that queue with it, and returns
// once its reply is in c, or with ctx's error as soon as ctx ends, as
// bounded does: the call may then still reach Redis, and the caller must
// not read c.
func (q *batcher) do(ctx context.Context, c *call) error {
	c.ctx, c.done = ctx, make(chan struct{})
	q.mu.Lock()
	q.queue = append(q.queue, c)
	start := q.flights < maxFlights
	if start {
		q.flights++
	}
	q.mu.Unlock()
	if start {
		go q.fly()
	}
	if ctx.Done() == nil {
		<-c.done
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fly sends pipelines while calls wait.
func (q *batcher) fly() {
	for {
		q.mu.Lock()
		batch := q.take()
		if len(batch) == 0 {
			q.flights--
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		q.run(batch)
	}
}

// take removes the next batch from the queue, leaving out the calls whose
// caller has given up: nothing waits for their reply, and the caller
// settles them with fence.lua. q.mu must be held.
func (q *batcher) take() []*call {
	var batch []*call
	n, size := 0, 0
	for ; n < len(q.queue) && len(batch) < maxBatch; n++ {
		c := q.queue[n]
		if c.ctx.Err() != nil {
			continue
		}
		if len(batch) > 0 && size+c.bytes > maxBatchBytes {
			break
		}
		batch = append(batch, c)
		size += c.bytes
	}
	rest := copy(q.queue, q.queue[n:])
	clear(q.queue[rest:])
	q.queue = q.queue[:rest]
	return batch
}

// run sends one batch and hands each call its reply.
func (q *batcher) run(batch []*call) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	if len(batch) == 1 && q.replicas == 0 {
		// Alone and with nothing to wait for: a plain call, which loads
		// the script when Redis does not have it.
		c := batch[0]
		c.reply, c.err = c.script.Run(ctx, q.client, c.keys, c.args...).Int64Slice()
		close(c.done)
		return
	}
	if q.cluster != nil && q.replicas > 0 {
		q.runPerMaster(ctx, batch)
		return
	}
	q.runOn(ctx, q.client, batch)
}

// runPerMaster runs the calls of a batch on a cluster with WAIT: each
// master's calls go in a pipeline of their own on a connection to that
// master, followed by the WAIT that covers them, since WAIT counts the
// replicas of the connection's node. A call whose slot moved meanwhile
// gets MOVED, which says it ran nothing.
func (q *batcher) runPerMaster(ctx context.Context, batch []*call) {
	var (
		nodes  []*redis.Client
		groups [][]*call
	)
	for _, c := range batch {
		node, err := q.cluster.MasterForKey(ctx, c.keys[0])
		if err != nil {
			c.err = err
			close(c.done)
			continue
		}
		i := slices.Index(nodes, node)
		if i < 0 {
			i = len(nodes)
			nodes, groups = append(nodes, node), append(groups, nil)
		}
		groups[i] = append(groups[i], c)
	}
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() { q.runOn(ctx, node, groups[i]) })
	}
	wg.Wait()
}

// runOn sends the calls of batch in a pipeline of client's, with a WAIT
// after them when the batcher waits for replicas.
func (q *batcher) runOn(ctx context.Context, client interface{ Pipeline() redis.Pipeliner }, batch []*call) {
	// EVALSHA first; the calls that find the script missing (NOSCRIPT:
	// Redis restarted, or SCRIPT FLUSH) ran nothing, and go again with
	// EVAL, which loads it, and a WAIT of their own.
	for try := 0; len(batch) > 0; try++ {
		pipe := client.Pipeline()
		cmds := make([]*redis.Cmd, len(batch))
		for i, c := range batch {
			if try == 0 {
				cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
			} else {
				cmds[i] = c.script.Eval(ctx, pipe, c.keys, c.args...)
			}
		}
		var wait *redis.Cmd
		if q.replicas > 0 {
			wait = pipe.Do(ctx, "wait", q.replicas, q.timeout.Milliseconds())
		}
		pipe.Exec(ctx) // every command carries its own error
		var again []*call
		for i, c := range batch {
			c.reply, c.err = cmds[i].Int64Slice()
			if try == 0 && c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
				again = append(again, c)
				continue
			}
			if wait != nil {
				c.replicas, c.waitErr = wait.Int64()
			}
			close(c.done)
		}
		batch = again
	}
}

// batchContext returns the context of a pipeline: it carries the first
// call's values, and ends with the latest deadline of the calls, when all
// have one. A caller that gives up does not cancel the others' calls.
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var last time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(ctx, last)
}
