package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/natsbroker"
	"github.com/ssehub/ssehub/internal/natstest"
)

// recorder collects what one subscription delivers.
type recorder struct {
	mu     sync.Mutex
	events []*ssehub.Event
}

func (r *recorder) deliver(e *ssehub.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []*ssehub.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) has(id string) bool {
	return slices.ContainsFunc(r.snapshot(), func(e *ssehub.Event) bool { return e.ID == id })
}

func subscribe(t *testing.T, b ssehub.Broker, channel string) *recorder {
	t.Helper()
	r := &recorder{}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	stop, err := b.Subscribe(ctx, channel, r.deliver)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	t.Cleanup(stop)
	return r
}

func publish(ctx context.Context, b ssehub.Broker, channel string, n int) (*ssehub.Event, error) {
	m := ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
	if err := m.Normalize(); err != nil {
		return nil, err
	}
	return b.Publish(ctx, m)
}

// streamLeader returns the name of the server leading the stream.
func streamLeader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	var leader string
	waitFor(t, "the stream to have a leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		leader = s.CachedInfo().Cluster.Leader
		return leader != ""
	})
	return leader
}

// TestFailover kills the stream leader of a 3-node cluster while a
// publisher publishes steadily on three channels, with subscriptions on two
// brokers, one of them connected to the node that dies. Publishing goes on
// after a pause; every acknowledged event reaches every subscription once
// and in order; a replay on the other broker from an id before the crash
// yields exactly what was delivered after it; and the restarted node
// catches up with the stream.
func TestFailover(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	admin := connect(t, c.URL())
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	opts := natsbroker.Options{Stream: "FAILOVER"}
	a := newBroker(t, c.URL(), opts)
	if _, err := a.Head(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	leader := c.Server(streamLeader(t, js, "FAILOVER"))
	// Broker b talks to the leader's node, which is about to die.
	var urls []string
	for _, s := range c.Servers {
		if s != leader {
			urls = append(urls, s.URL())
		}
	}
	b := newBroker(t, strings.Join(append([]string{leader.URL()}, urls...), ","), opts)

	channels := []string{"fo.a", "fo.b", "fo.c"}
	recs := map[ssehub.Broker][]*recorder{}
	for _, br := range []ssehub.Broker{a, b} {
		for _, ch := range channels {
			recs[br] = append(recs[br], subscribe(t, br, ch))
		}
	}

	// The publisher publishes through a, one event every 5 ms, round-robin.
	var (
		mu       sync.Mutex
		acked    [][]*ssehub.Event = make([][]*ssehub.Event, len(channels))
		failed   int
		pause    time.Duration
		lastAck  = time.Now()
		nAcked   int
		stop     = make(chan struct{})
		finished = make(chan struct{})
	)
	go func() {
		defer close(finished)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			k := i % len(channels)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			e, err := publish(ctx, a, channels[k], i)
			cancel()
			mu.Lock()
			if err != nil {
				failed++
			} else {
				acked[k] = append(acked[k], e)
				nAcked++
				pause = max(pause, time.Since(lastAck))
				lastAck = time.Now()
			}
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return nAcked
	}
	waitFor(t, "100 events acknowledged", func() bool { return count() >= 100 })
	mu.Lock()
	before := acked[0][len(acked[0])-1] // a position before the crash
	mu.Unlock()
	leader.Kill()
	killedAt := count()
	waitFor(t, "300 more events acknowledged after the crash", func() bool { return count() >= killedAt+300 })
	close(stop)
	<-finished
	newLeader := streamLeader(t, js, "FAILOVER")
	t.Logf("killed leader %s; new leader %s; %d events acknowledged, %d publishes failed, longest pause between acknowledgements %v",
		leader.Name(), newLeader, count(), failed, pause.Round(time.Millisecond))

	// A last event on each channel: once a subscription has it, it has
	// everything published before.
	var last []*ssehub.Event
	for i, ch := range channels {
		e, err := publish(t.Context(), a, ch, 1_000_000+i)
		if err != nil {
			t.Fatal(err)
		}
		last = append(last, e)
		acked[i] = append(acked[i], e)
	}
	for br, rs := range recs {
		for i, r := range rs {
			waitFor(t, "the last event on "+channels[i], func() bool { return r.has(last[i].ID) })
			got := r.snapshot()
			for j := 1; j < len(got); j++ {
				if got[j].Seq <= got[j-1].Seq {
					t.Fatalf("broker %p channel %s: seq %d after %d", br, channels[i], got[j].Seq, got[j-1].Seq)
				}
				if got[j].Type == ssehub.ResetType {
					t.Fatalf("broker %p channel %s: a reset, with the whole history in the stream", br, channels[i])
				}
			}
			delivered := map[string]bool{}
			for _, e := range got {
				delivered[e.ID] = true
			}
			for _, e := range acked[i] {
				if !delivered[e.ID] {
					t.Fatalf("broker %p channel %s: acknowledged event %s (seq %d) never delivered", br, channels[i], e.ID, e.Seq)
				}
			}
		}
	}

	// Resuming on broker a from an event before the crash replays exactly
	// what b's subscriptions got after it, merged in stream order.
	var want []*ssehub.Event
	for _, r := range recs[ssehub.Broker(b)] {
		for _, e := range r.snapshot() {
			if e.Seq > before.Seq {
				want = append(want, e)
			}
		}
	}
	slices.SortFunc(want, func(x, y *ssehub.Event) int { return int(x.Seq) - int(y.Seq) })
	var got []*ssehub.Event
	if _, err := a.Replay(t.Context(), channels, before.ID, func(e *ssehub.Event) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("Replay after %s: %v", before.ID, err)
	}
	if len(got) != len(want) {
		t.Fatalf("replay after %s: %d events, delivered after it: %d", before.ID, len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || string(got[i].Frame()) != string(want[i].Frame()) {
			t.Fatalf("replay event %d: %q, delivered %q", i, got[i].Frame(), want[i].Frame())
		}
	}

	// The killed node comes back and catches up with the stream.
	leader.Start()
	waitFor(t, "the restarted node to be a current replica", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "FAILOVER")
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		ci := s.CachedInfo().Cluster
		if ci.Leader == leader.Name() {
			return true
		}
		for _, p := range ci.Replicas {
			if p.Name == leader.Name() && p.Current && !p.Offline {
				return true
			}
		}
		return false
	})
	e, err := publish(t.Context(), b, channels[0], 2_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, br := range []ssehub.Broker{a, b} {
		waitFor(t, "an event after the restart", func() bool { return recs[br][0].has(e.ID) })
	}
}
