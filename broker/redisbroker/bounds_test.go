package redisbroker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// hook lets a test see and change what a client sends to Redis.
type hook struct {
	process func(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error
}

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return h.process(ctx, cmd, next) }
}

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// scriptKeys returns the number of keys of an EVAL or EVALSHA command, or
// -1 for another command. The scripts differ in it: publish 9, page 4,
// fence 2, canary 1, and resolve 3 and 2 per channel (the tests resolve
// fewer than 3 channels at once).
func scriptKeys(cmd redis.Cmder) int {
	args := cmd.Args()
	if len(args) < 3 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return -1
	}
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil {
		return -1
	}
	return n
}

// replySize adds up the lengths of the strings in a script's reply.
func replySize(v any) int {
	switch v := v.(type) {
	case string:
		return len(v)
	case []any:
		n := 0
		for _, x := range v {
			n += replySize(x)
		}
		return n
	}
	return 0
}

// TestReplayPages replays a large history of two channels: every event
// comes once, in publish order, and no reply from Redis is larger than a
// page (256 KiB) plus one event, whatever the history holds.
func TestReplayPages(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var largest atomic.Int64
	client := newClient(t, srv)
	client.AddHook(hook{process: func(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.Cmd); ok && err == nil && scriptKeys(cmd) == 4 {
			n := int64(replySize(c.Val()))
			for old := largest.Load(); n > old && !largest.CompareAndSwap(old, n); old = largest.Load() {
			}
		}
		return err
	}})
	b, err := redisbroker.New(client, redisbroker.Options{Prefix: "pg:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	small := strings.Repeat("s", 1000)
	big := strings.Repeat("b", 300<<10)
	var want []string
	first := pub(t, b, "a", "", 0).ID
	for i := range 400 {
		data, ch := small, "a"
		if i%2 == 1 {
			ch = "b"
		}
		if i%50 == 7 {
			data = big // one event over the page's bytes
		}
		e, err := b.Publish(t.Context(), ssehub.Message{Channel: ch, Data: json.RawMessage(strconv.Quote(data))})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, e.ID)
	}
	got, _, err := replayIDs(t, b, []string{"a", "b"}, first)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replay: %d events, %v; want the %d published, in order", len(got), err, len(want))
	}
	if n := largest.Load(); n == 0 || n > 256<<10+int64(len(big))+16<<10 {
		t.Fatalf("the largest page held %d bytes, want at most a page and an event", n)
	}
}

// TestReplayTrimmedMeanwhile: events a replay has not read yet are trimmed
// while it runs; the replay ends with ErrUnknownID, never with a gap.
func TestReplayTrimmedMeanwhile(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{Prefix: "tm:", HistorySize: 600})
	data := json.RawMessage(strconv.Quote(strings.Repeat("x", 4000)))
	first := pub(t, b, "t", "", 0).ID
	for range 599 {
		if _, err := b.Publish(t.Context(), ssehub.Message{Channel: "t", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	var seen []*ssehub.Event
	_, err := b.Replay(t.Context(), []string{"t"}, first, func(e *ssehub.Event) error {
		if len(seen) == 0 {
			// A page holds about 64 of these; trim all the rest.
			for range 600 {
				if _, err := b.Publish(t.Context(), ssehub.Message{Channel: "t", Data: json.RawMessage(`1`)}); err != nil {
					return err
				}
			}
		}
		seen = append(seen, e)
		return nil
	})
	if !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay with its events trimmed meanwhile: %d events, %v; want ErrUnknownID", len(seen), err)
	}
	if len(seen) == 0 || len(seen) >= 599 {
		t.Fatalf("the replay passed on %d events before it found the gap, want some", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Seq <= seen[i-1].Seq {
			t.Fatalf("replayed out of order")
		}
	}
}

// TestReplayLimit: no more replays run at once than MaxReplays; the others
// wait their turn rather than fail, and stop waiting when their context
// ends.
func TestReplayLimit(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{Prefix: "rl:", MaxReplays: 2})
	first := pub(t, b, "r", "", 0).ID
	pub(t, b, "r", "", 1)
	var running, most atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 5)
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := b.Replay(t.Context(), []string{"r"}, first, func(*ssehub.Event) error {
				n := running.Add(1)
				for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
				}
				entered <- struct{}{}
				<-release
				running.Add(-1)
				return nil
			})
			errs <- err
		}()
	}
	<-entered
	<-entered
	// Two replays hold their turns; a third one gives up when its context ends.
	ctx, cancel := context.WithCancel(t.Context())
	waiting := make(chan error, 1)
	go func() {
		_, err := b.Replay(ctx, []string{"r"}, first, func(*ssehub.Event) error { return nil })
		waiting <- err
	}()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiting replay whose context ends: %v, want context.Canceled", err)
	}
	close(release)
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	if n := most.Load(); n != 2 {
		t.Fatalf("%d replays ran at once, want 2", n)
	}
}

