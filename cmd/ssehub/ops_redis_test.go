package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// waitFor polls cond until it holds, failing the test after 30 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type readiness struct {
	status int
	Code   string `json:"code"`
	Error  string `json:"error"`
}

func readyz(t *testing.T, url string) readiness {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := readiness{status: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return r
}

// TestReadinessRedisOutage stops Redis under a hub: /readyz turns 503 with
// the reason, the broker error counter moves, the open stream stays open,
// and once Redis is back the hub is ready again and counts a reconnect.
func TestReadinessRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	hub := startHub(t, "--broker", srv.URL(), "--heartbeat", "100ms")
	events := openEvents(t, hub.URL+"/sse?channel=ready", "")
	hub.waitLog(t, "stream opened", 1)
	waitFor(t, "/readyz 200 with Redis up", func() bool { return readyz(t, hub.URL).status == http.StatusOK })
	if _, errOut, code := runCLI(t, `{"n":1}`, "publish", "--url", hub.URL, "--channel", "ready"); code != 0 {
		t.Fatalf("publish: %s", errOut)
	}
	events.next(t)
	metric := func(name string) float64 { return sampleValue(t, scrapeMetrics(t, hub.URL+"/metrics"), name) }
	if got := metric("ssehub_broker_errors_total"); got != 0 {
		t.Fatalf("ssehub_broker_errors_total = %v before the outage", got)
	}

	srv.Stop()
	var down readiness
	waitFor(t, "/readyz 503 with Redis down", func() bool {
		down = readyz(t, hub.URL)
		return down.status == http.StatusServiceUnavailable
	})
	if down.Code != "unavailable" || down.Error == "" {
		t.Errorf("/readyz with Redis down: %+v, want code unavailable and a reason", down)
	}
	waitFor(t, "a broker error counted", func() bool { return metric("ssehub_broker_errors_total") > 0 })
	// Liveness is not readiness: the process is fine.
	if code := statusOf(t, hub.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with Redis down: %d", code)
	}

	srv.Start()
	waitFor(t, "/readyz 200 with Redis back", func() bool { return readyz(t, hub.URL).status == http.StatusOK })
	waitFor(t, "a reconnect counted", func() bool { return metric("ssehub_broker_reconnects_total") >= 1 })
	// The stream survived the outage and delivers again (after the reset
	// that an emptied Redis calls for).
	out, errOut, code := runCLI(t, `{"n":2}`, "publish", "--url", hub.URL, "--channel", "ready")
	if code != 0 {
		t.Fatalf("publish after the outage: %s", errOut)
	}
	for {
		if e := events.next(t); e.Type != ssehub.ResetType {
			if e.Data != `{"n":2}` || e.LastEventID != strings.TrimSpace(out) {
				t.Fatalf("after the outage: %+v, want the new event", e)
			}
			break
		}
	}
}

// TestDrainRedisNoLoss drains a hub on Redis while events flow, then
// restarts it: every client, resuming on the new process from the last id
// it saw, gets every event once, in order.
func TestDrainRedisNoLoss(t *testing.T) {
	const streams = 8
	srv := redistest.Start(t)
	old := startHub(t, "--broker", srv.URL(), "--drain", "1s")

	bodies := make([]io.ReadCloser, streams)
	decoders := make([]*sse.Decoder, streams)
	for i := range decoders {
		resp, err := http.Get(old.URL + "/sse?channel=drain")
		if err != nil {
			t.Fatal(err)
		}
		bodies[i], decoders[i] = resp.Body, sse.NewDecoder(resp.Body)
	}
	old.waitLog(t, "stream opened", streams)

	// A back end publishes straight into Redis every 10ms throughout.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	pub, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())
	var (
		mu        sync.Mutex
		published int
	)
	stop := make(chan struct{})
	publisherDone := make(chan struct{})
	publish := func() {
		mu.Lock()
		defer mu.Unlock()
		m := ssehub.Message{Channel: "drain", Data: json.RawMessage(strconv.Itoa(published))}
		if _, err := pub.Publish(context.Background(), m); err != nil {
			t.Errorf("publish %d: %v", published, err)
			return
		}
		published++
	}
	// Every stream has an event, and so an id to resume from, before the
	// drain: a client that has none can only come back for live events.
	publish()
	got := make([][]int, streams)
	lastIDs := make([]string, streams)
	for i, d := range decoders {
		e, err := d.Next()
		if err != nil || e.Data != "0" {
			t.Fatalf("stream %d: first event %+v, %v", i, e, err)
		}
		got[i], lastIDs[i] = []int{0}, e.LastEventID
	}
	go func() {
		defer close(publisherDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				publish()
			}
		}
	}()

	if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, d := range decoders {
		wg.Go(func() {
			defer bodies[i].Close()
			for {
				e, err := d.Next()
				if err != nil {
					if err != io.EOF {
						t.Errorf("stream %d: %v", i, err)
					}
					return
				}
				n, _ := strconv.Atoi(e.Data)
				got[i] = append(got[i], n)
				lastIDs[i] = e.LastEventID
			}
		})
	}
	wg.Wait()
	<-old.done
	// The waves ended the streams at different points of the flow.
	ends := map[int]bool{}
	for _, g := range got {
		ends[len(g)] = true
	}
	if len(ends) < 2 {
		t.Errorf("every stream ended after the same %v events; want them ended in waves", ends)
	}
	restarted := startHub(t, "--broker", srv.URL())
	close(stop)
	<-publisherDone
	mu.Lock()
	total := published
	mu.Unlock()

	for i := range streams {
		resumed := openEvents(t, restarted.URL+"/sse?channel=drain", lastIDs[i])
		for len(got[i]) == 0 || got[i][len(got[i])-1] < total-1 {
			e := resumed.next(t)
			if e.Type == ssehub.ResetType {
				t.Fatalf("stream %d: reset on resume from %s", i, lastIDs[i])
			}
			n, _ := strconv.Atoi(e.Data)
			got[i] = append(got[i], n)
		}
		for j, n := range got[i] {
			if n != j {
				t.Fatalf("stream %d: event %d is %d; got %v", i, j, n, got[i])
			}
		}
	}
}
