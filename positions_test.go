package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
	"github.com/ssehub/ssehub/internal/sse"
)

// shardBroker numbers the events of each channel on a clock of its own, as
// Redis Cluster's shards do: channel names starting with "a" run far ahead
// of the others, so that a Seq of one channel says nothing about another.
// It keeps every event. Its Replay calls onReplay, when set, after taking
// the head and before reading history.
type shardBroker struct {
	mu       sync.Mutex
	last     map[string]uint64
	events   map[string][]*ssehub.Event
	ids      map[string]map[string]uint64 // per channel, a publisher's id → seq
	subs     map[string]map[int]func(*ssehub.Event)
	floor    map[string]uint64 // per channel: a resume from before it resets
	nextSub  int
	onReplay func(channels []string)
}

var _ ssehub.ChannelOrderer = (*shardBroker)(nil)

func newShardBroker() *shardBroker {
	return &shardBroker{
		last:   map[string]uint64{},
		events: map[string][]*ssehub.Event{},
		ids:    map[string]map[string]uint64{},
		subs:   map[string]map[int]func(*ssehub.Event){},
		floor:  map[string]uint64{},
	}
}

// lose makes channel lose its history and a few events its subscribers
// never got, as a trim or a failover would, and tells them with a reset
// whose Seq is where the channel resumes from.
func (b *shardBroker) lose(channel string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pos := max(b.last[channel], b.clock(channel)) + 5
	b.last[channel] = pos
	b.floor[channel] = pos
	b.events[channel] = nil
	e := ssehub.NewEvent(channel, strconv.FormatUint(pos, 10), ssehub.ResetType, []byte("{}"), 0, pos, time.Now())
	for _, deliver := range b.subs[channel] {
		deliver(e)
	}
}

func (b *shardBroker) ChannelOrder() bool { return true }

// clock is where channel's numbering starts.
func (b *shardBroker) clock(channel string) uint64 {
	if channel[0] == 'a' {
		return 1 << 40
	}
	return uint64(len(channel)) * 1000
}

func (b *shardBroker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	seq := max(b.last[m.Channel], b.clock(m.Channel)) + 1
	b.last[m.Channel] = seq
	id := m.ID
	if id == "" {
		id = strconv.FormatUint(seq, 10)
	} else {
		if b.ids[m.Channel] == nil {
			b.ids[m.Channel] = map[string]uint64{}
		}
		b.ids[m.Channel][id] = seq
	}
	e := ssehub.NewEvent(m.Channel, id, m.Type, m.Data, m.Retry, seq, time.Now())
	b.events[m.Channel] = append(b.events[m.Channel], e)
	for _, deliver := range b.subs[m.Channel] {
		deliver(e)
	}
	return e, nil
}

func (b *shardBroker) Subscribe(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[channel] == nil {
		b.subs[channel] = map[int]func(*ssehub.Event){}
	}
	n := b.nextSub
	b.nextSub++
	b.subs[channel][n] = deliver
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs[channel], n)
	}, nil
}

// head is the position of channels now. b.mu must be held.
func (b *shardBroker) head(channels []string) ssehub.Cursor {
	pos := map[string]uint64{}
	top := uint64(0)
	for _, c := range channels {
		pos[c] = max(b.last[c], b.clock(c))
		top = max(top, pos[c])
	}
	// Seq is the highest of them: a hub that took it for every channel
	// would drop the live events of the channels behind.
	cur := ssehub.Cursor{Seq: top, Channels: pos}
	if len(channels) == 1 {
		cur.ID = strconv.FormatUint(pos[channels[0]], 10)
	} else {
		cur.ID = ssehub.FormatPositions(pos)
	}
	return cur
}

func (b *shardBroker) Head(ctx context.Context, channels []string) (ssehub.Cursor, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head(channels), nil
}