// usedMemory returns used_memory from INFO memory.
func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.InfoMap(t.Context(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHistoryBytes publishes 1 MiB messages to many channels with a budget
// of 8 MiB over all channels: Redis's memory stays within the budget and a
// fixed overhead, the oldest events go first, and resuming from a trimmed
// one resets.
func TestHistoryBytes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := newClient(t, srv)
	const budget = 8 << 20
	b := newBroker(t, srv, redisbroker.Options{Prefix: "hb:", HistoryBytes: budget, ChannelHistoryBytes: -1})
	base := usedMemory(t, c)
	data := json.RawMessage(strconv.Quote(strings.Repeat("m", 1<<20-2)))
	var events []*ssehub.Event
	for i := range 48 {
		e, err := b.Publish(t.Context(), ssehub.Message{Channel: fmt.Sprintf("ch%d", i%16), Data: data})
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
		if used := usedMemory(t, c) - base; used > budget+2<<20 {
			t.Fatalf("after %d messages of 1 MiB Redis uses %d bytes more, want at most the budget %d and 2 MiB", i+1, used, budget)
		}
	}
	kept := 0
	for i := range 16 {
		kept += int(c.XLen(t.Context(), fmt.Sprintf("hb:stream:ch%d", i)).Val())
	}
	if kept < 6 || kept > 8 {
		t.Fatalf("the streams keep %d messages of 1 MiB, want 6 to 8 within 8 MiB", kept)
	}
	// The newest are kept: resuming from the one before them works, from
	// an older one resets.
	last := events[len(events)-1]
	if got, _, err := replayIDs(t, b, []string{last.Channel}, events[len(events)-17].ID); err != nil || len(got) != 1 {
		t.Fatalf("resume from the channel's previous event: %v %v, want the last one", got, err)
	}
	if _, _, err := replayIDs(t, b, []string{"ch0"}, events[0].ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("resume from a trimmed event: %v, want ErrUnknownID", err)
	}
}

// TestChannelHistoryBytes: one channel keeps at most its share of bytes,
// but always its latest event; other channels keep theirs.
func TestChannelHistoryBytes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := newClient(t, srv)
	b := newBroker(t, srv, redisbroker.Options{Prefix: "cb:", HistoryBytes: 64 << 20, ChannelHistoryBytes: 3 << 20})
	mib := json.RawMessage(strconv.Quote(strings.Repeat("m", 1<<20-2)))
	quiet := pub(t, b, "quiet", "", 0)
	for range 10 {
		if _, err := b.Publish(t.Context(), ssehub.Message{Channel: "busy", Data: mib}); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.XLen(t.Context(), "cb:stream:busy").Val(); n != 2 {
		t.Fatalf("the busy channel keeps %d messages of 1 MiB, want 2 within 3 MiB", n)
	}
	huge := json.RawMessage(strconv.Quote(strings.Repeat("h", 5<<20)))
	e, err := b.Publish(t.Context(), ssehub.Message{Channel: "busy", Data: huge})
	if err != nil {
		t.Fatal(err)
	}
	if n := c.XLen(t.Context(), "cb:stream:busy").Val(); n != 1 {
		t.Fatalf("after a message over the channel's bytes the stream keeps %d, want that one", n)
	}
	if n := c.XLen(t.Context(), "cb:stream:quiet").Val(); n != 1 {
		t.Fatalf("the quiet channel keeps %d events, want its 1", n)
	}
	if got, _, err := replayIDs(t, b, []string{"quiet", "busy"}, quiet.ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("resume over the trimmed busy channel: %v %v, want ErrUnknownID", got, err)
	}
	if got, _, err := replayIDs(t, b, []string{"busy"}, e.ID); err != nil || len(got) != 0 {
		t.Fatalf("resume from the huge message: %v %v", got, err)
	}
}

// TestHeadIgnoresOtherChannels: a new stream's position, and the id of a
// reset, do not follow the last seq issued when other channels' publishes
// have run it past the clock: they tell nothing of private channels.
func TestHeadIgnoresOtherChannels(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{Prefix: "hd:"})
	pub(t, b, "public", "", 0)
	// Run the sequence an hour ahead of the clock, as a burst of publishes
	// faster than one per microsecond would, then publish privately.
	c := newClient(t, srv)
	ahead := uint64(time.Now().Add(time.Hour).UnixMicro())
	if err := c.HSet(t.Context(), "hd:state", "seq", ahead).Err(); err != nil {
		t.Fatal(err)
	}
	private := pub(t, b, "private", "", 1)
	if private.Seq <= ahead {
		t.Fatalf("private event seq %d, want past %d", private.Seq, ahead)
	}
	head, err := b.Head(t.Context(), []string{"public"})
	if err != nil || head.Seq >= ahead {
		t.Fatalf("Head(public) = %+v, %v; want the clock, before %d", head, err, ahead)
	}
	_, reset, err := replayIDs(t, b, []string{"public"}, "no-such-id")
	if !errors.Is(err, ssehub.ErrUnknownID) || reset.Seq >= ahead {
		t.Fatalf("reset id %+v, %v; want the clock, before %d", reset, err, ahead)
	}
	// The position still works: what is published after it is replayed.
	e := pub(t, b, "public", "", 2)
	if got, _, err := replayIDs(t, b, []string{"public"}, head.ID); err != nil || fmt.Sprint(got) != fmt.Sprint([]string{e.ID}) {
		t.Fatalf("replay after the position: %v %v; want [%s]", got, err, e.ID)
	}
}

