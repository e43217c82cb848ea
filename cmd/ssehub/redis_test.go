package main

import (
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// TestRedisBrokerTwoHubs runs two `ssehub serve` processes on one Redis:
// what is published through hub A, straight into Redis with
// `publish --broker`, or with SSEHUB_BROKER set, reaches a stream on hub B
// in order, and a client resumes on hub A from an id hub B sent.
func TestRedisBrokerTwoHubs(t *testing.T) {
	srv := redistest.Start(t)
	a := startHub(t, "--broker", srv.URL())
	b := startHub(t, "--broker", srv.URL(), "--heartbeat", "50ms")

	events := openEvents(t, b.URL+"/sse?channel=news", "")
	b.waitLog(t, "stream opened", 1)

	var ids []string
	publish := func(env []string, args ...string) {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"publish", "--channel", "news"}, args...)...)
		cmd.Env = append(cmd.Environ(), env...)
		cmd.Stdin = strings.NewReader(`{"n": 1}`)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("publish %v: %v %s", args, err, exitStderr(err))
		}
		ids = append(ids, strings.TrimSpace(string(out)))
	}
	publish(nil, "--url", a.URL)
	publish(nil, "--broker", srv.URL())
	publish([]string{"SSEHUB_BROKER=" + srv.URL()})
	publish([]string{"SSEHUB_BROKER=memory:"}, "--url", b.URL) // memory: means through the hub

	for i, id := range ids {
		e := events.next(t)
		if e.LastEventID != id || e.Data != `{"n":1}` {
			t.Fatalf("event %d on hub B: id %q data %q; want id %q", i, e.LastEventID, e.Data, id)
		}
	}
	resumed := openEvents(t, a.URL+"/sse?channel=news", ids[0])
	for _, id := range ids[1:] {
		if e := resumed.next(t); e.LastEventID != id {
			t.Fatalf("resumed on hub A: id %q, want %q", e.LastEventID, id)
		}
	}

	// Redis goes away: publishing fails with a one-line message, either way.
	srv.Stop()
	for _, args := range [][]string{{"--broker", srv.URL(), "--timeout", "5s"}, {"--url", a.URL}} {
		_, errOut, code := runCLI(t, `{}`, append([]string{"publish"}, args...)...)
		if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "unavailable") ||
			!strings.HasSuffix(errOut, "nothing was published, it is safe to send it again\n") {
			t.Fatalf("publish %v with Redis down: exit %d, stderr %q; want one line saying unavailable and not published", args, code, errOut)
		}
	}
	// Hub B's stream stays open. Redis comes back empty, so hub B cannot
	// tell what its stream missed: it sends a reset once subscribed again,
	// and live events after it.
	srv.Start()
	if e := events.next(t); e.Type != "ssehub.reset" {
		t.Fatalf("after Redis restarted empty hub B sent %q %q, want a reset", e.Type, e.Data)
	}
	out, errOut, code := runCLI(t, `{"n": 2}`, "publish", "--url", a.URL, "--channel", "news")
	if code != 0 {
		t.Fatalf("publish after Redis restarted: exit %d, stderr %q", code, errOut)
	}
	if e := events.next(t); e.LastEventID != strings.TrimSpace(out) || e.Data != `{"n":2}` {
		t.Fatalf("after the reset hub B sent %q %q, want id %s", e.LastEventID, e.Data, out)
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// eventStream is a decoded GET /sse response.
type eventStream struct {
	events chan sse.Event
}

func openEvents(t *testing.T, url, lastID string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	s := &eventStream{events: make(chan sse.Event, 64)}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	go func() {
		defer close(s.events)
		dec := sse.NewDecoder(resp.Body)
		for {
			e, err := dec.Next()
			if err != nil {
				return
			}
			s.events <- e
		}
	}()
	return s
}

func (s *eventStream) next(t *testing.T) sse.Event {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event after 30s")
	}
	return sse.Event{}
}

