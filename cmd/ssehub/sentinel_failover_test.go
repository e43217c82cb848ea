package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// TestSentinelFailover runs two `ssehub serve` on a master, a replica and
// three sentinels, with streams on both hubs over one and several
// channels, while a publisher posts steadily through both hubs, each
// event with an Idempotency-Key, sending it again on 503 and 504. It
// SIGKILLs the master: publishing resumes by itself once Sentinel has
// promoted the replica, without restarting the hubs, and /readyz says
// what happens meanwhile. Every stream gets every acknowledged event once
// and in order per channel, or a reset that covers it (Redis replicates
// asynchronously, so the master may die with events the replica lacks);
// a client reconnecting to the other hub with Last-Event-ID resumes
// exactly; and the killed node rejoins as a replica.
func TestSentinelFailover(t *testing.T) { testSentinelFailover(t, false) }

// TestSentinelFailoverLostTail is TestSentinelFailover where the replica
// stops copying the master (frozen, its link cut) for the last events
// before the master dies: the master acknowledged them and delivered
// them to the streams, and the promoted replica does not have them. Every
// stream then gets a reset, and a resume from before the crash resets.
func TestSentinelFailoverLostTail(t *testing.T) { testSentinelFailover(t, true) }

func testSentinelFailover(t *testing.T, loseTail bool) {
	set := redistest.StartSentinel(t)
	a := startHub(t, "--broker", set.URL(), "--heartbeat", "500ms", "--publish-timeout", "3s")
	b := startHub(t, "--broker", set.URL(), "--heartbeat", "500ms", "--publish-timeout", "3s")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub A's log:\n%s\nhub B's log:\n%s", a.log, b.log)
		}
	})
	hubs := []*hubProcess{a, b}

	channels := []string{"s0", "s1", "s2", "s3", "s4"}
	streams := []*natsStream{
		openNATSStream(t, "A all", a.URL, channels, ""),
		openNATSStream(t, "A s0", a.URL, channels[:1], ""),
		openNATSStream(t, "B s1,s2,s3", b.URL, channels[1:4], ""),
		openNATSStream(t, "B all", b.URL, channels, ""),
		openNATSStream(t, "B s4", b.URL, channels[4:], ""),
	}
	a.waitLog(t, "stream opened", 2)
	b.waitLog(t, "stream opened", 3)

	type ack struct {
		channel string
		id      string
		seq     uint64
	}
	var (
		mu       sync.Mutex
		acked    []ack
		retries  = map[int]int{} // status -> publishes sent again after it
		pause    time.Duration
		lastAck  = time.Now()
		stop     = make(chan struct{})
		finished = make(chan struct{})
	)
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			ch := channels[i%len(channels)]
			key := fmt.Sprintf("sentinel-%d", i)
			data := fmt.Sprintf(`{"n":%d,"c":%q}`, i, ch)
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				id, status, msg := postPublishKey(client, hubs[i%2].URL, ch, data, key)
				mu.Lock()
				if status == http.StatusOK {
					seq, _ := strconv.ParseUint(id, 10, 64)
					acked = append(acked, ack{ch, id, seq})
					pause = max(pause, time.Since(lastAck))
					lastAck = time.Now()
				} else {
					retries[status]++
				}
				mu.Unlock()
				if status == http.StatusOK {
					break
				}
				if status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout && status != 0 {
					t.Errorf("publish %d: %d %s", i, status, msg)
					return
				}
			}
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}

	waitFor(t, "100 acknowledged events", func() bool { return count() >= 100 })
	resumeFrom := make([]string, len(streams))
	for i, s := range streams {
		waitFor(t, s.name+" to have events", func() bool { return len(s.snapshot()) >= 10 })
		resumeFrom[i] = s.snapshot()[5].LastEventID
	}
	master := set.Master()
	if loseTail {
		replica := set.Nodes()[1]
		mc := redis.NewClient(&redis.Options{Addr: master.Addr(), MaxRetries: -1})
		replica.Freeze()
		if err := mc.ClientKillByFilter(t.Context(), "TYPE", "replica").Err(); err != nil {
			t.Fatal(err)
		}
		mc.Close()
		// Within the sentinels' down-after-milliseconds, so that they
		// still count the replica as healthy.
		frozenAt := count()
		waitFor(t, "20 acknowledged events the replica lacks", func() bool { return count() >= frozenAt+20 })
		master.Kill()
		replica.Thaw()
	} else {
		master.Kill()
	}
	killedAt := count()
	// While no master answers, the hubs say so.
	for _, h := range hubs {
		waitFor(t, "/readyz 503 without a master", func() bool {
			r := readyz(t, h.URL)
			return r.status == http.StatusServiceUnavailable && r.Code == "unavailable" && r.Error != ""
		})
	}
	t.Logf("/readyz without a master: %+v", readyz(t, a.URL))
	set.WaitFailover(master, 30*time.Second)
	waitFor(t, "200 more acknowledged events after the failover", func() bool { return count() >= killedAt+200 })
	close(stop)
	<-finished
	for _, h := range hubs {
		waitFor(t, "/readyz 200 after the failover", func() bool { return readyz(t, h.URL).status == http.StatusOK })
	}
	mu.Lock()
	t.Logf("killed the master after %d events; %d acknowledged in all; longest pause between acknowledgements %v; sent again after status: %v",
		killedAt, len(acked), pause.Round(time.Millisecond), retries)
	mu.Unlock()

	// publish --broker asks the sentinels for the new master too.
	out, errOut, code := runCLI(t, `{"n":999999,"c":"s0"}`, "publish", "--broker", set.URL(), "--channel", "s0")
	if code != 0 {
		t.Fatalf("publish --broker %s after the failover: exit %d, %s", set.URL(), code, errOut)
	}
	seq, _ := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	acked = append(acked, ack{"s0", strings.TrimSpace(out), seq})

	// A last event per channel: a stream that has it has had its chance
	// to get everything before it.
	last := map[string]string{}
	for k, ch := range channels {
		id, status, msg := postPublishKey(client, b.URL, ch, fmt.Sprintf(`{"n":%d,"c":%q}`, 1_000_000+k, ch), fmt.Sprintf("last-%d", k))
		if status != http.StatusOK {
			t.Fatalf("last publish on %s: %d %s", ch, status, msg)
		}
		last[ch] = id
		seq, _ := strconv.ParseUint(id, 10, 64)
		acked = append(acked, ack{ch, id, seq})
	}
	resets := 0
	for i, s := range streams {
		if loseTail && !slices.ContainsFunc(s.snapshot(), func(e sse.Event) bool { return e.Type == ssehub.ResetType }) {
			t.Errorf("%s: no reset, though events it got were lost", s.name)
		}
		for _, ch := range s.channels {
			waitFor(t, s.name+" to get the last event of "+ch, func() bool { return s.has(last[ch]) })
		}
		got := s.snapshot()
		seen := map[string]bool{}
		var covered uint64 // the highest reset id: the stream's client reloads what comes before it
		lastOn := map[string]uint64{}
		for j, e := range got {
			seq, err := strconv.ParseUint(e.LastEventID, 10, 64)
			if err != nil {
				t.Fatalf("%s: event %d has id %q, not a sequence number", s.name, j, e.LastEventID)
			}
			if e.Type == ssehub.ResetType {
				covered = max(covered, seq)
				resets++
				t.Logf("%s: a reset at event %d, id %s", s.name, j, e.LastEventID)
				continue
			}
			var d struct{ C string }
			if err := json.Unmarshal([]byte(e.Data), &d); err != nil || !slices.Contains(s.channels, d.C) {
				t.Fatalf("%s: event %s with data %s, not of its channels", s.name, e.LastEventID, e.Data)
			}
			if seen[e.LastEventID] {
				t.Fatalf("%s: event %s twice", s.name, e.LastEventID)
			}
			if seq <= lastOn[d.C] {
				t.Fatalf("%s: event %s on %s after %s", s.name, e.LastEventID, d.C, redisbrokerID(lastOn[d.C]))
			}
			seen[e.LastEventID], lastOn[d.C] = true, seq
		}
		for _, k := range acked {
			if slices.Contains(s.channels, k.channel) && !seen[k.id] && k.seq > covered {
				t.Fatalf("%s: acknowledged event %s on %s never arrived, and no reset covers it", s.name, k.id, k.channel)
			}
		}

		// Reconnecting to the other hub from a point before the crash
		// yields what this stream got after it, or begins with a reset
		// when events after that point were lost; from a point after the
		// failover, exactly what this stream got after it.
		other := b.URL
		if strings.HasPrefix(s.name, "B") {
			other = a.URL
		}
		after := max(len(got)-30, 0)
		for j, e := range got {
			if e.Type == ssehub.ResetType {
				after = max(after, j+1) // the event right after the last reset, or later
			}
		}
		for k, from := range []string{resumeFrom[i], got[after].LastEventID} {
			resumed := openNATSStream(t, s.name+" resumed", other, s.channels, from)
			at := slices.IndexFunc(got, func(e sse.Event) bool { return e.LastEventID == from })
			var want []string
			for _, e := range got[at+1:] {
				if e.Type != ssehub.ResetType {
					want = append(want, e.LastEventID+" "+e.Data)
				}
			}
			waitFor(t, s.name+" resumed to get an event", func() bool { return len(resumed.snapshot()) > 0 })
			if e := resumed.snapshot()[0]; e.Type == ssehub.ResetType && k == 0 {
				t.Logf("%s resumed from %s: a reset, as events after it were lost", s.name, from)
				continue
			}
			if loseTail && k == 0 {
				t.Fatalf("%s resumed from %s, before lost events: %q %s, want a reset", s.name, from, resumed.snapshot()[0].Type, resumed.snapshot()[0].LastEventID)
			}
			for _, ch := range s.channels {
				waitFor(t, s.name+" resumed to get the last event of "+ch, func() bool { return resumed.has(last[ch]) })
			}
			var have []string
			for _, e := range resumed.snapshot() {
				have = append(have, e.LastEventID+" "+e.Data)
			}
			if !slices.Equal(have, want) {
				t.Fatalf("%s resumed from %s on the other hub: %d events, want the %d it had after that id\nfirst got %q\nfirst want %q",
					s.name, from, len(have), len(want), have[:min(3, len(have))], want[:min(3, len(want))])
			}
		}
	}
	t.Logf("%d resets over %d streams", resets, len(streams))

	// The killed node rejoins as a replica; the hubs keep publishing.
	set.Rejoin(master)
	id, status, msg := postPublishKey(client, a.URL, "s0", `{"n":2000000,"c":"s0"}`, "after-rejoin")
	if status != http.StatusOK {
		t.Fatalf("publish after the old master rejoined: %d %s", status, msg)
	}
	for _, s := range streams[:2] {
		waitFor(t, s.name+" to get an event after the rejoin", func() bool { return s.has(id) })
	}
}

func redisbrokerID(seq uint64) string { return fmt.Sprintf("%016d", seq) }