// replayChildEnv names the environment variable that makes the test
// binary the process of TestPublishesDuringReplays that replays: it holds
// the Redis address, the id to resume from, the number of readers and of
// events each must read.
const replayChildEnv = "SSEHUB_TEST_REPLAY_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(replayChildEnv); v != "" {
		os.Exit(replayChild(v))
	}
	os.Exit(m.Run())
}

// replayChild runs a hub on Redis with readers that resume from the start
// of a history, as a process of its own, so that its work does not delay
// the publishing hub of the test. It prints "replaying" once the readers
// have sent their requests, then one line per reader with the number of
// events it read.
func replayChild(spec string) int {
	var (
		addr, lastID  string
		readers, want int
	)
	if _, err := fmt.Sscan(strings.ReplaceAll(spec, ",", " "), &addr, &lastID, &readers, &want); err != nil {
		fmt.Fprintln(os.Stderr, "bad", replayChildEnv, err)
		return 2
	}
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	b, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer b.Close(context.Background())
	h, err := ssehub.New(ssehub.Config{Broker: b})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close(context.Background())
	done := make(chan int, readers)
	for range readers {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/sse?channel=history", nil)
		req.Header.Set("Last-Event-ID", lastID)
		go func() {
			got := 0
			defer func() { done <- got }()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			dec := sse.NewDecoder(resp.Body)
			for got < want {
				e, err := dec.Next()
				if err != nil || e.Type == ssehub.ResetType {
					return
				}
				got++
			}
		}()
	}
	fmt.Println("replaying")
	for range readers {
		fmt.Println(<-done)
	}
	return 0
}

