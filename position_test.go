package ssehub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// streamPosition opens a stream without Last-Event-ID, reads the id field
// the hub sends before any event, and drops the connection.
func streamPosition(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "&position=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no id field before the first event: %v", err)
		}
		if strings.HasPrefix(line, "data:") {
			t.Fatalf("an event came before the stream's position: %q", line)
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			return strings.TrimSuffix(id, "\n")
		}
	}
}

// TestPositionBeforeFirstEvent: a client that leaves before its first
// event and comes back with the id the hub gave it on connect receives
// everything published while it was away.
func TestPositionBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	hubtest.Publish(t, hub, "p", `"before"`)
	pos := streamPosition(t, ts.URL+"/sse?channel=p&channel=q")
	want := []string{
		hubtest.Publish(t, hub, "p", `1`),
		hubtest.Publish(t, hub, "q", `2`),
		hubtest.Publish(t, hub, "p", `3`),
	}
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=p&channel=q", hubtest.LastEventID(pos))
	for _, id := range want {
		if e := s.Next(t); e.LastEventID != id || e.Type == ssehub.ResetType {
			t.Fatalf("resumed stream: event %+v, want id %s", e, id)
		}
	}
}

// TestCatchUpBeforeLiveSubscription publishes an event after the hub has
// taken a new subscriber's position but before its live subscription is
// in place: the subscriber still gets it, once.
func TestCatchUpBeforeLiveSubscription(t *testing.T) {
	t.Parallel()
	mem := ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
	fb := &hubtest.Broker{Mem: mem}
	var sneaked string
	fb.SubscribeFunc = func(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error) {
		e, err := mem.Publish(ctx, ssehub.Message{Channel: channel, Data: json.RawMessage(`"sneaked"`)})
		if err != nil {
			return nil, err
		}
		sneaked = e.ID
		return mem.Subscribe(ctx, channel, deliver)
	}
	hub, err := ssehub.New(ssehub.Config{Broker: fb})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close(context.Background())
	sub, err := hub.Subscribe(t.Context(), []string{"c"}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	live := hubtest.Publish(t, hub, "c", `"live"`)
	for _, want := range []string{sneaked, live} {
		e, err := sub.Next(t.Context())
		if err != nil || e.ID != want {
			t.Fatalf("Next = %+v, %v; want id %s (the position frame is not an event)", e, err, want)
		}
	}
}

// TestPositionIgnoresOtherChannels: the position a new stream gets, and
// the id of a reset, do not move with publishes on other channels, so a
// reader of a public channel learns nothing about private ones. The clock
// stands still, so anything that moved would be the other channels'
// doing.
func TestPositionIgnoresOtherChannels(t *testing.T) {
	t.Parallel()
	now := time.Now()
	mem := ssehub.NewMemoryBroker(ssehub.MemoryConfig{Now: func() time.Time { return now }})
	hub, ts := hubtest.Serve(t, ssehub.Config{Broker: mem})
	hubtest.Publish(t, hub, "public", `"p"`)
	url := ts.URL + "/sse?channel=public"
	pos := streamPosition(t, url)
	reset := func() string {
		t.Helper()
		s := hubtest.Open(t, ts.Client(), url, hubtest.LastEventID("no-such-id"))
		e := s.Next(t)
		if e.Type != ssehub.ResetType {
			t.Fatalf("resume from an unknown id: %+v, want a reset", e)
		}
		s.Close()
		return e.LastEventID
	}
	if got := reset(); got != pos {
		t.Fatalf("reset id %s, position %s; want the same", got, pos)
	}
	var private string
	for i := range 5 {
		private = hubtest.Publish(t, hub, "private", fmt.Sprint(i))
	}
	if got := streamPosition(t, url); got != pos {
		t.Fatalf("position %s after publishes on another channel (the last %s), was %s", got, private, pos)
	}
	if got := reset(); got != pos {
		t.Fatalf("reset id %s after publishes on another channel, was %s", got, pos)
	}
	next := hubtest.Publish(t, hub, "public", `"q"`)
	if got := streamPosition(t, url); got != next {
		t.Fatalf("position %s after a publish on the channel itself, want its id %s", got, next)
	}
}
