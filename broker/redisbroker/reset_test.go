package redisbroker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/redistest"
)

// TestResetThenRemaining: Redis loses its data while the broker's
// subscription is down, and another hub publishes before the broker
// subscribes again. The subscriber gets a reset whose id is the position
// before those events, then the events, then live ones: nothing that
// Redis still has is skipped.
func TestResetThenRemaining(t *testing.T) {
	t.Parallel()
	client, b, next := subscribed(t, "d")
	msg := func(n string) ssehub.Message {
		return ssehub.Message{Channel: "d", Data: json.RawMessage(n)}
	}
	first, err := b.Publish(t.Context(), msg("1"))
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e.ID != first.ID {
		t.Fatalf("got %q, want %q", e.ID, first.ID)
	}

	// In one transaction, so that the broker cannot subscribe again in
	// between: its subscription goes, the data goes, and two events are
	// published as another hub would publish them.
	pipe := client.TxPipeline()
	pipe.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
	pipe.FlushAll(t.Context())
	var pubs []*redis.Cmd
	for _, n := range []string{"2", "3"} {
		keys, args, _ := b.publishArgs(msg(n), "", 0, "")
		pubs = append(pubs, publishScript.Eval(t.Context(), pipe, keys, args...))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, c := range pubs {
		res, err := c.Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, uint64(res[0]))
	}

	if e := next(); e.Type != ssehub.ResetType || e.ID != FormatSeq(seqs[0]-1) {
		t.Fatalf("after Redis lost its data: %q id %q; want %q with id %s", e.Type, e.ID, ssehub.ResetType, FormatSeq(seqs[0]-1))
	}
	for i, seq := range seqs {
		if e := next(); e.Seq != seq || string(e.Data) != string(rune('2'+i)) {
			t.Fatalf("after the reset: seq %d data %s; want seq %d", e.Seq, e.Data, seq)
		}
	}
	live, err := b.Publish(t.Context(), msg("4"))
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e.ID != live.ID {
		t.Fatalf("live after the catch-up: %q, want %q", e.ID, live.ID)
	}
}

// subscribed returns a broker without watchdog on a redis-server of its
// own, subscribed to channel, with its client, and what
// returns the next event it delivers.
func subscribed(t *testing.T, channel string) (*redis.Client, *Broker, func() *ssehub.Event) {
	t.Helper()
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	b, err := New(client, Options{CanaryInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(t.Context()) })
	got := make(chan *ssehub.Event, 16)
	cancel, err := b.Subscribe(t.Context(), channel, func(e *ssehub.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	next := func() *ssehub.Event {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-time.After(20 * time.Second):
			t.Fatal("no event after 20s")
		}
		return nil
	}
	return client, b, next
}
