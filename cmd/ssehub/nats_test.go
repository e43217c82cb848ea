package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/natstest"
	"github.com/ssehub/ssehub/internal/sse"
)

// natsStream is an open GET /sse on a hub, read in the background.
type natsStream struct {
	name       string
	channels   []string
	mu         sync.Mutex
	events     []sse.Event
	heartbeats atomic.Int64
	ended      chan struct{}
}

func openNATSStream(t *testing.T, name, hubURL string, channels []string, lastID string) *natsStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	q := url.Values{"channel": channels}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hubURL+"/sse?"+q.Encode(), nil)
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
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /sse on %s: %s %s", name, resp.Status, b)
	}
	s := &natsStream{name: name, channels: channels, ended: make(chan struct{})}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	dec := sse.NewDecoder(resp.Body)
	dec.OnComment = func(string) { s.heartbeats.Add(1) }
	go func() {
		defer close(s.ended)
		for {
			e, err := dec.Next()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.events = append(s.events, e)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *natsStream) snapshot() []sse.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *natsStream) has(id string) bool {
	return slices.ContainsFunc(s.snapshot(), func(e sse.Event) bool { return e.LastEventID == id })
}

// numberOf returns n of an event whose data is {"n":n}.
func numberOf(t *testing.T, e sse.Event) int {
	t.Helper()
	var d struct{ N *int }
	if err := json.Unmarshal([]byte(e.Data), &d); err != nil || d.N == nil {
		t.Fatalf("event %s has data %q, not {\"n\":...}", e.LastEventID, e.Data)
	}
	return *d.N
}

// postPublish publishes through a hub's POST /publish and returns the id,
// or the status and body of a refusal.
func postPublish(client *http.Client, hubURL, channel, data string) (string, int, string) {
	return postPublishKey(client, hubURL, channel, data, "")
}

// postPublishKey is postPublish with an Idempotency-Key, when key is set.
func postPublishKey(client *http.Client, hubURL, channel, data, key string) (string, int, string) {
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": json.RawMessage(data)})
	req, err := http.NewRequest(http.MethodPost, hubURL+"/publish", bytes.NewReader(body))
	if err != nil {
		return "", 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode, string(b)
	}
	var out struct{ ID string }
	json.Unmarshal(b, &out)
	return out.ID, resp.StatusCode, ""
}

// streamLeader returns the cluster's server that leads the events stream.
func streamLeader(t *testing.T, c *natstest.Cluster, js jetstream.JetStream) *natstest.Server {
	t.Helper()
	var leader *natstest.Server
	waitFor(t, "the stream to have a leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "SSEHUB")
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		leader = c.Server(s.CachedInfo().Cluster.Leader)
		return leader != nil
	})
	return leader
}

