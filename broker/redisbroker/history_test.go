package redisbroker_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

func pub(t testing.TB, b *redisbroker.Broker, channel, id string, n int) *ssehub.Event {
	t.Helper()
	e, err := b.Publish(t.Context(), ssehub.Message{Channel: channel, ID: id, Data: json.RawMessage(fmt.Sprint(n))})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func replayIDs(t testing.TB, b *redisbroker.Broker, channels []string, lastID string) ([]string, ssehub.Cursor, error) {
	t.Helper()
	var ids []string
	head, err := b.Replay(t.Context(), channels, lastID, func(e *ssehub.Event) error {
		ids = append(ids, e.ID)
		return nil
	})
	return ids, head, err
}

func TestHistorySize(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{HistorySize: 3, Prefix: "h:"})
	var ids []string
	for i := range 6 {
		id := ""
		if i == 1 {
			id = "own-2"
		}
		ids = append(ids, pub(t, b, "c", id, i).ID)
	}
	for _, tt := range []struct {
		after string
		want  []string // nil: unknown
	}{
		{ids[0], nil},
		{"own-2", nil},
		{ids[2], ids[3:]}, // the last evicted event: nothing missed
		{ids[3], ids[4:]},
		{ids[5], []string{}},
	} {
		got, head, err := replayIDs(t, b, []string{"c"}, tt.after)
		if tt.want == nil {
			if !errors.Is(err, ssehub.ErrUnknownID) {
				t.Fatalf("replay after %q: %v %v; want ErrUnknownID", tt.after, got, err)
			}
			if len(head.ID) != len(ids[5]) || head.ID < ids[5] {
				t.Fatalf("head %q, want %q or later", head.ID, ids[5])
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Fatalf("replay after %q: %v %v; want %v", tt.after, got, err, tt.want)
		}
	}
	c := newClient(t, srv)
	if n := c.XLen(t.Context(), "h:stream:c").Val(); n != 3 {
		t.Errorf("stream holds %d entries, want 3", n)
	}
	if n := c.Exists(t.Context(), "h:ids:c").Val(); n != 0 {
		t.Errorf("the index still holds the trimmed publisher's id")
	}
}

func TestHistoryAge(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const age = 100 * time.Millisecond
	b := newBroker(t, srv, redisbroker.Options{HistoryAge: age, Prefix: "a:"})
	e1 := pub(t, b, "old", "", 1)
	pub(t, b, "old", "", 2)
	// Once the second event is older than the age, resuming after the first
	// has missed it.
	waitFor(t, "the second event to expire", func() bool {
		_, _, err := replayIDs(t, b, []string{"old"}, e1.ID)
		return errors.Is(err, ssehub.ErrUnknownID)
	})
	// A publish on another channel drops the idle one altogether.
	c := newClient(t, srv)
	waitFor(t, "the idle channel to be dropped", func() bool {
		pub(t, b, "other", "", 3)
		return c.Exists(t.Context(), "a:stream:old").Val() == 0
	})
	if _, _, err := replayIDs(t, b, []string{"old"}, e1.ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay after a dropped channel's event: %v, want ErrUnknownID", err)
	}
	_, head, _ := replayIDs(t, b, []string{"old"}, e1.ID)
	if got, _, err := replayIDs(t, b, []string{"old"}, head.ID); err != nil || len(got) != 0 {
		t.Fatalf("replay from the head: %v %v", got, err)
	}
	e := pub(t, b, "old", "", 4)
	if got, _, err := replayIDs(t, b, []string{"old", "other"}, head.ID); err != nil || fmt.Sprint(got) != fmt.Sprint([]string{e.ID}) {
		t.Fatalf("replay after the head: %v %v; want [%s]", got, err, e.ID)
	}
}

func TestNoHistory(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{HistorySize: -1, Prefix: "n:"})
	e := pub(t, b, "c", "", 1)
	pub(t, b, "c", "", 2)
	if _, _, err := replayIDs(t, b, []string{"c"}, e.ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay without history: %v, want ErrUnknownID", err)
	}
	_, head, _ := replayIDs(t, b, []string{"c"}, e.ID)
	if got, _, err := replayIDs(t, b, []string{"c"}, head.ID); err != nil || len(got) != 0 {
		t.Fatalf("replay from the head: %v %v", got, err)
	}
	if n := newClient(t, srv).Exists(t.Context(), "n:stream:c").Val(); n != 0 {
		t.Fatal("a stream was written without history")
	}
}

// TestPositionOnFreshRedis: on a Redis where nothing was ever published, a
// new stream still starts with a position frame, and a client that
// reconnects from it gets what was published meanwhile, with no reset.
func TestPositionOnFreshRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	th := newHub(t, srv, redisbroker.Options{}, ssehub.Config{Heartbeat: -1})
	resp, err := http.Get(th.srv.URL + "/sse?channel=fresh&position=1")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse: %v %v", resp, err)
	}
	raw := &rawStream{t: t, body: resp.Body, rd: bufio.NewReader(resp.Body)}
	if got := raw.read(2); got != ":\n" {
		t.Fatalf("stream opened with %q", got)
	}
	frame := raw.read(len("id: 0000000000000000\n\n"))
	pos, ok := strings.CutPrefix(frame, "id: ")
	pos, ok2 := strings.CutSuffix(pos, "\n\n")
	if !ok || !ok2 || strings.Trim(pos, "0123456789") != "" {
		t.Fatalf("first frame %q; want a position frame", frame)
	}
	raw.body.Close()
	id := th.publish(t, "fresh", 1)
	s := openStream(t, th.srv.URL, []string{"fresh"}, pos)
	if e := s.next(); e.LastEventID != id || e.Type != "message" {
		t.Fatalf("resumed from the position: %+v; want event %s", e, id)
	}
}