func TestBrokerURLs(t *testing.T) {
	for _, tt := range []struct {
		url, err string
	}{
		{"memory:", ""},
		{"redis://127.0.0.1:1/0", ""},
		{"rediss://user:secret@127.0.0.1:1/2", ""},
		{"nats://127.0.0.1:1", ""},
		{"nats://127.0.0.1:1,tls://user:secret@127.0.0.1:2", ""},
		{"nats://127.0.0.1", "want nats://HOST:PORT"},
		{"nats://user:secret@127.0.0.1:1,nats://x", "want nats://HOST:PORT"},
		{"nats://127.0.0.1:1/path", "no path"},
		{"kafka://127.0.0.1:1", "unsupported scheme"},
		{"redis://user:secret@127.0.0.1:1/x", "invalid database"},
		{"redis-cluster://127.0.0.1:1", ""},
		{"redis-cluster://127.0.0.1:1,127.0.0.1:2,[::1]:3", ""},
		{"redis-cluster://user:secret@127.0.0.1:1,127.0.0.1:2?dial_timeout=1s", ""},
		{"redis-cluster://127.0.0.1", "is not HOST:PORT"},
		{"redis-cluster://user:secret@127.0.0.1:1,x", "is not HOST:PORT"},
		{"redis-cluster://", "is not HOST:PORT"},
		{"redis-cluster://127.0.0.1:1/0", "no database number"},
		{"redis-cluster://user:secret@127.0.0.1:1?no_such_option=1", "no_such_option"},
	} {
		b, closeBroker, err := openBroker(context.Background(), tt.url, brokerOptions{})
		if tt.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.url, err)
				continue
			}
			if b == nil {
				t.Errorf("%s: no broker", tt.url)
			}
			closeBroker(context.Background())
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line saying %q", tt.url, err, tt.err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tt.url, err)
		}
	}
}

// TestServeWarnsOfUnreachableBroker: a hub whose Redis is down says so
// once it listens, with what to check, serves anyway, and says so again
// when Redis answers.
func TestServeWarnsOfUnreachableBroker(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	hub := startHub(t, "--broker", srv.URL())
	hub.waitLog(t, "broker unreachable; serving anyway and retrying", 1)
	if want := "is the server at " + srv.Addr() + " running and reachable?"; !strings.Contains(hub.log.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, hub.log)
	}
	resp, err := http.Get(hub.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down: %d", resp.StatusCode)
	}
	srv.Start()
	hub.waitLog(t, "broker reachable", 1)
	if n := strings.Count(hub.log.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings, want the one at start-up:\n%s", n, hub.log)
	}
}

