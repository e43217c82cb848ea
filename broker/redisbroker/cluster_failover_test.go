package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// clusterRecorder collects what a broker's subscriptions deliver, per
// channel.
type clusterRecorder struct {
	mu     sync.Mutex
	events map[string][]*ssehub.Event
}

func (r *clusterRecorder) deliver(e *ssehub.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = map[string][]*ssehub.Event{}
	}
	r.events[e.Channel] = append(r.events[e.Channel], e)
}

func (r *clusterRecorder) of(channel string) []*ssehub.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[channel])
}

// publishRetrying publishes m with an idempotency key, again and again
// while the broker answers that it is unavailable or cannot tell, as a
// client that retries 503 and 504 does.
func publishRetrying(t testing.TB, b *redisbroker.Broker, m ssehub.Message) *ssehub.Event {
	t.Helper()
	m.Normalize()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e, err := b.Publish(ctx, m)
		cancel()
		switch {
		case err == nil:
			return e
		case !errors.Is(err, ssehub.ErrUnavailable) && !errors.Is(err, ssehub.ErrOutcomeUnknown):
			t.Errorf("Publish on %s: %v", m.Channel, err)
			return nil
		case time.Now().After(deadline):
			t.Errorf("Publish on %s still failing after %v: %v", m.Channel, waitTimeout, err)
			return nil
		}
		time.Sleep(20 * time.Millisecond) // a client's pause before it sends again
	}
}

// checkDelivered checks that got holds every event of acked once, in
// order, or a reset; after a reset, the events acknowledged after it
// follow in order.
func checkDelivered(t testing.TB, who, channel string, got, acked []*ssehub.Event) {
	t.Helper()
	reset := -1
	seen := map[string]bool{}
	for i, e := range got {
		if e.Type == ssehub.ResetType {
			reset = i
			continue
		}
		if seen[e.ID] {
			t.Errorf("%s on %s: event %s delivered twice", who, channel, e.ID)
		}
		seen[e.ID] = true
	}
	var ids []string
	for _, e := range got[reset+1:] {
		ids = append(ids, e.ID)
	}
	var want []string
	for _, e := range acked {
		if reset < 0 || !seen[e.ID] || slices.Contains(ids, e.ID) {
			want = append(want, e.ID)
		}
	}
	if reset >= 0 {
		// Before the reset, what came was in order; after it, every event
		// not seen before, in order.
		var after []string
		for _, id := range want {
			if slices.Contains(ids, id) || !seen[id] {
				after = append(after, id)
			}
		}
		want = after
	} else {
		ids = nil
		for _, e := range got {
			ids = append(ids, e.ID)
		}
	}
	if !slices.Equal(ids, want) {
		t.Errorf("%s on %s: delivered %v (reset at %d); want %v", who, channel, ids, reset, want)
	}
}

