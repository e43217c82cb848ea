package natsbroker_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/natsbroker"
	"github.com/ssehub/ssehub/internal/natstest"
)

func ids(events []*ssehub.Event) []string {
	s := make([]string, len(events))
	for i, e := range events {
		s[i] = e.ID
		if e.Type == ssehub.ResetType {
			s[i] = "reset@" + strconv.FormatUint(e.Seq, 10)
		}
	}
	return s
}

// resets gives each reset event among events the position its id stands
// for as Seq, so that ids shows where it resumes.
func resets(t *testing.T, b *natsbroker.Broker, events []*ssehub.Event) []*ssehub.Event {
	t.Helper()
	out := make([]*ssehub.Event, len(events))
	for i, e := range events {
		out[i] = e
		if e.Type == ssehub.ResetType {
			seq, ok := natsbroker.SeqOf(t.Context(), b, e.ID)
			if !ok {
				t.Fatalf("reset id %q is no position of the stream", e.ID)
			}
			out[i] = ssehub.NewEvent(e.Channel, e.ID, e.Type, e.Data, e.Retry, seq, e.Time)
		}
	}
	return out
}

func mustPublish(t *testing.T, b ssehub.Broker, channel string, n int) *ssehub.Event {
	t.Helper()
	e, err := publish(t.Context(), b, channel, n)
	if err != nil {
		t.Fatalf("Publish on %q: %v", channel, err)
	}
	return e
}

func replayIDs(t *testing.T, b *natsbroker.Broker, channels []string, after string) ([]string, error) {
	t.Helper()
	var got []*ssehub.Event
	_, err := b.Replay(t.Context(), channels, after, func(e *ssehub.Event) error {
		got = append(got, e)
		return nil
	})
	return ids(got), err
}

// TestServerDown stops the only server: publishes fail with
// ErrUnavailable, at once once the outage is old, Check reports it, the
// subscription stays, and when the server is back with its store the
// broker is ready again, counts a recovery, and delivers new events after
// the old ones with nothing twice.
func TestServerDown(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	m := &countMetrics{}
	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "DOWN", PublishTimeout: 500 * time.Millisecond, Metrics: m})
	r := subscribe(t, b, "down.a")
	e1 := mustPublish(t, b, "down.a", 1)
	waitFor(t, "the first event", func() bool { return r.has(e1.ID) })
	waitFor(t, "the broker to be ready", func() bool { return b.Check(t.Context()) == nil })

	srv.Stop()
	// The first publish may have gone out before the client saw the
	// connection close: it cannot tell whether the server got it.
	if _, err := publish(t.Context(), b, "down.a", 2); !errors.Is(err, ssehub.ErrUnavailable) && !errors.Is(err, ssehub.ErrOutcomeUnknown) {
		t.Fatalf("Publish with the server down: %v, want ErrUnavailable or ErrOutcomeUnknown", err)
	}
	waitFor(t, "the connection to be down", func() bool { return b.Check(t.Context()) != nil })
	if _, err := publish(t.Context(), b, "down.a", 2); !errors.Is(err, ssehub.ErrUnavailable) {
		t.Fatalf("Publish with the connection down: %v, want ErrUnavailable", err)
	}
	if err := b.Check(t.Context()); !errors.Is(err, ssehub.ErrUnavailable) {
		t.Fatalf("Check with the server down: %v, want ErrUnavailable", err)
	}
	// Once the outage is older than the publish timeout, a publish does not
	// wait for it.
	waitFor(t, "a publish to fail at once", func() bool {
		_, err := publish(t.Context(), b, "down.a", 3)
		return errors.Is(err, ssehub.ErrUnavailable) && strings.Contains(err.Error(), "not connected to NATS for")
	})
	if m.errors.Load() == 0 {
		t.Error("no broker error counted during the outage")
	}

	srv.Start()
	waitFor(t, "the broker to be ready again", func() bool { return b.Check(t.Context()) == nil })
	e4 := mustPublish(t, b, "down.a", 4)
	waitFor(t, "an event after the restart", func() bool { return r.has(e4.ID) })
	if got, want := ids(r.snapshot()), []string{e1.ID, e4.ID}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if m.reconnects.Load() == 0 {
		t.Error("no recovery counted")
	}
	// The ids outlive the restart: the stream is the same.
	if got, err := replayIDs(t, b, []string{"down.a"}, e1.ID); err != nil || !slices.Equal(got, []string{e4.ID}) {
		t.Fatalf("replay after %s: %v, %v; want [%s]", e1.ID, got, err, e4.ID)
	}
}

