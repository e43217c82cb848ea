package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// TestRedisClusterURLs: a cluster URL's password is hidden in logs, and
// publish goes straight into the cluster (TestBrokerURLs checks how the
// URLs are read).
func TestRedisClusterURLs(t *testing.T) {
	if got := redactURL("redis-cluster://user:secret@127.0.0.1:1,127.0.0.1:2"); got != "redis-cluster://user:xxxxx@127.0.0.1:1,127.0.0.1:2" {
		t.Errorf("redactURL = %q", got)
	}
	if ok, err := directBroker("redis-cluster://127.0.0.1:1"); !ok || err != nil {
		t.Errorf("directBroker(redis-cluster://) = %v, %v; want true", ok, err)
	}
}

// TestRedisClusterFailover runs two `ssehub serve` processes on a Redis
// Cluster of 3 masters and 3 replicas, with streams on both hubs over
// several of 50 channels, and kills with SIGKILL the master of busy
// channels while events are published steadily through both hubs, with
// an Idempotency-Key and again on 503 and 504. Publishing resumes by
// itself; every stream gets every acknowledged event once and in order
// per channel, or a reset; a stream resumed with Last-Event-ID on the
// other hub gets exactly what the first one got after that id; PUBSUB
// SHARDNUMSUB on the owning shards counts both hubs.
func TestRedisClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t)
	a := startHub(t, "--broker", c.URL(), "--heartbeat", "500ms", "--publish-timeout", "3s")
	b := startHub(t, "--broker", c.URL(), "--heartbeat", "500ms", "--publish-timeout", "3s")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub A's log:\n%s\nhub B's log:\n%s", a.log, b.log)
		}
	})
	var channels []string
	for i := range 50 {
		channels = append(channels, fmt.Sprintf("ch.%d", i))
	}
	victim := c.MasterOf(channels[0])
	var busy []string // the channels of the victim
	for _, ch := range channels {
		if c.MasterOf(ch) == victim {
			busy = append(busy, ch)
		}
	}
	if len(busy) < 3 {
		t.Fatalf("the master of %s owns %d of %d channels", channels[0], len(busy), len(channels))
	}
	streams := []*natsStream{
		openNATSStream(t, "A busy", a.URL, busy[:3], ""),
		openNATSStream(t, "A one", a.URL, busy[:1], ""),
		openNATSStream(t, "A ten", a.URL, channels[:10], ""),
		openNATSStream(t, "B busy", b.URL, busy, ""),
		openNATSStream(t, "B other", b.URL, channels[10:20], ""),
		openNATSStream(t, "B one", b.URL, busy[1:2], ""),
	}
	a.waitLog(t, "stream opened", 3)
	b.waitLog(t, "stream opened", 3)

	var (
		mu        sync.Mutex
		acked     = map[string][]int{} // channel -> acknowledged numbers, in order
		channelOf = map[int]string{}
		nAcked    int
		busyAcked int
		retried   int
		killedAt  time.Time // when the master was killed
		firstAck  time.Time // the first acknowledgement on its channels of a publish sent after that
		isBusy    = map[string]bool{}
		stop      = make(chan struct{})
		finished  = make(chan struct{})
	)
	for _, ch := range busy {
		isBusy[ch] = true
	}
	client := &http.Client{Timeout: 10 * time.Second}
	publish := func(hubURL, ch string, n int) bool {
		key := fmt.Sprintf("key-%d", n)
		for {
			began := time.Now()
			_, status, msg := postPublishKey(client, hubURL, ch, fmt.Sprintf(`{"n":%d}`, n), key)
			switch status {
			case http.StatusOK:
				mu.Lock()
				acked[ch] = append(acked[ch], n)
				channelOf[n] = ch
				nAcked++
				if ch == busy[0] {
					busyAcked++
				}
				if isBusy[ch] && !killedAt.IsZero() && began.After(killedAt) && firstAck.IsZero() {
					firstAck = time.Now()
				}
				mu.Unlock()
				return true
			case http.StatusServiceUnavailable, http.StatusGatewayTimeout, 0:
				mu.Lock()
				retried++
				mu.Unlock()
			default:
				t.Errorf("publish %d on %s: %d %s", n, ch, status, msg)
				return false
			}
			select {
			case <-stop:
				return false
			case <-time.After(50 * time.Millisecond): // a client's pause before it sends again
			}
		}
	}
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
			// Every other event on a channel of the victim.
			ch := channels[i%len(channels)]
			if i%2 == 0 {
				ch = busy[(i/2)%len(busy)]
			}
			hub := a.URL
			if i%3 == 0 {
				hub = b.URL
			}
			if !publish(hub, ch, i) {
				return
			}
		}
	}()
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return nAcked, busyAcked
	}
	waitFor(t, "200 acknowledged events", func() bool { n, _ := count(); return n >= 200 })
	resumeFrom := make([]string, len(streams))
	for i, s := range streams {
		waitFor(t, s.name+" to have events", func() bool { return len(s.snapshot()) >= 6 })
		resumeFrom[i] = s.snapshot()[5].LastEventID
	}
	acksAt, busyAt := count()
	mu.Lock()
	killedAt = time.Now()
	victim.Kill()
	mu.Unlock()
	next := c.WaitFailover(busy[0], victim)
	promoted := time.Since(killedAt)
	waitFor(t, "publishing on the failed-over shard", func() bool { _, n := count(); return n >= busyAt+20 })
	waitFor(t, "300 more acknowledged events", func() bool { n, _ := count(); return n >= acksAt+300 })
	close(stop)
	<-finished
	if t.Failed() {
		t.FailNow()
	}
	n, _ := count()
	t.Logf("killed master %s after %d events; replica promoted after %v; publishing on its channels resumed after %v; %d acknowledged in all; %d attempts refused with 503/504",
		victim.Addr(), acksAt, promoted.Round(time.Millisecond), firstAck.Sub(killedAt).Round(time.Millisecond), n, retried)

	// A last event per channel: a stream that has it has all before it.
	last := map[string]int{}
	for k, ch := range channels {
		n := 1_000_000 + k
		if !publish(b.URL, ch, n) {
			t.FailNow()
		}
		last[ch] = n
	}
	for i, s := range streams {
		got := func() map[string][]int {
			per := map[string][]int{}
			for _, e := range s.snapshot() {
				if e.Type != ssehub.ResetType {
					n := numberOf(t, e)
					per[channelOf[n]] = append(per[channelOf[n]], n)
				}
			}
			return per
		}
		for _, ch := range s.channels {
			waitFor(t, s.name+" to get the last event of "+ch, func() bool { return slices.Contains(got()[ch], last[ch]) })
		}
		resets := 0
		for _, e := range s.snapshot() {
			if e.Type == ssehub.ResetType {
				resets++
			}
		}
		per := got()
		for _, ch := range s.channels {
			if resets == 0 && !slices.Equal(per[ch], acked[ch]) {
				t.Errorf("%s on %s: got %d events, want the %d acknowledged, in order", s.name, ch, len(per[ch]), len(acked[ch]))
			}
			if !slices.IsSorted(per[ch]) || len(slices.Compact(slices.Clone(per[ch]))) != len(per[ch]) {
				t.Errorf("%s on %s: events out of order or twice: %v", s.name, ch, per[ch])
			}
		}
		if resets > 0 {
			t.Logf("%s got %d resets", s.name, resets)
		}

		// Reconnecting to the other hub from a point before the crash
		// yields exactly what this stream got after it.
		other := b.URL
		if strings.HasPrefix(s.name, "B") {
			other = a.URL
		}
		// Per channel: events of different channels keep no order
		// between them.
		all := s.snapshot()
		from := slices.IndexFunc(all, func(e sse.Event) bool { return e.LastEventID == resumeFrom[i] })
		want := map[string][]int{}
		total := 0
		for _, e := range all[from+1:] {
			if e.Type != ssehub.ResetType {
				n := numberOf(t, e)
				want[channelOf[n]] = append(want[channelOf[n]], n)
				total++
			}
		}
		r := openNATSStream(t, s.name+" resumed", other, s.channels, resumeFrom[i])
		waitFor(t, s.name+" resumed to catch up", func() bool { return len(r.snapshot()) >= total })
		have := map[string][]int{}
		for _, e := range r.snapshot() {
			if e.Type == ssehub.ResetType {
				t.Errorf("%s resumed from %q on the other hub: a reset", s.name, resumeFrom[i])
				continue
			}
			n := numberOf(t, e)
			have[channelOf[n]] = append(have[channelOf[n]], n)
		}
		for _, ch := range s.channels {
			if !slices.Equal(have[ch], want[ch]) {
				t.Errorf("%s resumed from %q on the other hub: %d events on %s, want the %d it had after that id",
					s.name, resumeFrom[i], len(have[ch]), ch, len(want[ch]))
			}
		}
	}

	// Each hub holds one sharded subscription to each busy channel, on the
	// new master.
	nc := redis.NewClient(&redis.Options{Addr: next.Addr()})
	defer nc.Close()
	subs, err := nc.PubSubShardNumSub(t.Context(), busy...).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range busy {
		if subs[ch] != 2 {
			t.Errorf("PUBSUB SHARDNUMSUB %s on the new master %s = %d; want 2, one per hub", ch, next.Addr(), subs[ch])
		}
	}
	for _, hub := range []*hubProcess{a, b} {
		waitFor(t, "the hub to be ready", func() bool { return readyz(t, hub.URL).status == http.StatusOK })
	}

	// The killed master comes back, as a replica of the new one; the hubs
	// stay on the new master.
	victim.Start()
	c.WaitHealthy()
	if !publish(a.URL, busy[0], 2_000_000) {
		t.FailNow()
	}
	for _, s := range streams[:2] {
		waitFor(t, s.name+" to get an event after the old master came back", func() bool {
			return slices.ContainsFunc(s.snapshot(), func(e sse.Event) bool { return e.Data == `{"n":2000000}` })
		})
	}
}