// TestClusterFailover runs two brokers on a 3+3 cluster, both subscribed
// to a dozen channels, while one publishes steadily, and kills the master
// of one of them with SIGKILL. Publishing resumes by itself after the
// failover; each broker delivers every acknowledged event once and in
// order per channel, or a reset; the new master shows both brokers'
// sharded subscriptions; a replay on either broker resumes exactly.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	opts := redisbroker.Options{CanaryInterval: 500 * time.Millisecond}
	b1, b2 := newClusterBroker(t, c, opts), newClusterBroker(t, c, opts)
	var channels []string
	for i := range 12 {
		channels = append(channels, fmt.Sprintf("fo.%d", i))
	}
	var r1, r2 clusterRecorder
	for _, ch := range channels {
		for _, s := range []struct {
			b *redisbroker.Broker
			r *clusterRecorder
		}{{b1, &r1}, {b2, &r2}} {
			cancel, err := s.b.Subscribe(t.Context(), ch, s.r.deliver)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cancel)
		}
	}
	waitReady(t, b1)
	waitReady(t, b2)
	victim := c.MasterOf(channels[0])

	var (
		mu    sync.Mutex
		acked = map[string][]*ssehub.Event{}
		after int // events acknowledged on channels[0] after the failover
		stop  = make(chan struct{})
		done  = make(chan struct{})
		n     int
	)
	killed := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ch := channels[n%len(channels)]
			m := ssehub.Message{Channel: ch, Data: json.RawMessage(fmt.Sprint(n)), IdempotencyKey: fmt.Sprintf("k%d", n)}
			n++
			e := publishRetrying(t, b2, m)
			if e == nil {
				return
			}
			mu.Lock()
			acked[ch] = append(acked[ch], e)
			select {
			case <-killed:
				if ch == channels[0] {
					after++
				}
			default:
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	waitFor(t, "events before the failover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked[channels[0]]) >= 10
	})
	start := time.Now()
	victim.Kill()
	close(killed)
	next := c.WaitFailover(channels[0], victim)
	waitFor(t, "publishing on the failed-over shard", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return after >= 20
	})
	t.Logf("publishing on %s resumed %v after SIGKILL", channels[0], time.Since(start).Round(time.Millisecond))
	close(stop)
	<-done
	if t.Failed() {
		t.FailNow()
	}

	for _, ch := range channels {
		want := acked[ch]
		last := want[len(want)-1]
		for who, r := range map[string]*clusterRecorder{"b1": &r1, "b2": &r2} {
			waitFor(t, who+" to deliver the last event of "+ch, func() bool {
				return slices.ContainsFunc(r.of(ch), func(e *ssehub.Event) bool { return e.ID == last.ID })
			})
			checkDelivered(t, who, ch, r.of(ch), want)
		}
	}

	// Both report ready again, with the old master still down.
	waitReady(t, b1)
	waitReady(t, b2)

	nc := redis.NewClient(&redis.Options{Addr: next.Addr()})
	defer nc.Close()
	subs, err := nc.PubSubShardNumSub(t.Context(), channels[0]).Result()
	if err != nil || subs[channels[0]] != 2 {
		t.Errorf("PUBSUB SHARDNUMSUB %s on the new master = %v, %v; want 2 (one per broker)", channels[0], subs, err)
	}

	// A client of b1 that saw the tenth event of channels[0] resumes on b2.
	want := acked[channels[0]]
	got, err := replayAll(t, b2, []string{channels[0]}, want[9].ID)
	if err != nil && !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatal(err)
	}
	if err == nil && !slices.EqualFunc(got, want[10:], func(x, y *ssehub.Event) bool { return x.ID == y.ID }) {
		t.Errorf("replay after %s on the other broker: %d events; want %d", want[9].ID, len(got), len(want[10:]))
	}
	// Over several channels, from a position in each.
	head, err := b1.Head(t.Context(), channels)
	if err != nil {
		t.Fatal(err)
	}
	e := publishRetrying(t, b1, ssehub.Message{Channel: channels[5], Data: json.RawMessage(`"x"`)})
	got, err = replayAll(t, b2, channels, head.ID)
	if err != nil || len(got) != 1 || got[0].ID != e.ID {
		t.Errorf("replay of %d channels after their head on the other broker = %d events, %v; want the one published since", len(channels), len(got), err)
	}
}

// replayAll replays channels after lastEventID and returns the events.
func replayAll(t testing.TB, b *redisbroker.Broker, channels []string, lastEventID string) ([]*ssehub.Event, error) {
	var got []*ssehub.Event
	_, err := b.Replay(t.Context(), channels, lastEventID, func(e *ssehub.Event) error {
		got = append(got, e)
		return nil
	})
	return got, err
}

