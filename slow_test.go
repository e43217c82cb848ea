package ssehub_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// firstConnSmallBuffer gives the first connection it accepts a small send
// buffer, so that when its client does not read, the server's writes stall
// after a few KiB. Later connections keep the system's buffers.
type firstConnSmallBuffer struct {
	net.Listener
	first chan *net.TCPConn // receives the first connection
	once  sync.Once
}

func (l *firstConnSmallBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		l.once.Do(func() {
			tc.SetWriteBuffer(4096)
			l.first <- tc
		})
	}
	return c, err
}

// TestSlowStreamCatchesUp has one stream that stops reading and one that
// reads, on the same channel, on both stream paths. Publishing completes
// while the first is stuck, the second receives every event as it is
// published, and the first, once it reads again, receives every event in
// order: a slow reader costs the hub no queue and is not cut while the
// history holds what it has yet to read.
func TestSlowStreamCatchesUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		detach bool
		events int
		size   int // bytes of data per event: the slow stream stalls after a few
	}{
		{false, 100, 8 << 10},
		{true, 100, 8 << 10},
		{true, 20, 100 << 10}, // each event larger than a batch
	} {
		t.Run(fmt.Sprintf("detach=%v/size=%d", tc.detach, tc.size), func(t *testing.T) {
			t.Parallel()
			detach, events, size := tc.detach, tc.events, tc.size
			hub, err := ssehub.New(ssehub.Config{WriteTimeout: -1, Heartbeat: -1, Detach: detach})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(hub)
			lis := &firstConnSmallBuffer{Listener: ts.Listener, first: make(chan *net.TCPConn, 1)}
			ts.Listener = lis
			ts.Start()
			t.Cleanup(ts.Close)
			t.Cleanup(func() { hubtest.Close(t, hub) })

			// The slow client has a connection of its own.
			slowClient := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(slowClient.CloseIdleConnections)
			streamURL := ts.URL + "/sse?channel=feed"
			data := func(i int) string { return fmt.Sprintf(`"%04d%s"`, i, strings.Repeat("x", size)) }
			ids := make([]string, events)

			slow := hubtest.Open(t, slowClient, streamURL, nil) // the first connection
			normal := hubtest.Open(t, ts.Client(), streamURL, nil)
			// The publisher waits for the normal stream after each event,
			// never for the slow one.
			for i := range events {
				ids[i] = hubtest.Publish(t, hub, "feed", data(i))
				if e := normal.Next(t); e.Data != data(i) || e.LastEventID != ids[i] {
					t.Fatalf("normal stream: event %d is %.8s... id %s, want %.8s... id %s", i, e.Data, e.LastEventID, data(i), ids[i])
				}
			}
			(<-lis.first).SetWriteBuffer(1 << 20)
			for i := range events {
				if e := slow.Next(t); e.Data != data(i) || e.LastEventID != ids[i] {
					t.Fatalf("slow stream: event %d is %.8s... id %s type %s, want %.8s... id %s", i, e.Data, e.LastEventID, e.Type, data(i), ids[i])
				}
			}
			live := hubtest.Publish(t, hub, "feed", `"live"`)
			for _, s := range []*hubtest.Stream{slow, normal} {
				if e := s.Next(t); e.Data != `"live"` || e.LastEventID != live {
					t.Fatalf("after catching up got %+v, want the live event", e)
				}
			}
		})
	}
}

// slowCounter is a Metrics that counts slow subscribers.
type slowCounter struct {
	ssehub.Metrics
	mu   sync.Mutex
	slow int
}

func (m *slowCounter) SlowSubscriber() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slow++
}

func (m *slowCounter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slow
}