// TestNATSFailover runs two `ssehub serve` on a 3-node JetStream cluster,
// with streams on both over one and several channels, and SIGKILLs the
// stream's leader while a publisher posts steadily to the first hub.
// Publishing goes on after a pause; every acknowledged event reaches every
// stream once and in order; a client reconnecting to the other hub with
// Last-Event-ID resumes exactly, for one channel and for several; and the
// killed node, restarted, rejoins the stream.
func TestNATSFailover(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	// A publish may wait out the election of the stream's new leader.
	a := startHub(t, "--broker", c.URL(), "--heartbeat", "500ms", "--publish-timeout", "15s")
	b := startHub(t, "--broker", c.URL(), "--heartbeat", "500ms", "--publish-timeout", "15s")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub A's log:\n%s\nhub B's log:\n%s", a.log, b.log)
		}
	})
	admin, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}

	channels := []string{"fo.a", "fo.b", "fo.c"}
	streams := []*natsStream{
		openNATSStream(t, "A all", a.URL, channels, ""),
		openNATSStream(t, "A fo.a", a.URL, channels[:1], ""),
		openNATSStream(t, "B all", b.URL, channels, ""),
		openNATSStream(t, "B fo.b,fo.c", b.URL, channels[1:], ""),
	}
	a.waitLog(t, "stream opened", 2)
	b.waitLog(t, "stream opened", 2)

	var (
		mu       sync.Mutex
		acked    = map[string][]string{} // channel -> acknowledged ids, in order
		nAcked   int
		failures []string
		pause    time.Duration
		lastAck  = time.Now()
		stop     = make(chan struct{})
		finished = make(chan struct{})
	)
	client := &http.Client{Timeout: 30 * time.Second}
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ch := channels[i%len(channels)]
			id, status, msg := postPublish(client, a.URL, ch, fmt.Sprintf(`{"n":%d}`, i))
			mu.Lock()
			if status == http.StatusOK {
				acked[ch] = append(acked[ch], id)
				nAcked++
				pause = max(pause, time.Since(lastAck))
				lastAck = time.Now()
			} else {
				failures = append(failures, fmt.Sprintf("%d %s", status, strings.TrimSpace(msg)))
			}
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return nAcked
	}

	waitFor(t, "100 acknowledged events", func() bool { return count() >= 100 })
	leader := streamLeader(t, c, js)
	// Resume points from before the crash, one per stream.
	resumeFrom := make([]string, len(streams))
	for i, s := range streams {
		waitFor(t, s.name+" to have events", func() bool { return len(s.snapshot()) >= 10 })
		resumeFrom[i] = s.snapshot()[5].LastEventID
	}
	leader.Kill()
	killedAt := count()
	waitFor(t, "300 more acknowledged events after the crash", func() bool { return count() >= killedAt+300 })
	close(stop)
	<-finished
	t.Logf("killed stream leader %s after %d events; %d acknowledged in all; longest pause between acknowledgements %v; %d publishes refused %v",
		leader.Name(), killedAt, count(), pause.Round(time.Millisecond), len(failures), failures)

	// A last event per channel: a stream that has it has everything
	// published before it.
	last := map[string]string{}
	for k, ch := range channels {
		id, status, msg := postPublish(client, b.URL, ch, fmt.Sprintf(`{"n":%d}`, 1_000_000+k))
		if status != http.StatusOK {
			t.Fatalf("last publish on %s: %d %s", ch, status, msg)
		}
		last[ch] = id
		acked[ch] = append(acked[ch], id)
	}
	for i, s := range streams {
		for _, ch := range s.channels {
			waitFor(t, s.name+" to get the last event of "+ch, func() bool { return s.has(last[ch]) })
		}
		got := s.snapshot()
		seen := map[string]bool{}
		for j, e := range got {
			if e.Type == ssehub.ResetType {
				t.Fatalf("%s: a reset at event %d, with the whole history in the stream", s.name, j)
			}
			// One publisher numbers its events: each stream gets them in
			// that order.
			if j > 0 && numberOf(t, e) <= numberOf(t, got[j-1]) {
				t.Fatalf("%s: event %s (%s) after %s (%s)", s.name, e.LastEventID, e.Data, got[j-1].LastEventID, got[j-1].Data)
			}
			seen[e.LastEventID] = true
		}
		for _, ch := range s.channels {
			for _, id := range acked[ch] {
				if !seen[id] {
					t.Fatalf("%s: acknowledged event %s on %s never arrived", s.name, id, ch)
				}
			}
		}
		// Reconnecting to the other hub from a point before the crash
		// yields exactly what this stream got after it.
		other := b.URL
		if strings.HasPrefix(s.name, "B") {
			other = a.URL
		}
		resumed := openNATSStream(t, s.name+" resumed", other, s.channels, resumeFrom[i])
		var want []string
		from := slices.IndexFunc(got, func(e sse.Event) bool { return e.LastEventID == resumeFrom[i] })
		for _, e := range got[from+1:] {
			want = append(want, e.LastEventID+" "+e.Data)
		}
		waitFor(t, s.name+" resumed to catch up", func() bool { return len(resumed.snapshot()) >= len(want) })
		var have []string
		for _, e := range resumed.snapshot() {
			have = append(have, e.LastEventID+" "+e.Data)
		}
		if !slices.Equal(have, want) {
			t.Fatalf("%s resumed from %s on the other hub: %d events, want the %d it had after that id\nfirst got %q\nfirst want %q",
				s.name, resumeFrom[i], len(have), len(want), have[:min(3, len(have))], want[:min(3, len(want))])
		}
	}

	// The killed node comes back and rejoins the stream's replicas.
	leader.Start()
	waitFor(t, "the restarted node to be a current replica", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "SSEHUB")
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
	id, status, msg := postPublish(client, b.URL, "fo.a", `{"n":2000000}`)
	if status != http.StatusOK {
		t.Fatalf("publish after the restart: %d %s", status, msg)
	}
	for _, s := range streams[:3] {
		waitFor(t, s.name+" to get an event after the restart", func() bool { return s.has(id) })
	}
	for _, hub := range []*hubProcess{a, b} {
		if r := readyz(t, hub.URL); r.status != http.StatusOK {
			t.Errorf("/readyz after the restart: %+v", r)
		}
	}
}