// TestRedisEnvelopeFlag: serve --redis-envelope flask-sse and publish
// --broker with SSEHUB_REDIS_ENVELOPE=flask-sse put flask-sse's message on
// the channel, which a plain subscriber sees with only the keys flask-sse
// reads; a stream gets each event once; a bad shape is a one-line error.
func TestRedisEnvelopeFlag(t *testing.T) {
	srv := redistest.Start(t)
	hub := startHub(t, "--broker", srv.URL(), "--redis-envelope", "flask-sse")
	events := openEvents(t, hub.URL+"/sse?channel=fl", "")
	hub.waitLog(t, "stream opened", 1)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	ps := client.Subscribe(t.Context(), "fl")
	defer ps.Close()
	if _, err := ps.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, args := range [][]string{{"--url", hub.URL}, {"--broker", srv.URL()}} {
		cmd := exec.Command(binary, append([]string{"publish", "--channel", "fl", "--type", "t"}, args...)...)
		cmd.Env = append(cmd.Environ(), "SSEHUB_REDIS_ENVELOPE=flask-sse")
		cmd.Stdin = strings.NewReader(`{"n": 1}`)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("publish %v: %v %s", args, err, exitStderr(err))
		}
		ids = append(ids, strings.TrimSpace(string(out)))
	}
	for _, id := range ids {
		msg, err := ps.ReceiveMessage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"data": {"n":1}, "id": "` + id + `", "type": "t"}`; msg.Payload != want {
			t.Fatalf("on the channel: %s, want %s", msg.Payload, want)
		}
		if e := events.next(t); e.LastEventID != id || e.Type != "t" {
			t.Fatalf("stream: %+v, want id %s", e, id)
		}
	}
	_, errOut, code := runCLI(t, `{}`, "publish", "--broker", srv.URL(), "--redis-envelope", "nope")
	if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--redis-envelope") {
		t.Fatalf("bad --redis-envelope: exit %d, stderr %q", code, errOut)
	}
}

// TestRedisWaitReplicasFlag: serve --redis-wait-replicas 1 on a master
// with one replica answers 200 once the replica holds the event; publish
// --broker with SSEHUB_REDIS_WAIT_REPLICAS=2 finds one replica only and
// fails with one line saying so, exit 1, the event published; bad values
// are one-line errors.
func TestRedisWaitReplicasFlag(t *testing.T) {
	master := redistest.StartWith(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	replica := redistest.StartWith(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}})
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer rc.Close()
	waitFor(t, "the replica to follow its master", func() bool {
		return strings.Contains(rc.Info(t.Context(), "replication").Val(), "master_link_status:up")
	})
	hub := startHub(t, "--broker", master.URL(), "--redis-wait-replicas", "1")
	if id, status, msg := postPublish(http.DefaultClient, hub.URL, "wr", `{"n":1}`); status != http.StatusOK {
		t.Fatalf("publish with one replica to wait for: %d %s", status, msg)
	} else if n := rc.XLen(t.Context(), "ssehub:stream:wr").Val(); n != 1 {
		t.Fatalf("the replica holds %d events once publish %s answered, want 1", n, id)
	}

	_, errOut, code := runCLIEnv(t, []string{"SSEHUB_REDIS_WAIT_REPLICAS=2"}, `{"n":2}`,
		"publish", "--channel", "wr", "--broker", master.URL(), "--redis-wait-timeout", "100ms", "--idempotency-key", "k2")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "only 1 of 2 replicas confirmed it within 100ms") {
		t.Fatalf("publish waiting for 2 replicas of 1: exit %d, stderr %q", code, errOut)
	}
	if n := rc.XLen(t.Context(), "ssehub:stream:wr").Val(); n != 2 {
		t.Fatalf("the replica holds %d events, want 2: the unconfirmed publish happened", n)
	}

	for _, args := range [][]string{
		{"--redis-wait-replicas", "-1"},
		{"--redis-wait-replicas", "1", "--redis-wait-timeout", "0s"},
		{"--redis-wait-replicas", "1", "--redis-wait-timeout", "1m"},
	} {
		_, errOut, code := runCLI(t, `{}`, append([]string{"publish", "--broker", master.URL()}, args...)...)
		if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(strings.ToLower(errOut), "wait") {
			t.Errorf("publish %v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestRedisWaitReplicasTopologies: --redis-wait-replicas reaches the broker
// whatever the topology: through Sentinel and on a cluster, a publish
// waiting for more replicas than a master has answers that only its
// replicas confirmed it.
func TestRedisWaitReplicasTopologies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sentinel", func(t *testing.T) string { return redistest.StartSentinel(t).URL() }},
		{"cluster", func(t *testing.T) string { return redistest.StartCluster(t).URL() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := tt.url(t)
			if _, errOut, code := runCLI(t, `{"n":1}`, "publish", "--channel", "wt", "--broker", url, "--redis-wait-replicas", "1"); code != 0 {
				t.Fatalf("publish waiting for the one replica: exit %d, stderr %q", code, errOut)
			}
			_, errOut, code := runCLI(t, `{"n":2}`, "publish", "--channel", "wt", "--broker", url,
				"--redis-wait-replicas", "2", "--redis-wait-timeout", "100ms", "--idempotency-key", "k2")
			if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "only 1 of 2 replicas confirmed it within 100ms") {
				t.Fatalf("publish waiting for 2 replicas of 1: exit %d, stderr %q", code, errOut)
			}
		})
	}
}