// TestStalledStreamCut: a client that reads nothing is cut within the
// write timeout, on both stream paths, while a stream beside it gets
// every event.
func TestStalledStreamCut(t *testing.T) {
	t.Parallel()
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			t.Parallel()
			logs := &hubtest.LogBuffer{}
			metrics := &slowCounter{Metrics: nopMetrics{}}
			hub, err := ssehub.New(ssehub.Config{
				WriteTimeout: 200 * time.Millisecond, Heartbeat: -1, Detach: detach,
				Metrics: metrics, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(hub)
			lis := &firstConnSmallBuffer{Listener: ts.Listener, first: make(chan *net.TCPConn, 1)}
			ts.Listener = lis
			ts.Start()
			t.Cleanup(ts.Close)
			t.Cleanup(func() { hubtest.Close(t, hub) })

			stalled, err := net.Dial("tcp", ts.Listener.Addr().String()) // the first connection
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			stalled.(*net.TCPConn).SetReadBuffer(4096)
			fmt.Fprintf(stalled, "GET /sse?channel=c HTTP/1.1\r\nHost: x\r\n\r\n")
			<-lis.first
			reader := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c", nil)
			for ssehub.OpenStreams(hub) < 2 {
				hubtest.Publish(t, hub, "x", "0") // wait for the stalled stream to be admitted
			}

			big := `"` + strings.Repeat("x", 64<<10) + `"`
			for i := 0; !strings.Contains(logs.String(), "stream closed"); i++ {
				if i == 2000 {
					t.Fatal("the stalled stream was never cut")
				}
				id := hubtest.Publish(t, hub, "c", big)
				if e := reader.Next(t); e.LastEventID != id {
					t.Fatalf("reader got %q, want %q", e.LastEventID, id)
				}
			}
			if want := "reason=\"" + ssehub.ErrSlowSubscriber.Error() + "\""; !strings.Contains(logs.String(), want) {
				t.Errorf("stream closed, but not %s:\n%s", want, logs)
			}
			if metrics.count() != 1 {
				t.Errorf("%d slow subscribers counted, want 1", metrics.count())
			}
			id := hubtest.Publish(t, hub, "c", `"after"`)
			if e := reader.Next(t); e.LastEventID != id {
				t.Fatalf("reader got %q, want %q", e.LastEventID, id)
			}
		})
	}
}

// TestSlowSubscription covers Go subscriptions that stop reading while
// events are published, then read again: within the history they get
// every event; past a history that no longer has them, a reset and then
// live events; past the events the hub keeps itself (Config.Backlog) but
// within the broker's history, every event again, replayed without a
// reconnect.
func TestSlowSubscription(t *testing.T) {
	t.Parallel()
	const events = 30
	tests := []struct {
		name   string
		cfg    func() ssehub.Config
		resets bool
	}{
		{"within the history", func() ssehub.Config { return ssehub.Config{} }, false},
		{"past the history", func() ssehub.Config {
			return ssehub.Config{Broker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: 3})}
		}, true},
		{"past the hub's backlog", func() ssehub.Config {
			// The fake broker lends no history to the hub, which keeps 3
			// events per channel itself; the broker keeps 100.
			return ssehub.Config{Broker: &hubtest.Broker{Mem: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: 100})}, Backlog: 3}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hub, err := ssehub.New(tt.cfg())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { hubtest.Close(t, hub) })
			ctx := t.Context()
			sub, err := hub.Subscribe(ctx, []string{"c", "d"}, "")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var ids []string
			for i := range events {
				ids = append(ids, hubtest.Publish(t, hub, []string{"c", "d"}[i%2], fmt.Sprint(i)))
				if i == 0 {
					if e, err := sub.Next(ctx); err != nil || e.ID != ids[0] {
						t.Fatalf("Next = %v, %v; want the first event", e, err)
					}
				}
			}
			got := 1
			if tt.resets {
				// The reset's id is the channels' position when it was
				// made: at or after the last event, so a resume from it
				// misses nothing and repeats nothing.
				e, err := sub.Next(ctx)
				if err != nil || e.Type != ssehub.ResetType || len(e.ID) != len(ids[events-1]) || e.ID < ids[events-1] {
					t.Fatalf("Next after falling behind = %+v, %v; want a reset with a position at or after %s", e, err, ids[events-1])
				}
				got = events
			}
			for ; got < events; got++ {
				e, err := sub.Next(ctx)
				if err != nil || e.ID != ids[got] || string(e.Data) != fmt.Sprint(got) {
					t.Fatalf("Next = %+v, %v; want event %d (%s)", e, err, got, ids[got])
				}
			}
			live := hubtest.Publish(t, hub, "d", `"live"`)
			if e, err := sub.Next(ctx); err != nil || e.ID != live {
				t.Fatalf("Next = %+v, %v; want the live event %s", e, err, live)
			}
		})
	}
}

// nopMetrics records nothing.
type nopMetrics struct{}

func (nopMetrics) SubscriptionOpened()         {}
func (nopMetrics) SubscriptionClosed()         {}
func (nopMetrics) ChannelSubscribed()          {}
func (nopMetrics) ChannelUnsubscribed()        {}
func (nopMetrics) EventPublished()             {}
func (nopMetrics) EventReceived()              {}
func (nopMetrics) EventsWritten(int)           {}
func (nopMetrics) WriteLatency(time.Duration)  {}
func (nopMetrics) SlowSubscriber()             {}
func (nopMetrics) Replay(ssehub.ReplayOutcome) {}
