package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// pipeHook runs pipeline around every pipeline a client sends.
type pipeHook struct {
	pipeline func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error
}

func (h pipeHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h pipeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h pipeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return h.pipeline(ctx, cmds, next) }
}

// publishCalls counts the publish script calls in a pipeline.
func publishCalls(cmds []redis.Cmder) int {
	n := 0
	for _, c := range cmds {
		if scriptKeys(c) == 9 {
			n++
		}
	}
	return n
}

// pipelinedBroker returns a broker whose client runs pipeline around
// every pipeline.
func pipelinedBroker(t *testing.T, srv *redistest.Server, opts redisbroker.Options, pipeline func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error) *redisbroker.Broker {
	t.Helper()
	client := newClient(t, srv)
	client.AddHook(pipeHook{pipeline: pipeline})
	b, err := redisbroker.New(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// publishRound publishes n messages at once on channel, each with the
// key prefix-i, and returns their events by i, failing on any error.
func publishRound(t *testing.T, b *redisbroker.Broker, channel, prefix string, n int) []*ssehub.Event {
	t.Helper()
	events := make([]*ssehub.Event, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprint(i)), IdempotencyKey: fmt.Sprintf("%s-%d", prefix, i)}
			e, err := b.Publish(t.Context(), m)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			events[i] = e
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return events
}

// TestPublishesPipelined: publishes made at once go to Redis in pipelines
// of several script calls. Each keeps its own idempotency key: sent twice
// at once, a message is published once and both answers carry its id;
// every event is stored and delivered once.
func TestPublishesPipelined(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var most atomic.Int64 // the most publish calls seen in one pipeline
	b := pipelinedBroker(t, srv, redisbroker.Options{Prefix: "pp:"}, func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		n := int64(publishCalls(cmds))
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		return next(ctx, cmds)
	})
	r := newLive(t, srv, "pp")
	const n = 32
	var ids []string
	for round := 0; most.Load() < 2; round++ {
		if round == 50 {
			t.Fatalf("no pipeline carried two publishes in %d rounds of %d at once", round, n)
		}
		first := publishRound(t, b, "pp", fmt.Sprint("r", round), n)
		again := publishRound(t, b, "pp", fmt.Sprint("r", round), n) // the same keys
		for i := range n {
			if first[i].ID != again[i].ID {
				t.Fatalf("key r%d-%d published as %s, then as %s", round, i, first[i].ID, again[i].ID)
			}
			ids = append(ids, first[i].ID)
		}
	}
	// The live subscriber sees each id once, in some order.
	seen := map[string]int{}
	for range ids {
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		msg, err := r.ps.ReceiveMessage(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ ID string }
		json.Unmarshal([]byte(msg.Payload), &env)
		seen[env.ID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("event %s delivered %d times", id, seen[id])
		}
	}
	if got := newClient(t, srv).XLen(t.Context(), "pp:stream:pp").Val(); got != int64(len(ids)) {
		t.Fatalf("the stream holds %d events, want %d", got, len(ids))
	}
	t.Logf("%d publishes, at most %d in one pipeline", 2*len(ids), most.Load())
}

// TestPipelineAnswerLost: Redis runs a pipeline of publishes but its
// answers are lost. Each publish asks Redis on its own (fence.lua), learns
// that it was published, and returns its event: stored and delivered once.
func TestPipelineAnswerLost(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var lost atomic.Int64 // publishes whose answer was lost
	b := pipelinedBroker(t, srv, redisbroker.Options{Prefix: "pl:"}, func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		err := next(ctx, cmds)
		if n := publishCalls(cmds); n >= 2 && lost.Load() == 0 {
			lost.Add(int64(n))
			for _, c := range cmds {
				c.SetErr(errLost)
			}
			return errLost
		}
		return err
	})
	pub(t, b, "pl", "", 0) // loads the script, so that the pipeline runs it
	total := 1
	for round := 0; lost.Load() == 0; round++ {
		if round == 50 {
			t.Fatalf("no pipeline carried two publishes in %d rounds", round)
		}
		publishRound(t, b, "pl", fmt.Sprint("r", round), 16)
		total += 16
	}
	if got := newClient(t, srv).XLen(t.Context(), "pl:stream:pl").Val(); got != int64(total) {
		t.Fatalf("the stream holds %d events, want %d", got, total)
	}
	t.Logf("%d answers lost in one pipeline, each publish settled", lost.Load())
}