// TestClusterHistoryWentBack makes a master acknowledge events that its
// replica never gets (the replica is frozen, its link dropped), kills the master and lets
// the replica take over. The subscriber gets a reset after the events it
// saw, then the events published since; a resume from inside the lost
// range resets, one from either end of it resumes.
func TestClusterHistoryWentBack(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	const ch = "back"
	sub := newClusterBroker(t, c, redisbroker.Options{Logger: testLogger(t)})
	pub := newClusterBroker(t, c, redisbroker.Options{})
	var r clusterRecorder
	cancel, err := sub.Subscribe(t.Context(), ch, r.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	master := c.MasterOf(ch)
	replica := c.ReplicaOf(master)
	kept := []*ssehub.Event{publishRetrying(t, pub, msg(ch, 1)), publishRetrying(t, pub, msg(ch, 2))}
	mc := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer mc.Close()
	if n, err := mc.Do(t.Context(), "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v", n, err)
	}
	// The replica stops, and the master drops its link: what the master
	// acknowledges now never reaches the replica.
	replica.Freeze()
	if err := mc.Do(t.Context(), "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	lost := []*ssehub.Event{publishRetrying(t, pub, msg(ch, 3)), publishRetrying(t, pub, msg(ch, 4))}
	waitFor(t, "the subscriber to get the events the replica lacks", func() bool { return len(r.of(ch)) == 4 })
	master.Kill()
	replica.Thaw()
	if got := c.WaitFailover(ch, master); got != replica {
		t.Fatalf("%s took over; want the replica %s", got.Addr(), replica.Addr())
	}
	later := publishRetrying(t, pub, msg(ch, 5))
	waitFor(t, "the event published after the failover", func() bool { return len(r.of(ch)) >= 6 })
	got := r.of(ch)
	if len(got) != 6 || got[4].Type != ssehub.ResetType || got[5].ID != later.ID {
		t.Fatalf("delivered %v; want the 4 events, a reset, then %s", eventIDs(got), later.ID)
	}
	if got[4].ID != kept[1].ID {
		t.Errorf("the reset's id is %s; want %s, the last event the new master has", got[4].ID, kept[1].ID)
	}
	for _, id := range []string{kept[1].ID, lost[1].ID} {
		if events, err := replayAll(t, pub, []string{ch}, id); err != nil || len(events) != 1 || events[0].ID != later.ID {
			t.Errorf("replay after %s = %v, %v; want %s", id, eventIDs(events), err, later.ID)
		}
	}
	if events, err := replayAll(t, pub, []string{ch}, lost[0].ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Errorf("replay after the lost %s = %v, %v; want ErrUnknownID", lost[0].ID, eventIDs(events), err)
	}
}

func eventIDs(events []*ssehub.Event) []string {
	var ids []string
	for _, e := range events {
		ids = append(ids, e.Type+":"+e.ID)
	}
	return ids
}

func msg(channel string, n int) ssehub.Message {
	return ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprint(n))}
}

