package redisbroker_test

import (
	"encoding/json"
	"errors"
	"net/http"
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

// quickSync makes a master send its data set to a new replica at once,
// rather than after 5 s of waiting for more replicas.
var quickSync = []string{"--repl-diskless-sync-delay", "0"}

// startReplica starts a replica of master and waits until it has copied
// the master's data set and follows its writes.
func startReplica(t *testing.T, master *redistest.Server) *redistest.Server {
	t.Helper()
	replica := redistest.StartWith(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}})
	mc, rc := newClient(t, master), newClient(t, replica)
	waitFor(t, "the replica to follow its master", func() bool {
		return strings.Contains(rc.Info(t.Context(), "replication").Val(), "master_link_status:up") &&
			strings.Contains(mc.Info(t.Context(), "replication").Val(), "connected_slaves:1")
	})
	return replica
}

// TestWaitReplicas: with WaitReplicas 1, a publish answers once the
// replica holds the event. With the replica frozen, it answers 504 after
// the wait timeout, before the publish timeout: the event is published,
// but not confirmed. Once the replica is thawed, the same message sent
// again with its key answers 200 with the event's id, and is delivered
// once.
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	const replicaWait = time.Second
	master := redistest.StartWith(t, redistest.Options{Args: quickSync})
	replica := startReplica(t, master)
	rc := newClient(t, replica)
	b := newBroker(t, master, redisbroker.Options{Prefix: "wr:", WaitReplicas: 1, WaitTimeout: replicaWait})
	th := newHubOn(t, b, ssehub.Config{PublishTimeout: 5 * time.Second})
	s := openStream(t, th.srv.URL, []string{"w"}, "")

	post := func(key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, th.srv.URL+"/publish", strings.NewReader(`{"channel":"w","data":{"key":"`+key+`"}}`))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ ID, Error string }
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode, body.Error
		}
		return resp.StatusCode, body.ID
	}

	// Confirmed: the replica holds the event when the publish answers.
	status, first := post("w-1")
	if status != http.StatusOK {
		t.Fatalf("publish with the replica up: %d %s", status, first)
	}
	if n := rc.XLen(t.Context(), "wr:stream:w").Val(); n != 1 {
		t.Fatalf("the replica holds %d events once the publish answered, want 1", n)
	}
	s.expect(first)

	// Frozen replica: the publish answers 504 once WAIT gives up.
	replica.Freeze()
	start := time.Now()
	status, msg := post("w-2")
	took := time.Since(start)
	if status != http.StatusGatewayTimeout || !strings.Contains(msg, "only 0 of 1 replicas confirmed it within 1s") {
		t.Fatalf("publish with the replica frozen: %d %q; want 504, only 0 of 1 replicas confirmed", status, msg)
	}
	if took < replicaWait {
		t.Fatalf("the publish answered after %v, before the wait timeout %v", took, replicaWait)
	}
	// Published all the same: the stream got it.
	unconfirmed := s.next()
	// Sent again on a connection of its own while the replica is still
	// frozen, it is not confirmed either: the publish it names was made
	// on another connection, and the WAIT covers it all the same.
	other := newBroker(t, master, redisbroker.Options{Prefix: "wr:", WaitReplicas: 1, WaitTimeout: replicaWait})
	m := ssehub.Message{Channel: "w", Data: json.RawMessage(`{"key":"w-2"}`), IdempotencyKey: "w-2"}
	if e, err := other.Publish(t.Context(), m); !errors.Is(err, ssehub.ErrOutcomeUnknown) {
		t.Fatalf("sent again through another client, replica still frozen: %v, %v; want ErrOutcomeUnknown", e, err)
	}

	replica.Thaw()
	waitFor(t, "the replica to catch up", func() bool { return rc.XLen(t.Context(), "wr:stream:w").Val() == 2 })
	status, again := post("w-2")
	if status != http.StatusOK || again != unconfirmed.LastEventID {
		t.Fatalf("the same message sent again: %d %s; want 200 and id %s", status, again, unconfirmed.LastEventID)
	}
	status, last := post("w-3")
	if status != http.StatusOK {
		t.Fatalf("publish after the thaw: %d %s", status, last)
	}
	s.expect(last) // nothing in between: w-2 was delivered once
	t.Logf("504 after %v", took)
}

