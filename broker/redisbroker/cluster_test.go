package redisbroker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// TestOneConnectionForManySubscribers opens 1,000 subscribers over 50
// channels on one hub, at once, and checks with CLIENT LIST that the hub
// holds one pub/sub connection and at most its client's pool size of
// others, not one per subscriber.
func TestOneConnectionForManySubscribers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const name = "hub-many"
	opt := testOptions(srv)
	opt.ClientName = name
	const poolSize = 4
	opt.PoolSize = poolSize
	client := redis.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	b, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	hub, err := ssehub.New(ssehub.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close(context.Background()) })
	waitReady(t, b)

	const subscribers, channels = 1000, 50
	subs := make([]*ssehub.Subscription, subscribers)
	var wg sync.WaitGroup
	for i := range subs {
		wg.Go(func() {
			s, err := hub.Subscribe(t.Context(), []string{fmt.Sprint("ch", i%channels)}, "")
			if err != nil {
				t.Errorf("Subscribe %d: %v", i, err)
				return
			}
			subs[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()

	admin := newClient(t, srv)
	list, err := admin.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var total, pubsub int
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.Contains(line, " name="+name+" ") {
			continue
		}
		total++
		if !strings.Contains(line, " sub=0 ") {
			pubsub++
			if !strings.Contains(line, fmt.Sprintf(" sub=%d ", 2*channels+1)) { // the channels, their twins and the canary
				t.Errorf("the pub/sub connection is not on %d channels: %s", 2*channels+1, line)
			}
		}
	}
	t.Logf("%d subscribers on %d channels: the hub holds %d Redis connections, %d of them pub/sub", subscribers, channels, total, pubsub)
	if pubsub != 1 || total > 1+poolSize {
		t.Fatalf("the hub holds %d connections, %d of them pub/sub; want 1 pub/sub and at most %d others\n%s", total, pubsub, poolSize, list)
	}

	// Every subscriber gets its channel's event and no other.
	publisher := newBroker(t, srv, redisbroker.Options{})
	ids := make([]string, channels)
	for c := range channels {
		ids[c] = pub(t, publisher, fmt.Sprint("ch", c), "", c).ID
	}
	for i, s := range subs {
		wg.Go(func() {
			e, err := s.Next(t.Context())
			if err != nil || e.ID != ids[i%channels] {
				t.Errorf("subscriber %d got %v, %v; want %s", i, e, err, ids[i%channels])
			}
		})
	}
	wg.Wait()
}

// TestAcrossHubs: events published on hub A reach subscribers of hubs B and
// C, each with its own client and broker, in publish order per channel.
func TestAcrossHubs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	hubs := []*testHub{
		newHub(t, srv, redisbroker.Options{}, ssehub.Config{}),
		newHub(t, srv, redisbroker.Options{}, ssehub.Config{}),
		newHub(t, srv, redisbroker.Options{}, ssehub.Config{}),
	}
	names := []string{"x", "y", "z"}
	var streams []*stream
	for _, h := range hubs[1:] {
		for _, name := range names {
			streams = append(streams, openStream(t, h.srv.URL, []string{name}, ""))
		}
	}
	want := map[string][]string{}
	for i := range 90 {
		name := names[i%len(names)]
		want[name] = append(want[name], hubs[0].publish(t, name, i))
	}
	for i, s := range streams {
		s.expect(want[names[i%len(names)]]...)
	}
}

// TestResumeOnAnotherHub: a client of hub A stops reading, reconnects to
// hub B with its last id, and gets every event it missed, once and in
// order, then live ones; also on several channels at once.
func TestResumeOnAnotherHub(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	b := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	channels := []string{"p", "q"}

	s := openStream(t, a.srv.URL, channels, "")
	var sent []string
	for i := range 10 {
		sent = append(sent, a.publish(t, channels[i%2], i))
	}
	s.expect(sent[:4]...)
	s.close()
	last := sent[3]

	// Published on both hubs while the client is away; one event on a
	// channel it does not read.
	for i := 10; i < 16; i++ {
		h := a
		if i%2 == 1 {
			h = b
		}
		sent = append(sent, h.publish(t, channels[i%2], i))
	}
	a.publish(t, "elsewhere", 99)

	s = openStream(t, b.srv.URL, channels, last)
	s.expect(sent[4:]...)
	live := []string{a.publish(t, "q", 100), b.publish(t, "p", 101)}
	s.expect(live...)
}

// TestResumeAfterHubRestart: the history is in Redis, so a client resumes
// on a hub that restarted with a new broker and client.
func TestResumeAfterHubRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	s := openStream(t, a.srv.URL, []string{"r"}, "")
	first := a.publish(t, "r", 1)
	s.expect(first)
	s.close()
	if err := a.hub.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.broker.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.srv.Close()

	publisher := newBroker(t, srv, redisbroker.Options{})
	missed := []string{pub(t, publisher, "r", "", 2).ID, pub(t, publisher, "r", "own-3", 3).ID}

	again := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	s = openStream(t, again.srv.URL, []string{"r"}, first)
	s.expect(missed...)
	// Resuming from a publisher's own id works as well.
	s2 := openStream(t, again.srv.URL, []string{"r"}, "own-3")
	live := again.publish(t, "r", 4)
	s.expect(live)
	s2.expect(live)
}

// TestEvictedIDGetsReset: resuming from an id whose successors were trimmed
// gets an ssehub.reset event carrying the head, then live events.
func TestEvictedIDGetsReset(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := newHub(t, srv, redisbroker.Options{HistorySize: 2}, ssehub.Config{})
	first := h.publish(t, "e", 0)
	var last string
	for i := 1; i <= 5; i++ {
		last = h.publish(t, "e", i)
	}
	for _, from := range []string{first, "no-such-id"} {
		s := openStream(t, h.srv.URL, []string{"e"}, from)
		reset := s.next()
		// The reset's id is the channel's head: the clock, past the last event.
		if reset.Type != ssehub.ResetType || len(reset.LastEventID) != len(last) || reset.LastEventID < last {
			t.Fatalf("resume from %q: first event %q id %q; want %q id from %q on", from, reset.Type, reset.LastEventID, ssehub.ResetType, last)
		}
		last = h.publish(t, "e", 6)
		s.expect(last)
		s.close()
	}
}

// TestPublishOnly: a broker that only publishes, as `ssehub publish
// --broker` does, opens no pub/sub connection, and Check needs only PING.
func TestPublishOnly(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	opt := testOptions(srv)
	opt.ClientName = "publisher"
	client := redis.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	b, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	for i := range 3 {
		pub(t, b, "c", "", i)
	}
	if err := b.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	list := newClient(t, srv).ClientList(t.Context()).Val()
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if strings.Contains(line, " name=publisher ") && !strings.Contains(line, " sub=0 ") {
			t.Fatalf("a publishing broker holds a pub/sub connection: %s", line)
		}
	}
	if !strings.Contains(list, " name=publisher ") {
		t.Fatalf("the publisher's connection is not listed:\n%s", list)
	}
}