// TestClusterForeign: messages that invenio-sse and flask-sse PUBLISH on a
// cluster (which broadcasts them to every node) reach two brokers once
// each, with the same seq on both, and enter the channel's history once.
func TestClusterForeign(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	const ch = "f"
	brokers := []*redisbroker.Broker{newClusterBroker(t, c, redisbroker.Options{}), newClusterBroker(t, c, redisbroker.Options{})}
	recs := make([]clusterRecorder, len(brokers))
	for i, b := range brokers {
		cancel, err := b.Subscribe(t.Context(), ch, recs[i].deliver)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		waitReady(t, b)
	}
	pub := newClusterClient(t, c)
	payloads := []string{
		`{"data": {"code": "COOL"}, "event": null, "id": 1795238353.220689, "retry": null}`,
		`{"data": "foo", "type": "example"}`,
		`{"data": "foo", "type": "example"}`,
	}
	// The plain subscription of the brokers may not be in place yet: send
	// until the first message comes.
	waitFor(t, "a foreign message to come", func() bool {
		if len(recs[0].of(ch)) > 0 && len(recs[1].of(ch)) > 0 {
			return true
		}
		if err := pub.Publish(t.Context(), ch, `{"data": 0}`).Err(); err != nil {
			t.Fatal(err)
		}
		return false
	})
	first := map[int]int{0: len(recs[0].of(ch)), 1: len(recs[1].of(ch))}
	for _, p := range payloads {
		if err := pub.Publish(t.Context(), ch, p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var seqs [2][]uint64
	for i := range recs {
		waitFor(t, "the foreign messages", func() bool { return len(recs[i].of(ch)) >= first[i]+len(payloads) })
		for _, e := range recs[i].of(ch) {
			if e.Seq == 0 {
				t.Errorf("broker %d delivered %s without a seq: not taken into the history", i, e.ID)
			}
			seqs[i] = append(seqs[i], e.Seq)
		}
	}
	tail := func(s []uint64) []uint64 { return s[len(s)-len(payloads):] }
	if !slices.Equal(tail(seqs[0]), tail(seqs[1])) {
		t.Errorf("seqs %v on one broker, %v on the other", tail(seqs[0]), tail(seqs[1]))
	}
	n, err := pub.XLen(t.Context(), "ssehub:{f}stream:f").Result()
	if err != nil || n != int64(len(seqs[0])) {
		t.Errorf("the history holds %d entries, %v; want %d", n, err, len(seqs[0]))
	}
}

// TestClusterSlotMoved moves the slot of a subscribed channel to another
// master: the server drops the sharded subscription, and the broker
// subscribes the channel on the new master, where it goes on delivering,
// with its history, and no reset.
func TestClusterSlotMoved(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	const ch = "moving"
	sub := newClusterBroker(t, c, redisbroker.Options{Logger: testLogger(t)})
	pub := newClusterBroker(t, c, redisbroker.Options{})
	var r clusterRecorder
	cancel, err := sub.Subscribe(t.Context(), ch, r.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	first := publishRetrying(t, pub, msg(ch, 1))
	waitFor(t, "the first event", func() bool { return len(r.of(ch)) == 1 })
	from := c.MasterOf(ch)
	var to *redistest.Server
	for _, m := range c.Masters() {
		if m != from {
			to = m
			break
		}
	}
	c.MoveSlot(ch, to)
	second := publishRetrying(t, pub, msg(ch, 2))
	waitFor(t, "the event published after the move", func() bool { return len(r.of(ch)) >= 2 })
	if got := eventIDs(r.of(ch)); len(got) != 2 || got[1] != ":"+second.ID {
		t.Fatalf("delivered %v; want %s then %s", got, first.ID, second.ID)
	}
	for _, n := range []struct {
		srv  *redistest.Server
		want int64
	}{{from, 0}, {to, 1}} {
		cl := redis.NewClient(&redis.Options{Addr: n.srv.Addr()})
		waitFor(t, "the subscription on the new master", func() bool {
			subs, err := cl.PubSubShardNumSub(t.Context(), ch).Result()
			return err == nil && subs[ch] == n.want
		})
		cl.Close()
	}
	if events, err := replayAll(t, pub, []string{ch}, first.ID); err != nil || len(events) != 1 || events[0].ID != second.ID {
		t.Errorf("replay after %s on the new master = %v, %v; want %s", first.ID, eventIDs(events), err, second.ID)
	}
	waitReady(t, sub)
}

// TestClusterOneConnectionPerShard subscribes 50 channels and checks with
// CLIENT LIST on every master that the broker holds one sharded pub/sub
// connection there, on exactly the channels of that master (with their
// twins, and the shard's canary), and one plain one in all for other
// publishers.
func TestClusterOneConnectionPerShard(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	const name = "hub-shards"
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ClientName: name})
	t.Cleanup(func() { cc.Close() })
	b, err := redisbroker.New(cc, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	perMaster := map[*redistest.Server]int{}
	for i := range 50 {
		ch := fmt.Sprintf("many.%d", i)
		cancel, err := b.Subscribe(t.Context(), ch, func(*ssehub.Event) {})
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		perMaster[c.MasterOf(ch)]++
	}
	waitReady(t, b)
	// The plain subscription is not awaited by Subscribe.
	waitFor(t, "the plain subscription to the 50 channels", func() bool {
		for _, n := range c.Nodes {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
			list, _ := cl.ClientList(t.Context()).Result()
			cl.Close()
			if strings.Contains(list, " name="+name+" ") && strings.Contains(list, " sub=50 ") {
				return true
			}
		}
		return false
	})
	plain := 0
	for _, n := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
		list, err := cl.ClientList(t.Context()).Result()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		var sharded []string
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			if !strings.Contains(line, " ssub=0 ") {
				sharded = append(sharded, line)
			}
			if !strings.Contains(line, " sub=0 ") {
				plain++
				if !strings.Contains(line, " sub=50 ") {
					t.Errorf("the plain subscription is not on the 50 channels: %s", line)
				}
			}
		}
		want := perMaster[n]
		switch {
		case want == 0 && len(sharded) > 0:
			t.Errorf("%s serves none of the channels but has sharded subscriptions: %v", n.Addr(), sharded)
		case want > 0 && len(sharded) != 1:
			t.Errorf("%s has %d sharded pub/sub connections of the broker; want 1: %v", n.Addr(), len(sharded), sharded)
		case want > 0 && !strings.Contains(sharded[0], fmt.Sprintf(" ssub=%d ", 2*want+1)):
			t.Errorf("the connection to %s is not on its %d channels, their twins and a canary: %s", n.Addr(), want, sharded[0])
		}
	}
	if plain != 1 {
		t.Errorf("%d plain pub/sub connections; want 1", plain)
	}
}

