package ssehub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
	"github.com/ssehub/ssehub/internal/sse"
)

// TestResumeUnderLoad publishes events while a client keeps dropping its
// connection and resuming with its last event id, alternating the
// Last-Event-ID header and the last_event_id query parameter. The client
// must end up with every event of its channels exactly once, in publish
// order.
func TestResumeUnderLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		channels []string
	}{
		{"one channel", []string{"news"}},
		{"three channels", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const (
				events = 2000 // published by the publisher; resumes add more
				burst  = 20   // events published each time the client reconnects
			)
			fake := &hubtest.Broker{Mem: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: 2 * events})}
			hub, ts := hubtest.Serve(t, ssehub.Config{Broker: fake})
			q := url.Values{"channel": tt.channels}
			base := ts.URL + "/sse?" + q.Encode()

			var (
				mu        sync.Mutex
				ids       []string // in publish order
				published atomic.Int64
			)
			pub := func(channel string) error {
				mu.Lock()
				defer mu.Unlock()
				id, err := hub.Publish(context.Background(), ssehub.Message{
					Channel: channel,
					Data:    json.RawMessage(fmt.Sprintf(`{"n":%d}`, len(ids))),
				})
				if err != nil {
					return err
				}
				ids = append(ids, id)
				published.Add(1)
				return nil
			}
			// Every resume publishes one event after the hub has
			// subscribed to live traffic but before it reads history, so
			// the event is both queued and replayed, and one after the
			// replay, so it is only queued. Each must arrive once.
			fake.ReplayFunc = func(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
				if err := pub(channels[0]); err != nil {
					return ssehub.Cursor{}, err
				}
				head, err := fake.Mem.Replay(ctx, channels, lastEventID, fn)
				if err != nil {
					return head, err
				}
				return head, pub(channels[len(channels)-1])
			}

			// Each reconnect also lets the publisher send a burst, so events
			// are published while the client is away, while it
			// reconnects and while it reads.
			var (
				token   = make(chan struct{}, 1)
				pubDone atomic.Bool
				pubErr  = make(chan error, 1)
			)
			go func() {
				for i := 0; i < events; {
					select {
					case <-token:
					case <-t.Context().Done():
						pubErr <- t.Context().Err()
						return
					}
					for end := min(i+burst, events); i < end; i++ {
						// Traffic on a channel the client did not ask for.
						if i%10 == 0 {
							if _, err := hub.Publish(context.Background(), ssehub.Message{Channel: "other", Data: json.RawMessage(`"noise"`)}); err != nil {
								pubErr <- err
								return
							}
						}
						if err := pub(tt.channels[i%len(tt.channels)]); err != nil {
							pubErr <- err
							return
						}
					}
				}
				pubDone.Store(true)
				pubErr <- nil
			}()

			var got []sse.Event
			lastID := ""
			reconnects := 0
			s := hubtest.Open(t, ts.Client(), base, nil)
			token <- struct{}{}
			// read reads n events from s; it reports false when the stream
			// ended early.
			read := func(n int) bool {
				for ; n > 0; n-- {
					e, err := s.Dec.Next()
					if err != nil {
						return false // a slow-subscriber disconnect; resume as well
					}
					if e.Type == ssehub.ResetType {
						t.Fatalf("reset after %d events and %d reconnects: the history holds every event", len(got), reconnects)
					}
					if want := fmt.Sprintf(`{"n":%d}`, len(got)); e.Data != want {
						t.Fatalf("event %d after %d reconnects has data %s, want %s: events lost, duplicated or out of order", len(got), reconnects, e.Data, want)
					}
					got = append(got, e)
					lastID = e.LastEventID
				}
				return true
			}
			for {
				// Read some of the events published so far (never wait for
				// one that may not come), then drop the connection. Every
				// other connection reads all of them, replayed and queued,
				// then one live event.
				done := pubDone.Load()
				switch available := int(published.Load()) - len(got); {
				case lastID == "":
					read(1) // without an id to resume from, keep the first stream until it has one
				case done:
					read(available)
				case reconnects%2 == 0:
					if read(available) {
						if err := pub(tt.channels[reconnects%len(tt.channels)]); err != nil {
							t.Fatalf("Publish: %v", err)
						}
						read(1)
					}
				default:
					read(min(1+(reconnects*7)%40, available))
				}
				s.Close()
				if done && len(got) == int(published.Load()) {
					break
				}
				reconnects++
				select {
				case token <- struct{}{}:
				default:
				}
				u, hdr := base, lastID
				if reconnects%2 == 0 {
					u, hdr = base+"&last_event_id="+url.QueryEscape(lastID), ""
				}
				var err error
				if s, err = hubtest.Dial(t.Context(), ts.Client(), u, hubtest.LastEventID(hdr)); err != nil {
					t.Fatalf("reconnect %d: %v", reconnects, err)
				}
			}
			if err := <-pubErr; err != nil {
				t.Fatalf("Publish: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != len(ids) || len(ids) < events+2*reconnects {
				t.Fatalf("got %d events, want %d (%d reconnects)", len(got), len(ids), reconnects)
			}
			for i, e := range got {
				want := fmt.Sprintf(`{"n":%d}`, i)
				if e.Data != want || e.LastEventID != ids[i] || !e.IDSet {
					t.Fatalf("event %d of %d (after %d reconnects) = %+v, want data %s id %s", i, len(ids), reconnects, e, want, ids[i])
				}
			}
			t.Logf("%d events, %d reconnects", len(got), reconnects)
		})
	}
}