// TestPartition cuts one hub's connection while another publishes more
// events on a channel than its history keeps. When the connection comes
// back, that channel's subscribers get a reset then the events still
// kept; another channel, which lost nothing, gets its events without one.
func TestPartition(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	opts := natsbroker.Options{Stream: "PART", HistorySize: 3}
	a := newBroker(t, srv.URL(), opts)
	p := startProxy(t, srv.Addr())
	b := newBroker(t, p.URL(), opts, nats.IgnoreDiscoveredServers())
	busy, quiet := subscribe(t, b, "part.busy"), subscribe(t, b, "part.quiet")
	q0 := mustPublish(t, a, "part.quiet", 0)
	c0 := mustPublish(t, a, "part.busy", 0)
	waitFor(t, "the first events", func() bool { return busy.has(c0.ID) && quiet.has(q0.ID) })

	p.cut(true)
	waitFor(t, "the cut hub to notice", func() bool { return b.Check(t.Context()) != nil })
	var cs []*ssehub.Event
	for i := 1; i <= 8; i++ {
		cs = append(cs, mustPublish(t, a, "part.busy", i))
	}
	q1 := mustPublish(t, a, "part.quiet", 1)
	p.cut(false)
	waitFor(t, "the events after the cut", func() bool { return busy.has(cs[7].ID) && quiet.has(q1.ID) })

	// The stream keeps HistorySize+1 events per channel: the last four.
	kept := cs[4:]
	reset := "reset@" + strconv.FormatUint(kept[0].Seq-1, 10)
	want := append([]string{c0.ID, reset}, ids(kept)...)
	if got := ids(resets(t, b, busy.snapshot())); !slices.Equal(got, want) {
		t.Fatalf("busy channel got %v, want %v", got, want)
	}
	if got, want := ids(quiet.snapshot()), []string{q0.ID, q1.ID}; !slices.Equal(got, want) {
		t.Fatalf("quiet channel got %v, want %v", got, want)
	}
	if got, err := replayIDs(t, b, []string{"part.busy"}, kept[0].ID); err != nil || !slices.Equal(got, ids(kept[1:])) {
		t.Fatalf("replay after %s: %v, %v; want %v", kept[0].ID, got, err, ids(kept[1:]))
	}
}

// TestHistoryLimits: a channel replays up to HistorySize events after an
// id; one more, and the id is too old. Expired events make older
// positions unknown, while the latest position stays good.
func TestHistoryLimits(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "HIST", HistorySize: 3})
	var es []*ssehub.Event
	for i := range 4 {
		es = append(es, mustPublish(t, b, "hist.x", i))
	}
	own := ssehub.Message{Channel: "hist.y", Data: []byte(`1`), ID: "own-1"}
	if _, err := b.Publish(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	if got, err := replayIDs(t, b, []string{"hist.x"}, es[0].ID); err != nil || !slices.Equal(got, ids(es[1:])) {
		t.Fatalf("replay of HistorySize events: %v, %v; want %v", got, err, ids(es[1:]))
	}
	es = append(es, mustPublish(t, b, "hist.x", 4))
	if _, err := replayIDs(t, b, []string{"hist.x"}, es[0].ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay of HistorySize+1 events: %v, want ErrUnknownID", err)
	}
	if got, err := replayIDs(t, b, []string{"hist.x", "hist.y"}, es[1].ID); err != nil || len(got) != 4 {
		t.Fatalf("replay of two channels after %s: %v, %v; want 4 events", es[1].ID, got, err)
	}
	// The publisher's id, and then its events pushed out.
	if got, err := replayIDs(t, b, []string{"hist.y"}, "own-1"); err != nil || len(got) != 0 {
		t.Fatalf("replay after the publisher's id: %v, %v; want nothing", got, err)
	}
	for i := range 4 {
		mustPublish(t, b, "hist.y", i)
	}
	if _, err := replayIDs(t, b, []string{"hist.y"}, "own-1"); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay after a publisher's id pushed out: %v, want ErrUnknownID", err)
	}

	aged := newBroker(t, srv.URL(), natsbroker.Options{Stream: "AGED", HistoryAge: time.Second})
	before, err := aged.Head(t.Context(), []string{"aged.x"})
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, aged, "aged.x", 0) // the stream's first event
	e := mustPublish(t, aged, "aged.x", 1)
	admin, err := jetstream.New(connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the events to expire", func() bool {
		s, err := admin.Stream(t.Context(), "AGED")
		return err == nil && s.CachedInfo().State.Msgs == 0
	})
	if _, err := replayIDs(t, aged, []string{"aged.x"}, before.ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay from before expired events: %v, want ErrUnknownID", err)
	}
	if got, err := replayIDs(t, aged, []string{"aged.x"}, e.ID); err != nil || len(got) != 0 {
		t.Fatalf("replay from the last event, expired: %v, %v; want nothing", got, err)
	}
}

