package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// failoverTimeout bounds a failover: the sentinels call the master down
// after a second and promote the replica within a few more.
const failoverTimeout = 30 * time.Second

// newSentinelBroker returns a broker on a failover client of its own for
// set, as `ssehub serve --broker redis-sentinel://...` makes it. Both end
// with the test.
func newSentinelBroker(t testing.TB, set *redistest.Sentinel, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            redistest.MasterName,
		SentinelAddrs:         set.SentinelAddrs(),
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
	})
	b, err := redisbroker.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close(context.Background())
		c.Close()
	})
	return b
}

// publishRetry publishes n on channel with an idempotency key, sending it
// again while the hub answers that it is unavailable or that the outcome
// is unknown, as a publisher does during a failover. It returns the id.
func publishRetry(t testing.TB, h *ssehub.Hub, channel string, n int) string {
	t.Helper()
	m := ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
		IdempotencyKey: fmt.Sprintf("%s-%d-%d", channel, n, time.Now().UnixNano())}
	deadline := time.Now().Add(failoverTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		id, err := h.Publish(ctx, m)
		cancel()
		switch {
		case err == nil:
			return id
		case !errors.Is(err, ssehub.ErrUnavailable) && !errors.Is(err, ssehub.ErrOutcomeUnknown):
			t.Fatalf("publish %d on %q: %v", n, channel, err)
		case time.Now().After(deadline):
			t.Fatalf("publish %d on %q: still failing after %v: %v", n, channel, failoverTimeout, err)
		}
		<-tick.C
	}
}

// TestSentinelLostTail: the master acknowledges events that its replica
// has not copied, and dies; Sentinel promotes the replica. The hub
// publishes again without a restart; its stream stays open and gets a
// reset, since events it delivered are gone, then the events after it; a
// resume from before the lost events gets a reset instead of skipping
// them, also on a channel the hub only published on, and a resume from
// the last lost event continues exactly. /readyz fails while there is no
// master.
func TestSentinelLostTail(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinel(t)
	th := newHubOn(t, newSentinelBroker(t, set, redisbroker.Options{}), ssehub.Config{})
	// A broker that only publishes, as `ssehub publish --broker` or a hub
	// without streams: it has no subscription that would reconnect.
	pb := newSentinelBroker(t, set, redisbroker.Options{})
	pub := func(n int) string {
		t.Helper()
		e, err := pb.Publish(t.Context(), ssehub.Message{Channel: "c", Data: json.RawMessage(strconv.Itoa(n))})
		if err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	master, replica := set.Master(), set.Nodes()[1]
	mc := redis.NewClient(&redis.Options{Addr: master.Addr(), MaxRetries: -1})
	defer mc.Close()
	ctx := t.Context()

	s := openStream(t, th.srv.URL, []string{"a"}, "")
	a1 := th.publish(t, "a", 1)
	b1 := th.publish(t, "b", 1)
	a2 := th.publish(t, "a", 2)
	c1 := pub(1)
	s.expect(a1, a2)
	if n, err := mc.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	// The replica stops copying; the master acknowledges more.
	replica.Freeze()
	if err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	a3 := th.publish(t, "a", 3)
	a4 := th.publish(t, "a", 4)
	th.publish(t, "b", 2)
	pub(2)
	s.expect(a3, a4)
	master.Kill()
	replica.Thaw()

	waitFor(t, "/readyz to fail without a master", func() bool { return th.hub.Ready(ctx) != nil })
	err := th.hub.Ready(ctx)
	t.Logf("ready while the master is down: %v", err)
	if promoted := set.WaitFailover(master, failoverTimeout); promoted != replica {
		t.Fatalf("promoted %s, want the replica", promoted.Addr())
	}

	reset := s.next()
	if reset.Type != ssehub.ResetType {
		t.Fatalf("after the failover the stream got %q id %q %s; want a reset", reset.Type, reset.LastEventID, reset.Data)
	}
	a5 := publishRetry(t, th.hub, "a", 5)
	s.expect(a5)
	waitFor(t, "/readyz after the failover", func() bool { return th.hub.Ready(ctx) == nil })
	// The publishing broker checks what it published before its next
	// publish goes out.
	var c3 string
	waitFor(t, "a publish on c after the failover", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		e, err := pb.Publish(pctx, ssehub.Message{Channel: "c", Data: json.RawMessage("3"), IdempotencyKey: "c3"})
		if err == nil {
			c3 = e.ID
		}
		return err == nil
	})
	if seq(t, a5) <= seq(t, a4) {
		t.Fatalf("event after the failover has id %s, not after the lost %s", a5, a4)
	}

	for _, tt := range []struct {
		channel, last string
		reset         bool
	}{
		{"a", a2, true},  // the lost a3 and a4 follow it
		{"a", a3, true},  // the lost a4 follows it
		{"a", a4, false}, // the last lost event: nothing after it was lost
		{"a", reset.LastEventID, false},
		{"b", b1, true}, // its second event, published by this hub only, was lost
		{"c", c1, true}, // its second event, published by the other broker only, was lost
		{"c", c3, false},
	} {
		r := openStream(t, th.srv.URL, []string{tt.channel}, tt.last)
		if tt.channel == "c" && !tt.reset {
			// Nothing follows c3 yet: a live event is the first.
			c4 := pub(4)
			if e := r.next(); e.LastEventID != c4 {
				t.Errorf("resume on c from %s: %q id %s; want %s", tt.last, e.Type, e.LastEventID, c4)
			}
			r.close()
			continue
		}
		e := r.next()
		switch {
		case tt.reset && e.Type != ssehub.ResetType:
			t.Errorf("resume on %q from %s: %q id %s; want a reset", tt.channel, tt.last, e.Type, e.LastEventID)
		case !tt.reset && (e.Type == ssehub.ResetType || e.LastEventID != a5):
			t.Errorf("resume on %q from %s: %q id %s; want %s", tt.channel, tt.last, e.Type, e.LastEventID, a5)
		}
		r.close()
	}
}

func seq(t testing.TB, id string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		t.Fatalf("id %q is not a sequence number", id)
	}
	return n
}