// TestResumeHeaderAndQuery resumes once, deterministically, with each way
// of passing the last event id, then receives live events.
func TestResumeHeaderAndQuery(t *testing.T) {
	t.Parallel()
	for _, viaQuery := range []bool{false, true} {
		t.Run(fmt.Sprintf("query=%v", viaQuery), func(t *testing.T) {
			t.Parallel()
			hub, ts := hubtest.Serve(t, ssehub.Config{})
			s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c", nil)
			var ids []string
			for i := range 3 {
				ids = append(ids, hubtest.Publish(t, hub, "c", fmt.Sprint(i)))
			}
			if e := s.Next(t); e.Data != "0" {
				t.Fatalf("got %+v, want data 0", e)
			}
			s.Close()
			ids = append(ids, hubtest.Publish(t, hub, "c", "3"))

			u, hdr := ts.URL+"/sse?channel=c", ids[0]
			if viaQuery {
				u, hdr = u+"&last_event_id="+url.QueryEscape(ids[0]), ""
			}
			s = hubtest.Open(t, ts.Client(), u, hubtest.LastEventID(hdr))
			for i := 1; i < 4; i++ {
				if e := s.Next(t); e.Data != fmt.Sprint(i) || e.LastEventID != ids[i] {
					t.Fatalf("resumed stream got %+v, want data %d id %s", e, i, ids[i])
				}
			}
			live := hubtest.Publish(t, hub, "c", "4")
			if e := s.Next(t); e.Data != "4" || e.LastEventID != live {
				t.Fatalf("live event %+v, want data 4 id %s", e, live)
			}
		})
	}
}

// TestResumeHeaderWins checks that the header is used when a request
// carries both forms.
func TestResumeHeaderWins(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	first := hubtest.Publish(t, hub, "sse", "1")
	second := hubtest.Publish(t, hub, "sse", "2")
	hubtest.Publish(t, hub, "sse", "3")
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?last_event_id="+url.QueryEscape(first), hubtest.LastEventID(second))
	if e := s.Next(t); e.Data != "3" {
		t.Fatalf("got %+v, want the event after the header's id", e)
	}
}

// clock is a settable time source for a MemoryBroker.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestResumeReset covers the ids the hub cannot resume from: the first
// event is a reset carrying an id, then live events follow, and resuming
// from the reset's id replays what was published after it.
func TestResumeReset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mem  func(*clock) ssehub.MemoryConfig
		// prepare publishes on channel c and returns the id to resume from.
		prepare func(t *testing.T, hub *ssehub.Hub, clk *clock) string
	}{
		{
			name: "unknown id",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				hubtest.Publish(t, hub, "c", "0")
				return "no-such-id"
			},
		},
		{
			name: "id of an earlier process",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				hubtest.Publish(t, hub, "c", "0")
				return "0000000000000001"
			},
		},
		{
			name: "id from the future",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				return "9999999999999999"
			},
		},
		{
			name: "evicted by size",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{HistorySize: 3} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				first := hubtest.Publish(t, hub, "c", "0")
				for i := 1; i < 5; i++ {
					hubtest.Publish(t, hub, "c", fmt.Sprint(i))
				}
				return first
			},
		},
		{
			name: "publisher id evicted by size",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{HistorySize: 2} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				for i := range 4 {
					if _, err := hub.Publish(t.Context(), ssehub.Message{Channel: "c", ID: fmt.Sprint("p", i), Data: json.RawMessage("1")}); err != nil {
						t.Fatal(err)
					}
				}
				return "p0"
			},
		},
		{
			name: "evicted by age",
			mem: func(c *clock) ssehub.MemoryConfig {
				return ssehub.MemoryConfig{HistoryAge: time.Minute, Now: c.Now}
			},
			prepare: func(t *testing.T, hub *ssehub.Hub, clk *clock) string {
				first := hubtest.Publish(t, hub, "c", "0")
				hubtest.Publish(t, hub, "c", "1")
				clk.Advance(2 * time.Minute)
				hubtest.Publish(t, hub, "c", "2")
				return first
			},
		},
		{
			name: "evicted by size on one of two channels",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{HistorySize: 2} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				first := hubtest.Publish(t, hub, "c", "0")
				for i := range 3 {
					hubtest.Publish(t, hub, "d", fmt.Sprint(i))
				}
				return first
			},
		},
		{
			name: "history off",
			mem:  func(*clock) ssehub.MemoryConfig { return ssehub.MemoryConfig{HistorySize: -1} },
			prepare: func(t *testing.T, hub *ssehub.Hub, _ *clock) string {
				// A stream holds the channel open while an event goes by.
				sub, err := hub.Subscribe(t.Context(), []string{"c"}, "")
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close()
				first := hubtest.Publish(t, hub, "c", "0")
				hubtest.Publish(t, hub, "c", "1")
				return first
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			broker := ssehub.NewMemoryBroker(tt.mem(clk))
			hub, ts := hubtest.Serve(t, ssehub.Config{Broker: broker})
			from := tt.prepare(t, hub, clk)
			streamURL := ts.URL + "/sse?channel=c&channel=d"

			s := hubtest.Open(t, ts.Client(), streamURL, hubtest.LastEventID(from))
			reset := s.Next(t)
			if reset.Type != ssehub.ResetType || !reset.IDSet || reset.LastEventID == "" || reset.Data != "{}" {
				t.Fatalf("first event after resuming from %q = %+v, want a %s event with an id", from, reset, ssehub.ResetType)
			}
			live := hubtest.Publish(t, hub, "c", `"live"`)
			if e := s.Next(t); e.Data != `"live"` || e.LastEventID != live {
				t.Fatalf("after the reset got %+v, want the live event %s", e, live)
			}
			s.Close()

			missed := hubtest.Publish(t, hub, "d", `"missed"`)
			s = hubtest.Open(t, ts.Client(), streamURL, hubtest.LastEventID(reset.LastEventID))
			if tt.name == "history off" {
				// Nothing can be replayed, so the client learns that it
				// missed events instead.
				if e := s.Next(t); e.Type != ssehub.ResetType {
					t.Fatalf("resuming without history got %+v, want a reset", e)
				}
				return
			}
			for _, want := range []struct{ data, id string }{{`"live"`, live}, {`"missed"`, missed}} {
				if e := s.Next(t); e.Data != want.data || e.LastEventID != want.id || e.Type != "message" {
					t.Fatalf("resuming from the reset's id got %+v, want data %s id %s", e, want.data, want.id)
				}
			}
		})
	}
}