func (b *shardBroker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	b.mu.Lock()
	head := b.head(channels)
	b.mu.Unlock()
	if b.onReplay != nil {
		b.onReplay(channels)
	}
	b.mu.Lock()
	var from map[string]uint64
	if len(channels) == 1 {
		c := channels[0]
		seq, ok := b.ids[c][lastEventID]
		if !ok {
			n, err := strconv.ParseUint(lastEventID, 10, 64)
			if err == nil && n >= b.clock(c) && n <= b.last[c] {
				seq, ok = n, true
			}
		}
		if ok {
			from = map[string]uint64{c: seq}
		}
	} else {
		from, _ = ssehub.ParsePositions(lastEventID, channels)
	}
	for c, seq := range from {
		if seq < b.floor[c] {
			from = nil
		}
	}
	if from == nil {
		b.mu.Unlock()
		return head, fmt.Errorf("%w: %q", ssehub.ErrUnknownID, lastEventID)
	}
	var out []*ssehub.Event
	for _, c := range channels {
		for _, e := range b.events[c] {
			if e.Seq > from[c] && e.Seq <= head.Channels[c] {
				out = append(out, e)
			}
		}
	}
	b.mu.Unlock()
	slices.SortStableFunc(out, func(x, y *ssehub.Event) int { return int(x.Time.Sub(y.Time)) })
	for _, e := range out {
		if err := fn(e); err != nil {
			return head, err
		}
	}
	return head, nil
}

func (b *shardBroker) Close(ctx context.Context) error { return nil }

// TestPositionIDs checks the ids of a hub whose broker orders events per
// channel: a stream over several channels gets ids that hold its position
// in each, and a stream over one channel the events' own ids.
func TestPositionIDs(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{Broker: newShardBroker()})
	both := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=a1&channel=b1", nil)
	one := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=b1", nil)
	ida := hubtest.Publish(t, hub, "a1", `1`)
	idb := hubtest.Publish(t, hub, "b1", `2`)
	if ida == idb {
		t.Fatalf("two channels gave the same id %q", ida)
	}
	// Per channel, the position is that of the last event received.
	seqa, _ := strconv.ParseUint(ida, 10, 64)
	seqb, _ := strconv.ParseUint(idb, 10, 64)
	seen := map[string]uint64{}
	var lastID string
	for range 2 {
		e := both.Next(t)
		pos, ok := ssehub.ParsePositions(e.LastEventID, []string{"b1", "a1"})
		if !ok {
			t.Fatalf("id %q on a stream over two channels is not a position", e.LastEventID)
		}
		switch e.Data {
		case "1":
			seen["a1"] = seqa
		case "2":
			seen["b1"] = seqb
		}
		for c, seq := range seen {
			if pos[c] != seq {
				t.Fatalf("after %s, positions %v, want %s at %d", e.Data, pos, c, seq)
			}
		}
		lastID = e.LastEventID
	}
	if e := one.Next(t); e.LastEventID != idb || e.Data != "2" {
		t.Fatalf("one-channel stream got %+v, want the event's own id %q", e, idb)
	}
	if _, ok := ssehub.ParsePositions(lastID, []string{"a1", "c1"}); ok {
		t.Fatal("positions of a1 and b1 read as those of a1 and c1")
	}
}