// TestNATSClusterDown stops the whole cluster under a hub: publishes are
// refused with 503 (through the hub and with publish --broker), /readyz
// says why, the open stream keeps its heartbeats; once the cluster is back
// the hub recovers by itself and the stream gets new events, nothing lost
// and nothing twice.
func TestNATSClusterDown(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	hub := startHub(t, "--broker", c.URL(), "--heartbeat", "100ms")
	s := openNATSStream(t, "stream", hub.URL, []string{"down"}, "")
	hub.waitLog(t, "stream opened", 1)
	client := &http.Client{Timeout: 30 * time.Second}
	first, status, msg := postPublish(client, hub.URL, "down", `1`)
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, msg)
	}
	out, errOut, code := runCLI(t, `2`, "publish", "--broker", c.URL(), "--channel", "down")
	if code != 0 {
		t.Fatalf("publish --broker: exit %d, %s", code, errOut)
	}
	second := strings.TrimSpace(out)
	waitFor(t, "both events", func() bool { return s.has(first) && s.has(second) })
	waitFor(t, "/readyz 200", func() bool { return readyz(t, hub.URL).status == http.StatusOK })

	c.Stop()
	var down readiness
	// Once the hub knows it has no connection, a publish cannot have gone
	// out: it is refused as not published.
	waitFor(t, "/readyz 503, not connected", func() bool {
		down = readyz(t, hub.URL)
		return down.status == http.StatusServiceUnavailable && strings.Contains(down.Error, "not connected to NATS")
	})
	if down.Code != "unavailable" {
		t.Errorf("/readyz with the cluster down: %+v", down)
	}
	_, status, msg = postPublish(client, hub.URL, "down", `3`)
	if status != http.StatusServiceUnavailable || !strings.Contains(msg, `"unavailable"`) {
		t.Fatalf("publish with the cluster down: %d %s, want 503 unavailable", status, msg)
	}
	_, errOut, code = runCLI(t, `3`, "publish", "--broker", c.URL(), "--channel", "down")
	if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "unavailable") {
		t.Fatalf("publish --broker with the cluster down: exit %d, stderr %q; want one line saying unavailable", code, errOut)
	}
	beats := s.heartbeats.Load()
	waitFor(t, "heartbeats on the open stream", func() bool { return s.heartbeats.Load() >= beats+3 })

	c.Start()
	waitFor(t, "/readyz 200 again", func() bool { return readyz(t, hub.URL).status == http.StatusOK })
	third, status, msg := postPublish(client, hub.URL, "down", `4`)
	if status != http.StatusOK {
		t.Fatalf("publish after the outage: %d %s", status, msg)
	}
	waitFor(t, "the event after the outage", func() bool { return s.has(third) })
	var got []string
	for _, e := range s.snapshot() {
		got = append(got, e.LastEventID)
	}
	if want := []string{first, second, third}; !slices.Equal(got, want) {
		t.Fatalf("the stream got %v, want %v", got, want)
	}
	select {
	case <-s.ended:
		t.Fatal("the stream ended")
	default:
	}
}

// TestNATSIdempotencyKey: through a hub on NATS, a publish sent again with
// its Idempotency-Key answers the first event's id and the stream gets the
// event once; the key with another message is refused with 422.
func TestNATSIdempotencyKey(t *testing.T) {
	srv := natstest.Start(t)
	hub := startHub(t, "--broker", srv.URL())
	s := openNATSStream(t, "stream", hub.URL, []string{"keyed"}, "")
	hub.waitLog(t, "stream opened", 1)
	client := &http.Client{Timeout: 30 * time.Second}
	first, status, msg := postPublishKey(client, hub.URL, "keyed", `{"n":1}`, "order-1")
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, msg)
	}
	again, status, msg := postPublishKey(client, hub.URL, "keyed", `{"n":1}`, "order-1")
	if status != http.StatusOK || again != first {
		t.Fatalf("publish again with the key: %d %q %s, want 200 and id %q", status, again, msg, first)
	}
	if _, status, msg := postPublishKey(client, hub.URL, "keyed", `{"n":2}`, "order-1"); status != http.StatusUnprocessableEntity || !strings.Contains(msg, "idempotency_key_reused") {
		t.Fatalf("the key with another message: %d %s, want 422", status, msg)
	}
	last, status, msg := postPublish(client, hub.URL, "keyed", `{"n":3}`)
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, msg)
	}
	waitFor(t, "the last event", func() bool { return s.has(last) })
	var got []string
	for _, e := range s.snapshot() {
		got = append(got, e.LastEventID)
	}
	if want := []string{first, last}; !slices.Equal(got, want) {
		t.Fatalf("the stream got %v, want %v", got, want)
	}
}