// TestOtherPublishers: any NATS client may publish events as a JetStream
// message, data in the body and the other fields in headers; messages that
// would break the stream are skipped, live and in replays.
func TestOtherPublishers(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "OTHER"})
	r := subscribe(t, b, "news.eu")
	js, err := jetstream.New(connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	send := func(data string, h nats.Header) *jetstream.PubAck {
		t.Helper()
		ack, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "other.news~eu", Data: []byte(data), Header: h})
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	send(`{"a": 1}`, nats.Header{natsbroker.HeaderType: {"note"}, natsbroker.HeaderID: {"n-1"}, natsbroker.HeaderRetry: {"500"}})
	send(`not json`, nil)
	plain := send(`"hi"`, nil)
	send(`1`, nats.Header{natsbroker.HeaderType: {"ssehub.reset"}})
	send(`2`, nats.Header{natsbroker.HeaderRetry: {"soon"}})
	last := send(`[3]`, nil)
	mustPublish(t, b, "news.eu", 4)
	lastID := natsbroker.EventID(t.Context(), b, last.Sequence)
	waitFor(t, "the last message", func() bool { return r.has(lastID) })
	got := r.snapshot()
	want := []string{
		"id: n-1\nevent: note\nretry: 500\ndata: {\"a\":1}\n\n",
		"id: " + natsbroker.EventID(t.Context(), b, plain.Sequence) + "\ndata: \"hi\"\n\n",
		"id: " + lastID + "\ndata: [3]\n\n",
	}
	if len(got) < len(want) {
		t.Fatalf("delivered %v", ids(got))
	}
	for i, w := range want {
		if string(got[i].Frame()) != w {
			t.Fatalf("event %d: %q, want %q", i, got[i].Frame(), w)
		}
	}
	var replayed []string
	if _, err := b.Replay(t.Context(), []string{"news.eu"}, natsbroker.EventID(t.Context(), b, plain.Sequence-2), func(e *ssehub.Event) error {
		replayed = append(replayed, string(e.Frame()))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(replayed) != 3 || replayed[0] != want[1] || replayed[1] != want[2] {
		t.Fatalf("replayed %q, want %q and the hub's own", replayed, want[1:])
	}
}

// TestStreamRecreated deletes the stream under a running broker: the next
// publish creates it again, subscribers get a reset then the new stream's
// events, and ids of the old stream are unknown.
func TestStreamRecreated(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "AGAIN"})
	r := subscribe(t, b, "again")
	e1 := mustPublish(t, b, "again", 1)
	waitFor(t, "the first event", func() bool { return r.has(e1.ID) })
	js, err := jetstream.New(connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(t.Context(), "AGAIN"); err != nil {
		t.Fatal(err)
	}
	e2 := mustPublish(t, b, "again", 2)
	if _, ok := natsbroker.SeqOf(t.Context(), b, e1.ID); ok {
		t.Fatalf("id %s of the deleted stream stands for a position in the new one", e1.ID)
	}
	waitFor(t, "the new stream's event", func() bool { return r.has(e2.ID) })
	if got, want := ids(resets(t, b, r.snapshot())), []string{e1.ID, "reset@0", e2.ID}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if _, err := replayIDs(t, b, []string{"again"}, e1.ID); !errors.Is(err, ssehub.ErrUnknownID) {
		t.Fatalf("replay after an id of the deleted stream: %v, want ErrUnknownID", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if got, err := replayIDs(t, b, []string{"again"}, e2.ID); err != nil || len(got) != 0 || ctx.Err() != nil {
		t.Fatalf("replay after the new stream's id: %v, %v", got, err)
	}
}

// TestOutcomeUnknown freezes the server while a publish waits for its
// answer: the publish fails with ErrOutcomeUnknown. Sent again with its
// idempotency key once the server is back, it returns the event the
// frozen server stored after all, and subscribers get it once.
func TestOutcomeUnknown(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "FROZEN", PublishTimeout: 500 * time.Millisecond})
	r := subscribe(t, b, "frozen")
	first := mustPublish(t, b, "frozen", 0)
	waitFor(t, "the first event", func() bool { return r.has(first.ID) })

	m := ssehub.Message{Channel: "frozen", Data: []byte(`{"n":1}`), IdempotencyKey: "order-17"}
	srv.Freeze()
	_, err := b.Publish(t.Context(), m)
	srv.Thaw()
	if !errors.Is(err, ssehub.ErrOutcomeUnknown) {
		t.Fatalf("publish to a frozen server: %v, want ErrOutcomeUnknown", err)
	}
	var e *ssehub.Event
	waitFor(t, "the publish sent again to go through", func() bool {
		e, err = b.Publish(t.Context(), m)
		return err == nil
	})
	last := mustPublish(t, b, "frozen", 2)
	waitFor(t, "the last event", func() bool { return r.has(last.ID) })
	if got, want := ids(r.snapshot()), []string{first.ID, e.ID, last.ID}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v: the message once", got, want)
	}
	if got := r.snapshot()[1]; string(got.Data) != `{"n":1}` {
		t.Fatalf("the message came as %q", got.Data)
	}
}