// TestPositionResumeUnderLoad has a client over three channels, whose
// clocks are far apart, keep dropping its connection and resuming with its
// last event id while events are published on every channel, also during
// each replay (so that an event is both replayed and live). Per channel,
// the client must get every event once and in order, with no reset.
func TestPositionResumeUnderLoad(t *testing.T) {
	t.Parallel()
	channels := []string{"a", "bb", "ccc"}
	const events = 1500
	broker := newShardBroker()
	hub, ts := hubtest.Serve(t, ssehub.Config{Broker: broker})
	var (
		mu   sync.Mutex
		sent = map[string]int{}
	)
	pub := func(channel string) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := hub.Publish(context.Background(), ssehub.Message{Channel: channel, Data: json.RawMessage(strconv.Itoa(sent[channel]))})
		if err == nil {
			sent[channel]++
		}
		return err
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range channels {
			n += sent[c]
		}
		return n
	}
	broker.onReplay = func(cs []string) {
		for _, c := range cs {
			if err := pub(c); err != nil {
				t.Errorf("Publish during replay: %v", err)
			}
		}
	}
	q := url.Values{"channel": channels}
	base := ts.URL + "/sse?" + q.Encode()
	first, err := hubtest.Dial(t.Context(), ts.Client(), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The publisher sends a burst each time the client reconnects, so
	// events are published while it is away, while it resumes and while
	// it reads.
	const burst = 20
	token := make(chan struct{}, 1)
	token <- struct{}{}
	pubErr := make(chan error, 1)
	go func() {
		for i := 0; i < events; {
			select {
			case <-token:
			case <-t.Context().Done():
				pubErr <- t.Context().Err()
				return
			}
			for end := min(i+burst, events); i < end; i++ {
				if err := pub(channels[(i*7/3)%len(channels)]); err != nil {
					pubErr <- err
					return
				}
			}
		}
		pubErr <- nil
	}()
	got := map[string]int{}
	received, reconnects, lastID := 0, 0, ""
	var prev map[string]uint64 // the positions of the last event
	published := false
	for s := first; ; {
		if s == nil {
			if s, err = hubtest.Dial(t.Context(), ts.Client(), base, hubtest.LastEventID(lastID)); err != nil {
				t.Fatalf("reconnect %d: %v", reconnects, err)
			}
		}
		if !published {
			select {
			case err := <-pubErr:
				if err != nil {
					t.Fatalf("Publish: %v", err)
				}
				published = true
			default:
			}
		}
		// Read some of what is there, never waiting for an event that may
		// not come: all of it once the publisher is done.
		n := min(1+(reconnects*13)%60, total()-received)
		if published {
			n = total() - received
		}
		// A missing event would block the read for good: give up on it.
		stuck := time.AfterFunc(10*time.Second, s.Close)
		for range n {
			e, err := s.Dec.Next()
			if err != nil {
				t.Fatalf("after %d events and %d reconnects, waiting for %d more: %v", received, reconnects, n, err)
			}
			if e.Type == ssehub.ResetType {
				t.Fatalf("reset after %d events and %d reconnects: the broker keeps every event", received, reconnects)
			}
			if _, ok := ssehub.ParsePositions(e.LastEventID, channels); !ok {
				t.Fatalf("event %+v has no position id", e)
			}
			c := eventChannel(t, e, prev, broker)
			prev, _ = ssehub.ParsePositions(e.LastEventID, channels)
			if want := strconv.Itoa(got[c]); e.Data != want {
				t.Fatalf("channel %s: got event %s, want %s (after %d reconnects): lost, duplicated or out of order", c, e.Data, want, reconnects)
			}
			got[c]++
			received++
			lastID = e.LastEventID
		}
		stuck.Stop()
		if lastID == "" {
			continue // keep the first stream until it has an id to resume from
		}
		s.Close()
		s = nil
		if published && received == total() {
			break
		}
		reconnects++
		select {
		case token <- struct{}{}:
		default:
		}
	}
	if received < events || reconnects < 10 {
		t.Fatalf("%d events over %d reconnects: the test did not exercise resumes", received, reconnects)
	}
	t.Logf("%d events, %d reconnects", received, reconnects)
}

// eventChannel finds which channel e was published on: the one whose
// position moved since prev to an event with e's data.
func eventChannel(t *testing.T, e sse.Event, prev map[string]uint64, b *shardBroker) string {
	t.Helper()
	pos, _ := ssehub.ParsePositions(e.LastEventID, []string{"a", "bb", "ccc"})
	b.mu.Lock()
	defer b.mu.Unlock()
	for c, seq := range pos {
		if prev != nil && prev[c] == seq {
			continue
		}
		for _, ev := range b.events[c] {
			if ev.Seq == seq && string(ev.Data) == e.Data {
				return c
			}
		}
	}
	t.Fatalf("event %+v matches no channel's position", e)
	return ""
}