// TestPipelineLate: a pipeline of publishes does not reach Redis before
// the publishes give up. Each closes its key to its attempt and answers
// ErrUnavailable; when the pipeline reaches Redis later, it publishes
// nothing, and the messages sent again are published once.
func TestPipelineLate(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	other := newClient(t, srv)
	var (
		held    atomic.Bool
		release = make(chan struct{})
		late    = make(chan []any, 1)
	)
	b := pipelinedBroker(t, srv, redisbroker.Options{Prefix: "pt:"}, func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		if publishCalls(cmds) >= 2 && held.CompareAndSwap(false, true) {
			// Sent later by another client, after the publishes gave up.
			go func() {
				<-release
				var replies []any
				for _, c := range cmds {
					v, err := other.Do(context.Background(), c.Args()...).Slice()
					if err != nil {
						v = []any{err}
					}
					replies = append(replies, v)
				}
				late <- replies
			}()
			for _, c := range cmds {
				c.SetErr(errLost)
			}
			return errLost
		}
		return next(ctx, cmds)
	})
	pub(t, b, "pt", "", 0) // loads the script, so that the late EVALSHAs find it
	var (
		mu     sync.Mutex
		failed = map[string]ssehub.Message{}
	)
	for round := 0; !held.Load(); round++ {
		if round == 50 {
			t.Fatalf("no pipeline carried two publishes in %d rounds", round)
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				m := ssehub.Message{Channel: "pt", Data: json.RawMessage(fmt.Sprint(i)), IdempotencyKey: fmt.Sprintf("r%d-%d", round, i)}
				_, err := b.Publish(t.Context(), m)
				switch {
				case errors.Is(err, ssehub.ErrUnavailable):
					mu.Lock()
					failed[m.IdempotencyKey] = m
					mu.Unlock()
				case err != nil:
					t.Errorf("publish %s: %v", m.IdempotencyKey, err)
				}
			})
		}
		wg.Wait()
	}
	close(release)
	for i, v := range <-late {
		if fmt.Sprint(v) != "[0 0 2]" {
			t.Errorf("late call %d got %v, want [0 0 2]: given up on, nothing published", i, v)
		}
	}
	if len(failed) < 2 {
		t.Fatalf("%d publishes answered ErrUnavailable, want the held pipeline's (2 or more)", len(failed))
	}
	for _, m := range failed {
		e, err := b.Publish(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := b.Publish(t.Context(), m); err != nil || again.ID != e.ID {
			t.Fatalf("publish %s again: %v, %v; want id %s", m.IdempotencyKey, again, err, e.ID)
		}
	}
}

// TestPipelineScriptMissing: Redis lost its scripts (SCRIPT FLUSH, as
// after a restart). The publishes of a pipeline find them missing, are
// sent again with the script, and are published once each.
func TestPipelineScriptMissing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	other := newClient(t, srv)
	var missing atomic.Int64 // publish calls answered NOSCRIPT in a pipeline
	b := pipelinedBroker(t, srv, redisbroker.Options{Prefix: "pn:"}, func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		err := next(ctx, cmds)
		if publishCalls(cmds) >= 2 {
			for _, c := range cmds {
				if c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
					missing.Add(1)
				}
			}
		}
		return err
	})
	pub(t, b, "pn", "", 0)
	total := 1
	for round := 0; missing.Load() < 2; round++ {
		if round == 50 {
			t.Fatalf("no pipeline of publishes found the script missing in %d rounds", round)
		}
		if err := other.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		publishRound(t, b, "pn", fmt.Sprint("r", round), 16)
		total += 16
	}
	if got := other.XLen(t.Context(), "pn:stream:pn").Val(); got != int64(total) {
		t.Fatalf("the stream holds %d events, want %d", got, total)
	}
}

// TestPipelineAnswerLostWaiting: with WaitReplicas, a publish whose
// answer is lost learns from Redis that it was published, but not
// whether the replicas have it: ErrOutcomeUnknown and ErrNotReplicated.
// Sent again once the answers come, it answers with the same event.
func TestPipelineAnswerLostWaiting(t *testing.T) {
	t.Parallel()
	master := redistest.StartWith(t, redistest.Options{Args: quickSync})
	startReplica(t, master)
	var lose atomic.Bool
	b := pipelinedBroker(t, master, redisbroker.Options{Prefix: "lw:", WaitReplicas: 1}, func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		err := next(ctx, cmds)
		if publishCalls(cmds) > 0 && lose.CompareAndSwap(true, false) {
			for _, c := range cmds {
				c.SetErr(errLost)
			}
			return errLost
		}
		return err
	})
	pub(t, b, "lw", "", 0) // loads the script
	m := ssehub.Message{Channel: "lw", Data: json.RawMessage(`1`), IdempotencyKey: "lw-1"}
	lose.Store(true)
	_, err := b.Publish(t.Context(), m)
	if !errors.Is(err, ssehub.ErrOutcomeUnknown) || !errors.Is(err, redisbroker.ErrNotReplicated) {
		t.Fatalf("publish whose answer was lost: %v; want ErrOutcomeUnknown and ErrNotReplicated", err)
	}
	e, err := b.Publish(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	if n := newClient(t, master).XLen(t.Context(), "lw:stream:lw").Val(); n != 2 {
		t.Fatalf("the stream holds %d events, want 2 (%s published once)", n, e.ID)
	}
}