// TestPublishesDuringReplays: 20 readers resume from the start of a large
// history (150 events of 16 KB) on one hub, a process of its own, while
// another hub publishes on an unrelated channel. Every publish completes
// within a deadline of 1 s: the replays read bounded pages, a few at a
// time, and do not hold Redis up.
func TestPublishesDuringReplays(t *testing.T) {
	t.Parallel()
	const (
		readers = 20
		events  = 150
	)
	srv := redistest.Start(t)
	publishing := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	data := json.RawMessage(strconv.Quote(strings.Repeat("r", 16<<10)))
	first := publishing.publish(t, "history", 0)
	for range events {
		if _, err := publishing.hub.Publish(t.Context(), ssehub.Message{Channel: "history", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	child := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%d", replayChildEnv, srv.Addr(), first, readers, events))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; l != "replaying" {
		t.Fatalf("the replaying process said %q", l)
	}
	var (
		published, during, finished int
		slowest                     time.Duration
	)
	// A publish every 10 ms, as a busy application would.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for open := true; open; {
		select {
		case l, ok := <-lines:
			if !ok {
				open = false
				continue
			}
			if l != strconv.Itoa(events) {
				t.Fatalf("a reader got %s of the %d events", l, events)
			}
			finished++
			continue
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		start := time.Now()
		_, err := publishing.hub.Publish(ctx, ssehub.Message{Channel: "unrelated", Data: json.RawMessage(`1`)})
		cancel()
		if err != nil {
			t.Fatalf("publish %d while %d readers replay: %v", published+1, readers-finished, err)
		}
		slowest = max(slowest, time.Since(start))
		published++
		if finished == 0 {
			during++
		}
	}
	if err := child.Wait(); err != nil || finished != readers {
		t.Fatalf("the replaying process: %v, %d of %d readers done", err, finished, readers)
	}
	if during < 10 {
		t.Fatalf("only %d publishes while all readers were replaying; the test proves nothing", during)
	}
	t.Logf("%d publishes, %d while all %d readers were replaying; slowest %v", published, during, readers, slowest)
}

// BenchmarkPublishDuringReplays measures publishes on an unrelated
// channel, one every 10 ms, while 20 readers on another hub (a process of
// its own) resume from the start of a history of 1,000 events of 16 KB:
// the latency of those publishes, how many took over 1 s or failed, how
// many readers got every event, and how long the replays took.
//
//	go test -run '^$' -bench PublishDuringReplays -benchtime 1x ./broker/redisbroker/
func BenchmarkPublishDuringReplays(b *testing.B) {
	const (
		readers = 20
		events  = 1000
	)
	srv := redistest.Start(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	br, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close(context.Background())
	ctx := context.Background()
	data := json.RawMessage(strconv.Quote(strings.Repeat("r", 16<<10)))
	first, err := br.Publish(ctx, ssehub.Message{Channel: "history", Data: json.RawMessage(`0`)})
	if err != nil {
		b.Fatal(err)
	}
	for range events {
		if _, err := br.Publish(ctx, ssehub.Message{Channel: "history", Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	var (
		lat     []time.Duration
		replays time.Duration
		failed  int
		served  atomic.Int64 // readers that got every event
	)
	for b.Loop() {
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%d", replayChildEnv, srv.Addr(), first.ID, readers, events))
		child.Stderr = os.Stderr
		out, err := child.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := child.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "replaying" {
			b.Fatalf("the replaying process said %q", sc.Text())
		}
		start := time.Now()
		finished := make(chan struct{})
		go func() {
			for sc.Scan() {
				if sc.Text() == strconv.Itoa(events) {
					served.Add(1)
				}
			}
			close(finished)
		}()
		tick := time.NewTicker(10 * time.Millisecond)
		for running := true; running; {
			select {
			case <-finished:
				running = false
				continue
			case <-tick.C:
			}
			t0 := time.Now()
			if _, err := br.Publish(ctx, ssehub.Message{Channel: "unrelated", Data: json.RawMessage(`1`)}); err != nil {
				failed++
			}
			lat = append(lat, time.Since(t0))
		}
		tick.Stop()
		replays += time.Since(start)
		if err := child.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	if len(lat) == 0 {
		b.Fatal("no publish while the readers replayed")
	}
	slices.Sort(lat)
	over := len(lat) - sort.Search(len(lat), func(i int) bool { return lat[i] > time.Second })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(float64(over), "over-1s")
	b.ReportMetric(float64(failed), "failed")
	b.ReportMetric(float64(served.Load())/float64(b.N), "readers-served")
	b.ReportMetric(replays.Seconds()/float64(b.N), "replays-s")
}