// TestPositionGoSubscription resumes a Go subscription over two channels
// from the id of an event it got, with events published on both meanwhile.
func TestPositionGoSubscription(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{Broker: newShardBroker()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubtest.Close(t, hub) })
	ctx := t.Context()
	sub, err := hub.Subscribe(ctx, []string{"a", "b"}, "")
	if err != nil {
		t.Fatal(err)
	}
	hubtest.Publish(t, hub, "b", `"b0"`)
	hubtest.Publish(t, hub, "a", `"a0"`)
	var last string
	for _, want := range []string{`"b0"`, `"a0"`} {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Data) != want {
			t.Fatalf("got %s, want %s", e.Data, want)
		}
		last = e.ID
	}
	sub.Close()
	hubtest.Publish(t, hub, "a", `"a1"`)
	hubtest.Publish(t, hub, "b", `"b1"`)
	sub, err = hub.Subscribe(ctx, []string{"b", "a"}, last)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	hubtest.Publish(t, hub, "b", `"b2"`)
	var got []string
	for range 3 {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(e.Data))
	}
	slices.Sort(got)
	if want := []string{`"a1"`, `"b1"`, `"b2"`}; !slices.Equal(got, want) {
		t.Fatalf("resumed with %v, want %v", got, want)
	}
	if _, err := hub.Subscribe(ctx, []string{"a", "c"}, last); err != nil {
		t.Fatal(err)
	}
}

// TestPositionAfterLiveReset: a broker's live reset moves its channel's
// position to where the channel resumes from, so that a stream that
// reconnects with the reset's id, or a later one, resumes without another
// reset.
func TestPositionAfterLiveReset(t *testing.T) {
	t.Parallel()
	broker := newShardBroker()
	hub, err := ssehub.New(ssehub.Config{Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubtest.Close(t, hub) })
	ctx := t.Context()
	channels := []string{"a", "b"}
	sub, err := hub.Subscribe(ctx, channels, "")
	if err != nil {
		t.Fatal(err)
	}
	hubtest.Publish(t, hub, "b", `"b0"`)
	broker.lose("b")
	hubtest.Publish(t, hub, "a", `"a0"`)
	var ids []string
	for _, want := range []string{`"b0"`, "{}", `"a0"`} {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Data) != want {
			t.Fatalf("got %s %s, want %s", e.Type, e.Data, want)
		}
		ids = append(ids, e.ID)
	}
	sub.Close()
	hubtest.Publish(t, hub, "b", `"b1"`)
	for i, want := range [][]string{{`"a0"`, `"b1"`}, {`"b1"`}} {
		id := ids[1+i]
		sub, err := hub.Subscribe(ctx, channels, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			e, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if e.Type == ssehub.ResetType || string(e.Data) != w {
				t.Fatalf("resumed from %s with %s %s, want %s", id, e.Type, e.Data, w)
			}
		}
		sub.Close()
	}
}

func TestParsePositions(t *testing.T) {
	t.Parallel()
	id := ssehub.FormatPositions(map[string]uint64{"x": 1 << 50, "y": 0, "z": 42})
	if err := ssehub.ValidID(id); err != nil {
		t.Fatalf("FormatPositions made an invalid id %q: %v", id, err)
	}
	pos, ok := ssehub.ParsePositions(id, []string{"z", "y", "x", "x"})
	if !ok || pos["x"] != 1<<50 || pos["y"] != 0 || pos["z"] != 42 || len(pos) != 3 {
		t.Fatalf("ParsePositions(%q) = %v, %v", id, pos, ok)
	}
	for _, bad := range []string{"", "42", "~", "~1.2", id + "0", "~zz.zz.zz." + id[len(id)-3:]} {
		if pos, ok := ssehub.ParsePositions(bad, []string{"x", "y", "z"}); ok {
			t.Errorf("ParsePositions(%q) = %v, want not an id", bad, pos)
		}
	}
	if _, ok := ssehub.ParsePositions(id, []string{"x", "y"}); ok {
		t.Error("an id of three channels read as one of two")
	}
}