// TestWaitReplicasBroker checks the broker's errors with WaitReplicas: an
// error wrapping ErrOutcomeUnknown, and the options New refuses.
func TestWaitReplicasBroker(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t) // no replica
	b := newBroker(t, srv, redisbroker.Options{Prefix: "wb:", WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	_, err := b.Publish(t.Context(), ssehub.Message{Channel: "w", Data: json.RawMessage(`1`), IdempotencyKey: "k"})
	if !errors.Is(err, ssehub.ErrOutcomeUnknown) || !errors.Is(err, redisbroker.ErrNotReplicated) ||
		!strings.Contains(err.Error(), "published, but only 0 of 1 replicas confirmed it within 50ms") {
		t.Fatalf("publish without a replica: %v; want ErrOutcomeUnknown, only 0 of 1 replicas", err)
	}
	if n := newClient(t, srv).XLen(t.Context(), "wb:stream:w").Val(); n != 1 {
		t.Fatalf("the stream holds %d events, want 1", n)
	}

	client := newClient(t, srv)
	for _, c := range []struct {
		opts redisbroker.Options
		want string
	}{
		{redisbroker.Options{WaitReplicas: -1}, "WaitReplicas -1"},
		{redisbroker.Options{WaitReplicas: 1, WaitTimeout: -time.Second}, "WaitTimeout -1s"},
		{redisbroker.Options{WaitReplicas: 1, WaitTimeout: time.Microsecond}, "want 1ms or more"},
		{redisbroker.Options{WaitReplicas: 1, WaitTimeout: time.Minute}, "less than the client's read timeout"},
	} {
		if _, err := redisbroker.New(client, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v; want an error with %q", c.opts, err, c.want)
		}
	}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}, ReadTimeout: time.Second})
	defer cluster.Close()
	if _, err := redisbroker.New(cluster, redisbroker.Options{WaitReplicas: 1, WaitTimeout: time.Second}); err == nil || !strings.Contains(err.Error(), "less than the client's read timeout") {
		t.Errorf("New with a cluster client whose read timeout is WaitTimeout: %v; want an error", err)
	}
	// The same options without waiting are fine.
	if _, err := redisbroker.New(client, redisbroker.Options{WaitTimeout: time.Minute}); err != nil {
		t.Errorf("New with WaitTimeout alone: %v", err)
	}
}

// TestClusterWaitReplicas publishes with WaitReplicas on a 3+3 cluster,
// on channels of every master at once, so that pipelines span masters:
// each master's calls are followed by a WAIT of their own. With one
// master's replica frozen, only that master's publishes answer
// ErrNotReplicated; thawed, sending them again with their keys publishes
// nothing more.
func TestClusterWaitReplicas(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	b := newClusterBroker(t, c, redisbroker.Options{WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	byMaster := map[*redistest.Server][]string{}
	var channels []string
	for i := 0; len(byMaster) < 3 || i < 30; i++ {
		ch := "w" + strconv.Itoa(i)
		m := c.MasterOf(ch)
		byMaster[m] = append(byMaster[m], ch)
		channels = append(channels, ch)
	}
	frozen := c.MasterOf(channels[0])
	publishAll := func(round string) (map[string]string, map[string]error) {
		var mu sync.Mutex
		ids, errs := map[string]string{}, map[string]error{}
		var wg sync.WaitGroup
		for _, ch := range channels {
			wg.Go(func() {
				e, err := b.Publish(t.Context(), ssehub.Message{Channel: ch, Data: json.RawMessage(`1`), IdempotencyKey: round + ch})
				mu.Lock()
				defer mu.Unlock()
				if errs[ch] = err; err == nil {
					ids[ch] = e.ID
				}
			})
		}
		wg.Wait()
		return ids, errs
	}
	// A replica just attached may still be copying its master: send
	// again, with the same keys, until every replica confirms.
	var first map[string]string
	waitFor(t, "every replica to confirm", func() bool {
		first, _ = publishAll("a-")
		return len(first) == len(channels)
	})
	replica := c.ReplicaOf(frozen)
	replica.Freeze()
	_, errs := publishAll("b-")
	for ch, err := range errs {
		want := slices.Contains(byMaster[frozen], ch)
		if want && !(errors.Is(err, redisbroker.ErrNotReplicated) && errors.Is(err, ssehub.ErrOutcomeUnknown)) || !want && err != nil {
			t.Errorf("publish on %s (its master's replica frozen: %v): %v", ch, want, err)
		}
	}
	replica.Thaw()
	for _, ch := range byMaster[frozen] {
		m := ssehub.Message{Channel: ch, Data: json.RawMessage(`1`), IdempotencyKey: "b-" + ch}
		var e *ssehub.Event
		waitFor(t, "the thawed replica to confirm "+ch, func() bool {
			var err error
			e, err = b.Publish(t.Context(), m)
			return err == nil
		})
		events, err := replayAll(t, b, []string{ch}, first[ch])
		if err != nil || len(events) != 1 || events[0].ID != e.ID {
			t.Errorf("%s after %s: %v, %v; want the one event %s, published once", ch, first[ch], eventIDs(events), err, e.ID)
		}
	}
}