// TestResumePublisherIDs resumes from ids that publishers chose.
func TestResumePublisherIDs(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	pub := func(ch, id string) {
		t.Helper()
		got, err := hub.Publish(t.Context(), ssehub.Message{Channel: ch, ID: id, Data: json.RawMessage(`"` + id + `"`)})
		if err != nil || got != id {
			t.Fatalf("Publish with id %q = %q, %v", id, got, err)
		}
	}
	for _, id := range []string{"a1", "1795238353.220689", "a 3"} {
		pub("c", id)
	}
	pub("d", "d1")
	pub("c", "a4")
	tests := []struct {
		from string
		want []string
	}{
		{"a1", []string{"1795238353.220689", "a 3", "d1", "a4"}},
		{"a 3", []string{"d1", "a4"}},
		{"d1", []string{"a4"}},
	}
	for _, tt := range tests {
		s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c&channel=d", hubtest.LastEventID(tt.from))
		for _, want := range tt.want {
			if e := s.Next(t); e.LastEventID != want || e.Data != `"`+want+`"` {
				t.Fatalf("resuming from %q got %+v, want id %q", tt.from, e, want)
			}
		}
		s.Close()
	}
	// Up to date: only live events follow.
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c&channel=d", hubtest.LastEventID("a4"))
	pub("d", "d2")
	if e := s.Next(t); e.LastEventID != "d2" {
		t.Fatalf("resuming from the latest id got %+v, want the live event d2", e)
	}
}

// TestSubscribeResume gives a Go subscription the same resume rules as a
// stream.
func TestSubscribeResume(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubtest.Close(t, hub) })
	ctx := t.Context()
	var ids []string
	for i := range 3 {
		ids = append(ids, hubtest.Publish(t, hub, []string{"x", "y"}[i%2], fmt.Sprint(i)))
	}
	sub, err := hub.Subscribe(ctx, []string{"x", "y"}, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ids = append(ids, hubtest.Publish(t, hub, "y", "3"))
	for i := 1; i < 4; i++ {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Data) != fmt.Sprint(i) || e.ID != ids[i] {
			t.Fatalf("Next = %s %s, want %d %s", e.ID, e.Data, i, ids[i])
		}
		if want := fmt.Sprintf("id: %s\ndata: %d\n\n", ids[i], i); string(e.Frame()) != want {
			t.Fatalf("Frame = %q, want %q", e.Frame(), want)
		}
	}

	unknown, err := hub.Subscribe(ctx, nil, "nope")
	if err != nil {
		t.Fatal(err)
	}
	defer unknown.Close()
	e, err := unknown.Next(ctx)
	if err != nil || e.Type != ssehub.ResetType || e.ID == "" || !strings.HasPrefix(string(e.Frame()), "id: ") {
		t.Fatalf("Next after an unknown id = %+v, %v; want a reset with an id", e, err)
	}
}