var _ = errors.Is

// TestPositionLargeEvents: on a stream over several channels, each event
// goes out as the channel's event with the stream's positions as its id,
// also when it is larger than a batch and the socket takes it in parts,
// whether the hub writes the stream itself (Detach) or through net/http.
func TestPositionLargeEvents(t *testing.T) {
	t.Parallel()
	for _, detach := range []bool{true, false} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			t.Parallel()
			b := newShardBroker()
			hub, err := ssehub.New(ssehub.Config{Broker: b, Detach: detach, WriteTimeout: -1, Heartbeat: -1})
			if err != nil {
				t.Fatal(err)
			}
			// A small socket buffer, so that writes stop part way.
			ts := httptest.NewUnstartedServer(hub)
			ts.Listener = &firstConnSmallBuffer{Listener: ts.Listener, first: make(chan *net.TCPConn, 1)}
			ts.Start()
			t.Cleanup(ts.Close)
			t.Cleanup(func() { hubtest.Close(t, hub) })
			s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=a&channel=b", nil)
			big := `"` + strings.Repeat("x", 100<<10) + `"`
			type sent struct {
				m   ssehub.Message
				seq uint64
			}
			var all []sent
			// All are published before the client reads: the socket fills,
			// and batches of the smaller events go out in parts too.
			for i := range 40 {
				m := ssehub.Message{Channel: "b", Data: json.RawMessage(`"` + strconv.Itoa(i) + strings.Repeat("y", 20<<10) + `"`), ID: "b-" + strconv.Itoa(i)}
				if i%10 == 0 {
					m = ssehub.Message{Channel: "a", Data: json.RawMessage(big), Type: "big", Retry: 1000 + i}
				}
				if _, err := hub.Publish(t.Context(), m); err != nil {
					t.Fatal(err)
				}
				b.mu.Lock()
				all = append(all, sent{m, b.last[m.Channel]})
				b.mu.Unlock()
			}
			// Channels are in order each, not with each other.
			queue := map[string][]sent{}
			for _, w := range all {
				queue[w.m.Channel] = append(queue[w.m.Channel], w)
			}
			pos := map[string]uint64{}
			for i := range all {
				e := s.Next(t)
				c := "b"
				if e.Type == "big" {
					c = "a"
				}
				if len(queue[c]) == 0 {
					t.Fatalf("event %d: one more on %s than published: %d bytes, id %q", i, c, len(e.Data), e.LastEventID)
				}
				w := queue[c][0]
				queue[c] = queue[c][1:]
				pos[c] = w.seq
				got, ok := ssehub.ParsePositions(e.LastEventID, []string{"a", "b"})
				for c, seq := range pos {
					ok = ok && got[c] == seq
				}
				if e.Data != string(w.m.Data) || !ok || c == "a" && e.Retry != w.m.Retry {
					t.Fatalf("event %d on %s: %d bytes of data, retry %d, id %q (%v); want %d bytes, retry %d, positions %v",
						i, c, len(e.Data), e.Retry, e.LastEventID, got, len(w.m.Data), w.m.Retry, pos)
				}
			}
		})
	}
}

// BenchmarkPositionStreams publishes events of 1 KiB on one channel to Go
// subscriptions over three channels of a broker that orders events per
// channel, so that each delivery carries the subscription's positions as
// its id. B/op and allocs/op are per event to all subscriptions.
func BenchmarkPositionStreams(b *testing.B) {
	const subs = 100
	hub, err := ssehub.New(ssehub.Config{Broker: newShardBroker(), Heartbeat: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer hubtest.Close(b, hub)
	data := json.RawMessage(`"` + strings.Repeat("x", 1<<10) + `"`)
	var wg sync.WaitGroup
	for range subs {
		sub, err := hub.Subscribe(b.Context(), []string{"a", "b", "c"}, "")
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer sub.Close()
			for range b.N {
				if _, err := sub.Next(b.Context()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := hub.Publish(b.Context(), ssehub.Message{Channel: "a", Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}