// TestClusterHeldBytesBound kills the hub's sharded pub/sub connection
// while events of 1 KB are published without pause, with the bound of what
// channels hold back while they catch up set below one event (notices on
// the channel's twin still fit): a catch-up that meets a live event starts
// over on a new connection, and reads the stream again, until publishing
// stops. Every event still reaches the
// stream once and in order. Not parallel: it sets the bound of the
// package.
func TestClusterHeldBytesBound(t *testing.T) {
	defer redisbroker.SetMaxHeldBytes(600)()
	c := redistest.StartCluster(t)
	logs := &lockedLog{}
	// History enough for every event: a reset would hide the check.
	const history = 100_000
	h := newHubOn(t, newClusterBroker(t, c, redisbroker.Options{HistorySize: history, Logger: slog.New(slog.NewTextHandler(logs, nil))}), ssehub.Config{})
	s := openStream(t, h.srv.URL, []string{"k"}, "")
	publisher := newClusterBroker(t, c, redisbroker.Options{HistorySize: history})
	big := strings.Repeat("x", 1000)

	var (
		ids  []string
		stop = make(chan struct{})
		done = make(chan error, 1)
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			e, err := publisher.Publish(t.Context(), ssehub.Message{Channel: "k", Data: json.RawMessage(`"` + big + strconv.Itoa(i) + `"`)})
			if err != nil {
				done <- err
				return
			}
			ids = append(ids, e.ID)
		}
	}()
	admin := redis.NewClient(&redis.Options{Addr: c.MasterOf("k").Addr()})
	defer admin.Close()
	for range 5 {
		// As soon as the broker has a pub/sub connection again, maybe
		// still catching up.
		waitFor(t, "a pub/sub connection to kill", func() bool {
			n, err := admin.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result()
			return err == nil && n > 0
		})
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	s.expect(ids...)
	if !strings.Contains(logs.String(), "too many messages while catching up") {
		t.Errorf("no catch-up met the bound of held bytes; log:\n%s", logs.String())
	}
}

// lockedLog is a log buffer that the broker's goroutines write to.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
