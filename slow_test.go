package ssehub_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ssehub/ssehub"
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

// TestSlowSubscriberIsolation has one stream that does not read and one
// that does, on the same channel. Publishing completes while the first is
// stuck; the second receives every event; the first is disconnected and,
// resuming from its last id, gets everything it missed.
func TestSlowSubscriberIsolation(t *testing.T) {
	t.Parallel()
	const (
		events = 100
		size   = 8 << 10 // bytes of data per event: the slow stream stalls after a few
	)
	hub, err := ssehub.New(ssehub.Config{QueueSize: 4, WriteTimeout: -1, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(hub)
	lis := &firstConnSmallBuffer{Listener: ts.Listener, first: make(chan *net.TCPConn, 1)}
	ts.Listener = lis
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { closeHub(t, hub) })

	// The slow client has a connection of its own.
	slowClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(slowClient.CloseIdleConnections)

	streamURL := ts.URL + "/sse?channel=feed"
	data := func(i int) string { return fmt.Sprintf(`"%04d%s"`, i, strings.Repeat("x", size)) }
	ids := make([]string, events)

	slow := openStream(t, slowClient, streamURL, "") // the first connection
	// Both streams read the first event, so the slow one has an id to
	// resume from.
	normal := openStream(t, ts.Client(), streamURL, "")
	ids[0] = publish(t, hub, "feed", data(0))
	for _, s := range []*testStream{slow, normal} {
		if e := s.next(t); e.Data != data(0) {
			t.Fatalf("first event has %d bytes of data, want %d", len(e.Data), len(data(0)))
		}
	}

	// The publisher waits for the normal stream after each event (so that
	// its queue never fills), never for the slow one.
	for i := 1; i < events; i++ {
		ids[i] = publish(t, hub, "feed", data(i))
		if e := normal.next(t); e.Data != data(i) || e.LastEventID != ids[i] {
			t.Fatalf("normal stream: event %d is %.8s... id %s, want %.8s... id %s", i, e.Data, e.LastEventID, data(i), ids[i])
		}
	}

	// Now the slow stream reads what reached it before it was cut off,
	// through a send buffer of the usual size again.
	(<-lis.first).SetWriteBuffer(1 << 20)
	got := 1
	lastID := ids[0]
	for {
		e, err := slow.dec.Next()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("slow stream: %v", err)
			}
			break
		}
		if e.Data != data(got) || e.LastEventID != ids[got] {
			t.Fatalf("slow stream: event %d is %.8s... id %s, want %.8s... id %s", got, e.Data, e.LastEventID, data(got), ids[got])
		}
		lastID = e.LastEventID
		got++
		if got == events {
			t.Fatalf("slow stream received all %d events: it was never disconnected", events)
		}
	}
	t.Logf("the slow stream was cut off after %d of %d events", got, events)

	resumed := openStream(t, ts.Client(), streamURL, lastID)
	for ; got < events; got++ {
		if e := resumed.next(t); e.Data != data(got) || e.LastEventID != ids[got] {
			t.Fatalf("resumed stream: event %d is %.8s... id %s, want %.8s... id %s", got, e.Data, e.LastEventID, data(got), ids[got])
		}
	}
	live := publish(t, hub, "feed", `"live"`)
	for _, s := range []*testStream{resumed, normal} {
		if e := s.next(t); e.Data != `"live"` || e.LastEventID != live {
			t.Fatalf("after catching up got %+v, want the live event", e)
		}
	}
}

// TestSlowSubscription checks the same policy on Go subscriptions, where it
// is deterministic: a subscription that stops calling Next ends with
// ErrSlowSubscriber once more than QueueSize events wait for it, and the
// others are unaffected.
func TestSlowSubscription(t *testing.T) {
	t.Parallel()
	const queue = 3
	hub, err := ssehub.New(ssehub.Config{QueueSize: queue})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeHub(t, hub) })
	ctx := t.Context()
	slow, err := hub.Subscribe(ctx, []string{"c"}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := hub.Subscribe(ctx, []string{"c"}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()

	const events = 10 * queue
	var ids []string
	for i := range events {
		ids = append(ids, publish(t, hub, "c", fmt.Sprint(i)))
		e, err := fast.Next(ctx)
		if err != nil || string(e.Data) != fmt.Sprint(i) {
			t.Fatalf("fast subscriber: Next = %v, %v; want event %d", e, err, i)
		}
		if i == 0 {
			// The slow one reads the first event, then stops.
			if e, err := slow.Next(ctx); err != nil || e.ID != ids[0] {
				t.Fatalf("slow subscriber: Next = %v, %v; want the first event", e, err)
			}
		}
	}

	// What was queued may still come out, then the end.
	got := 1
	for {
		e, err := slow.Next(ctx)
		if errors.Is(err, ssehub.ErrSlowSubscriber) {
			break
		}
		if err != nil {
			t.Fatalf("slow subscriber: Next = %v, want ErrSlowSubscriber", err)
		}
		if e.ID != ids[got] {
			t.Fatalf("slow subscriber: event %s, want %s", e.ID, ids[got])
		}
		got++
		if got > 1+queue {
			t.Fatalf("slow subscriber received %d events after it stopped reading, with a queue of %d", got-1, queue)
		}
	}

	resumed, err := hub.Subscribe(ctx, []string{"c"}, ids[got-1])
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	for ; got < events; got++ {
		e, err := resumed.Next(ctx)
		if err != nil || e.ID != ids[got] {
			t.Fatalf("resumed: Next = %v, %v; want event %s", e, err, ids[got])
		}
	}
}
