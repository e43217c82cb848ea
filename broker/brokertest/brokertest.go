// Package brokertest checks that an ssehub.Broker behaves as the Hub
// expects, in the manner of testing/slogtest: a backend's own test calls
// Run with a function that makes a fresh broker.
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) ssehub.Broker {
//			return mybroker.New(...)
//		})
//	}
//
// The suite checks per-channel order, isolation between channels, that a
// cancelled subscription gets nothing more, that Subscribe returns only once
// the subscription is live, and that Close makes later calls fail with
// ssehub.ErrClosed, and that a message sent again with the same
// idempotency key is published once. When the broker is an
// ssehub.Replayer it also checks replay after an id, across several
// channels, after a publisher's own id, for an unknown id, for an ambiguous
// id (a reset, never a guess), and the meaning of the head it returns.
//
// For an ssehub.ChannelOrderer whose ChannelOrder reports true, Seq orders
// the events of each channel only: the suite then compares the order of
// events per channel, resumes streams over several channels from the
// position ids of ssehub.FormatPositions (an event's id there is unknown),
// and lets an idempotency key be used again on another channel, since such
// a broker keeps each channel's keys apart.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
)

// waitTimeout bounds every wait for a delivery. It only turns a hang into
// a failure; nothing in the suite depends on timing.
const waitTimeout = 15 * time.Second

// Run runs the suite as subtests of t. It calls newBroker once per subtest
// for a broker of its own, closes that broker when the subtest ends, and
// tolerates brokers that share state (one Redis for all): every subtest
// uses channel names of its own.
func Run(t *testing.T, newBroker func(t *testing.T) ssehub.Broker) {
	tests := []struct {
		name     string
		replayer bool
		f        func(*testing.T, ssehub.Broker)
	}{
		{"Publish", false, testPublish},
		{"Order", false, testOrder},
		{"Isolation", false, testIsolation},
		{"Unsubscribe", false, testUnsubscribe},
		{"ResubscribeAfterCancel", false, testResubscribe},
		{"TwoSubscriptionsOneCancelled", false, testTwoSubscriptions},
		{"SubscribeIsLive", false, testSubscribeIsLive},
		{"Close", false, testClose},
		{"ReplayAfterID", true, testReplayAfterID},
		{"ReplayChannels", true, testReplayChannels},
		{"ReplayPublisherID", true, testReplayPublisherID},
		{"ReplayUnknownID", true, testReplayUnknownID},
		{"ReplayHead", true, testReplayHead},
		{"ReplayReusedID", true, testReplayReusedID},
		{"ReplayReusedIDAcrossChannels", true, testReplayReusedIDAcrossChannels},
		{"ReplayIDLikeAssigned", true, testReplayIDLikeAssigned},
		{"Head", true, testHead},
		{"IdempotencyKey", false, testIdempotencyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				if err := b.Close(ctx); err != nil && !errors.Is(err, ssehub.ErrClosed) {
					t.Errorf("Close: %v", err)
				}
			})
			if tt.replayer {
				if _, ok := b.(ssehub.Replayer); !ok {
					t.Skip("the broker is not an ssehub.Replayer")
				}
			}
			tt.f(t, b)
		})
	}
}

// channelName returns a channel name no other subtest or run uses.
func channelName(t *testing.T, suffix string) string {
	t.Helper()
	var r [6]byte
	rand.Read(r[:])
	return "brokertest." + hex.EncodeToString(r[:]) + "." + suffix
}

// recorder collects what a subscription delivers.
type recorder struct {
	t         *testing.T
	name      string
	mu        sync.Mutex
	events    []*ssehub.Event
	changed   chan struct{} // signalled after each delivery
	cancelled atomic.Bool   // set once cancel has returned
	overlap   atomic.Int32
}

func newRecorder(t *testing.T, name string) *recorder {
	return &recorder{t: t, name: name, changed: make(chan struct{}, 1)}
}

func (r *recorder) deliver(e *ssehub.Event) {
	if r.overlap.Add(1) != 1 {
		r.t.Errorf("%s: deliver called while another call for the channel was running", r.name)
	}
	defer r.overlap.Add(-1)
	if r.cancelled.Load() {
		r.t.Errorf("%s: deliver called after cancel returned, with event %q", r.name, e.ID)
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []*ssehub.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait returns the first n delivered events once there are n.
func (r *recorder) wait(n int) []*ssehub.Event {
	r.t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		if got := r.snapshot(); len(got) >= n {
			return got[:n]
		}
		select {
		case <-r.changed:
		case <-timer.C:
			r.t.Fatalf("%s: %d of %d events delivered after %v", r.name, len(r.snapshot()), n, waitTimeout)
		}
	}
}

func subscribe(t *testing.T, b ssehub.Broker, channel string, r *recorder) (cancel func()) {
	t.Helper()
	ctx, done := context.WithTimeout(t.Context(), waitTimeout)
	defer done()
	stop, err := b.Subscribe(ctx, channel, r.deliver)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	var once sync.Once
	cancel = func() {
		once.Do(func() {
			stop()
			r.cancelled.Store(true)
		})
	}
	t.Cleanup(cancel)
	return cancel
}

func publish(t *testing.T, b ssehub.Broker, m ssehub.Message) *ssehub.Event {
	t.Helper()
	if err := m.Normalize(); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	ctx, done := context.WithTimeout(t.Context(), waitTimeout)
	defer done()
	e, err := b.Publish(ctx, m)
	if err != nil {
		t.Fatalf("Publish on %q: %v", m.Channel, err)
	}
	return e
}

func msg(channel string, n int) ssehub.Message {
	return ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// sameEvent reports how got differs from want, or "".
func sameEvent(got, want *ssehub.Event) string {
	switch {
	case got.ID != want.ID:
		return fmt.Sprintf("id %q, want %q", got.ID, want.ID)
	case got.Channel != want.Channel:
		return fmt.Sprintf("channel %q, want %q", got.Channel, want.Channel)
	case got.Seq != want.Seq:
		return fmt.Sprintf("seq %d, want %d", got.Seq, want.Seq)
	case !bytes.Equal(got.Frame(), want.Frame()):
		return fmt.Sprintf("frame %q, want %q", got.Frame(), want.Frame())
	}
	return ""
}

func checkEvents(t *testing.T, what string, got, want []*ssehub.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events %v, want %d %v", what, len(got), ids(got), len(want), ids(want))
	}
	for i := range got {
		if d := sameEvent(got[i], want[i]); d != "" {
			t.Fatalf("%s: event %d: %s", what, i, d)
		}
	}
}

func ids(events []*ssehub.Event) []string {
	s := make([]string, len(events))
	for i, e := range events {
		s[i] = e.ID
	}
	return s
}

// testPublish: Publish returns the event as subscribers see it, assigns
// distinct ids when the message has none, keeps a publisher's own id, and
// orders events broker-wide by Seq.
func testPublish(t *testing.T, b ssehub.Broker) {
	a, c := channelName(t, "a"), channelName(t, "c")
	m := ssehub.Message{Channel: a, Data: json.RawMessage(`{"k": [1, 2]}`), Type: "update", Retry: 1500}
	e1 := publish(t, b, m)
	if e1.ID == "" || e1.Seq == 0 {
		t.Fatalf("Publish assigned id %q and seq %d; want both set", e1.ID, e1.Seq)
	}
	want := ssehub.NewEvent(a, e1.ID, "update", []byte(`{"k":[1,2]}`), 1500, e1.Seq, e1.Time)
	if d := sameEvent(e1, want); d != "" {
		t.Fatalf("published event: %s", d)
	}
	if e1.Channel != a || e1.Type != "update" || e1.Retry != 1500 || string(e1.Data) != `{"k":[1,2]}` {
		t.Fatalf("published event fields %+v", e1)
	}
	e2 := publish(t, b, msg(c, 2))
	e3 := publish(t, b, ssehub.Message{Channel: a, Data: json.RawMessage(`3`), ID: "own-id 3"})
	if e3.ID != "own-id 3" {
		t.Fatalf("publisher's id came back as %q", e3.ID)
	}
	if e1.ID == e2.ID {
		t.Fatalf("two publishes were assigned the same id %q", e1.ID)
	}
	if channelOrder(b) {
		if e1.Seq >= e3.Seq {
			t.Fatalf("seqs %d, %d of one channel do not grow in publish order", e1.Seq, e3.Seq)
		}
	} else if !(e1.Seq < e2.Seq && e2.Seq < e3.Seq) {
		t.Fatalf("seqs %d, %d, %d across channels do not grow in publish order", e1.Seq, e2.Seq, e3.Seq)
	}
}

// testOrder: one channel's events arrive once each, in publish order, as
// published.
func testOrder(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "order")
	r := newRecorder(t, "subscriber")
	subscribe(t, b, ch, r)
	const n = 200
	var want []*ssehub.Event
	for i := range n {
		want = append(want, publish(t, b, msg(ch, i)))
	}
	got := r.wait(n)
	checkEvents(t, "delivered", got, want)
	for i := 1; i < n; i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("seq %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
}

// testIsolation: a subscription gets its own channel's events and no other.
func testIsolation(t *testing.T, b ssehub.Broker) {
	names := []string{channelName(t, "a"), channelName(t, "b"), channelName(t, "c")}
	recs := []*recorder{newRecorder(t, "a"), newRecorder(t, "b")}
	for i, r := range recs {
		subscribe(t, b, names[i], r)
	}
	want := make([][]*ssehub.Event, len(names))
	for i := range 30 {
		k := i % len(names)
		want[k] = append(want[k], publish(t, b, msg(names[k], i)))
	}
	// A last event on each subscribed channel: once it is in, everything
	// published before it on that channel is too.
	for k := range recs {
		want[k] = append(want[k], publish(t, b, msg(names[k], 99)))
	}
	for k, r := range recs {
		r.wait(len(want[k]))
		checkEvents(t, "channel "+r.name, r.snapshot(), want[k])
	}
}

// testUnsubscribe: after cancel returns, deliver is not called again,
// while another subscription on the channel goes on receiving.
func testUnsubscribe(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "unsub")
	gone, stays := newRecorder(t, "cancelled"), newRecorder(t, "staying")
	cancel := subscribe(t, b, ch, gone)
	subscribe(t, b, ch, stays)
	first := publish(t, b, msg(ch, 0))
	gone.wait(1)
	cancel()
	var want []*ssehub.Event
	for i := 1; i <= 20; i++ {
		want = append(want, publish(t, b, msg(ch, i)))
	}
	got := stays.wait(21)
	checkEvents(t, "staying subscriber", got, append([]*ssehub.Event{first}, want...))
	if n := len(gone.snapshot()); n != 1 {
		t.Fatalf("cancelled subscriber has %d events, want 1", n)
	}
}

// testResubscribe: the last subscription of a channel is cancelled, then
// the channel is subscribed again; only the new subscription receives.
func testResubscribe(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "again")
	old := newRecorder(t, "old")
	cancel := subscribe(t, b, ch, old)
	publish(t, b, msg(ch, 0))
	old.wait(1)
	cancel()
	fresh := newRecorder(t, "new")
	subscribe(t, b, ch, fresh)
	e := publish(t, b, msg(ch, 1))
	checkEvents(t, "new subscriber", fresh.wait(1), []*ssehub.Event{e})
	if n := len(old.snapshot()); n != 1 {
		t.Fatalf("cancelled subscriber has %d events, want 1", n)
	}
}

// testTwoSubscriptions: two subscriptions on one channel made at the same
// time; cancelling one early leaves the other receiving everything.
func testTwoSubscriptions(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "two")
	recs := []*recorder{newRecorder(t, "first"), newRecorder(t, "second")}
	cancels := make([]func(), 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() {
			ctx, done := context.WithTimeout(t.Context(), waitTimeout)
			defer done()
			cancels[i], errs[i] = b.Subscribe(ctx, ch, r.deliver)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Subscribe %d: %v", i, err)
		}
	}
	defer cancels[1]()
	cancels[0]()
	recs[0].cancelled.Store(true)
	var want []*ssehub.Event
	for i := range 20 {
		want = append(want, publish(t, b, msg(ch, i)))
	}
	checkEvents(t, "remaining subscriber", recs[1].wait(20), want)
	if n := len(recs[0].snapshot()); n != 0 {
		t.Fatalf("subscription cancelled before any publish got %d events", n)
	}
}

// testSubscribeIsLive: an event published right after Subscribe returns is
// delivered.
func testSubscribeIsLive(t *testing.T, b ssehub.Broker) {
	for i := range 20 {
		ch := channelName(t, fmt.Sprint("live", i))
		r := newRecorder(t, ch)
		cancel := subscribe(t, b, ch, r)
		e := publish(t, b, msg(ch, i))
		checkEvents(t, "subscriber "+ch, r.wait(1), []*ssehub.Event{e})
		cancel()
	}
}

// testClose: after Close, every call returns ErrClosed.
func testClose(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "close")
	r := newRecorder(t, "subscriber")
	subscribe(t, b, ch, r)
	e := publish(t, b, msg(ch, 0))
	r.wait(1)
	ctx := t.Context()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	m := msg(ch, 1)
	if err := m.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, m); !errors.Is(err, ssehub.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, ch, func(*ssehub.Event) {}); !errors.Is(err, ssehub.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if rp, ok := b.(ssehub.Replayer); ok {
		if _, err := rp.Replay(ctx, []string{ch}, e.ID, func(*ssehub.Event) error { return nil }); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Replay after Close: %v, want ErrClosed", err)
		}
	}
	if err := b.Close(ctx); !errors.Is(err, ssehub.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func replay(t *testing.T, b ssehub.Broker, channels []string, lastID string) ([]*ssehub.Event, ssehub.Cursor, error) {
	t.Helper()
	ctx, done := context.WithTimeout(t.Context(), waitTimeout)
	defer done()
	var got []*ssehub.Event
	head, err := b.(ssehub.Replayer).Replay(ctx, channels, lastID, func(e *ssehub.Event) error {
		got = append(got, e)
		return nil
	})
	return got, head, err
}

func mustReplay(t *testing.T, b ssehub.Broker, channels []string, lastID string) ([]*ssehub.Event, ssehub.Cursor) {
	t.Helper()
	got, head, err := replay(t, b, channels, lastID)
	if err != nil {
		t.Fatalf("Replay(%q, %q): %v", channels, lastID, err)
	}
	return got, head
}

// testReplayAfterID: Replay yields the events after the given one, once
// each and in order, and a head at or after the last of them.
func testReplayAfterID(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "replay")
	var pub []*ssehub.Event
	for i := range 5 {
		pub = append(pub, publish(t, b, msg(ch, i)))
	}
	got, head := mustReplay(t, b, []string{ch}, pub[1].ID)
	checkEvents(t, "replay after the second event", got, pub[2:])
	if head.ID == "" || head.Seq < pub[4].Seq {
		t.Fatalf("head %+v; want an id and a seq of at least %d", head, pub[4].Seq)
	}
	got, _ = mustReplay(t, b, []string{ch}, pub[4].ID)
	checkEvents(t, "replay after the last event", got, nil)
}

// testReplayChannels: a replay over several channels merges them in
// publish order and leaves other channels out.
func testReplayChannels(t *testing.T, b ssehub.Broker) {
	a, bb, c := channelName(t, "a"), channelName(t, "b"), channelName(t, "c")
	order := []string{a, bb, a, c, bb, bb, c, a}
	var pub []*ssehub.Event
	for i, ch := range order {
		pub = append(pub, publish(t, b, msg(ch, i)))
	}
	var want []*ssehub.Event
	for _, e := range pub[1:] {
		if e.Channel != c {
			want = append(want, e)
		}
	}
	if channelOrder(b) {
		testReplayPositions(t, b, a, bb, c)
		return
	}
	got, _ := mustReplay(t, b, []string{a, bb}, pub[0].ID)
	checkEvents(t, "replay of two channels", got, want)
	// The last id the client saw may be from either channel.
	got, _ = mustReplay(t, b, []string{bb, a}, pub[4].ID)
	checkEvents(t, "replay after an event of the other channel", got, []*ssehub.Event{pub[5], pub[7]})
}

// channelOrder reports whether b orders events per channel only.
func channelOrder(b ssehub.Broker) bool {
	o, ok := b.(ssehub.ChannelOrderer)
	return ok && o.ChannelOrder()
}

// testReplayPositions: for a broker that orders events per channel, a
// stream over several channels resumes from a position in each: the
// head's, or one that FormatPositions makes of the last event seen on each
// channel. An event's own id, or positions for other channels, are
// unknown.
func testReplayPositions(t *testing.T, b ssehub.Broker, a, bb, c string) {
	rp := b.(ssehub.Replayer)
	head, err := rp.Head(t.Context(), []string{a, bb})
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if len(head.Channels) != 2 || head.ID != ssehub.FormatPositions(head.Channels) {
		t.Fatalf("Head of two channels = %+v; want a position per channel, as FormatPositions writes it", head)
	}
	order := []string{a, bb, a, c, bb, bb, c, a}
	var pub []*ssehub.Event
	for i, ch := range order {
		pub = append(pub, publish(t, b, msg(ch, i)))
	}
	var want []*ssehub.Event
	for _, e := range pub {
		if e.Channel != c {
			want = append(want, e)
		}
	}
	got, later := mustReplay(t, b, []string{a, bb}, head.ID)
	checkPerChannel(t, "replay of two channels from their head", got, want)
	if later.Channels[a] < pub[7].Seq || later.Channels[bb] < pub[5].Seq {
		t.Fatalf("head after the replay %+v; want at least %d on %s and %d on %s", later.Channels, pub[7].Seq, a, pub[5].Seq, bb)
	}
	// The client saw up to pub[2] on a and pub[4] on bb.
	pos := ssehub.FormatPositions(map[string]uint64{a: pub[2].Seq, bb: pub[4].Seq})
	got, _ = mustReplay(t, b, []string{bb, a}, pos)
	checkPerChannel(t, "replay after a position in each channel", got, []*ssehub.Event{pub[5], pub[7]})
	for _, id := range []string{pub[0].ID, ssehub.FormatPositions(map[string]uint64{a: pub[2].Seq, c: pub[3].Seq})} {
		got, _, err := replay(t, b, []string{a, bb}, id)
		if !errors.Is(err, ssehub.ErrUnknownID) || len(got) != 0 {
			t.Fatalf("Replay of two channels from %q: %v and %d events; want ErrUnknownID and none", id, err, len(got))
		}
	}
}

// checkPerChannel compares the events of each channel in got and want, in
// order; the order across channels does not count.
func checkPerChannel(t *testing.T, what string, got, want []*ssehub.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d events %v, want %d %v", what, len(got), ids(got), len(want), ids(want))
	}
	byChannel := func(es []*ssehub.Event) map[string][]*ssehub.Event {
		m := map[string][]*ssehub.Event{}
		for _, e := range es {
			m[e.Channel] = append(m[e.Channel], e)
		}
		return m
	}
	g := byChannel(got)
	for ch, w := range byChannel(want) {
		checkEvents(t, what+" on "+ch, g[ch], w)
	}
}

// testReplayPublisherID: an id the publisher chose is found on replay.
func testReplayPublisherID(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "own")
	own := "order-" + channelName(t, "x")
	publish(t, b, msg(ch, 0))
	publish(t, b, ssehub.Message{Channel: ch, Data: json.RawMessage(`1`), ID: own})
	want := []*ssehub.Event{publish(t, b, msg(ch, 2)), publish(t, b, msg(ch, 3))}
	got, _ := mustReplay(t, b, []string{ch}, own)
	checkEvents(t, "replay after the publisher's id", got, want)
}

// testReplayUnknownID: an unknown id yields ErrUnknownID, no events, and a
// head that a client can resume from.
func testReplayUnknownID(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "unknown")
	publish(t, b, msg(ch, 0))
	for _, id := range []string{"no-such-id", "1", "9999999999999999999"} {
		got, head, err := replay(t, b, []string{ch}, id)
		if !errors.Is(err, ssehub.ErrUnknownID) {
			t.Fatalf("Replay(%q): %v, want ErrUnknownID", id, err)
		}
		if len(got) != 0 {
			t.Fatalf("Replay(%q) yielded %d events with ErrUnknownID", id, len(got))
		}
		if head.ID == "" {
			t.Fatalf("Replay(%q) returned a head without id", id)
		}
	}
	_, head, _ := replay(t, b, []string{ch}, "no-such-id")
	e := publish(t, b, msg(ch, 1))
	got, _ := mustReplay(t, b, []string{ch}, head.ID)
	checkEvents(t, "replay from the head", got, []*ssehub.Event{e})
}

// testReplayHead: with a live subscription in place before Replay, the
// replay plus the live events after the head give every event once, in
// order, and every live event at or before the head was in the replay.
func testReplayHead(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "head")
	live := newRecorder(t, "live")
	subscribe(t, b, ch, live)
	first := publish(t, b, msg(ch, 0))
	const n = 100
	pub := make(chan []*ssehub.Event, 1)
	go func() {
		var es []*ssehub.Event
		for i := 1; i <= n; i++ {
			m := msg(ch, i)
			m.Normalize()
			e, err := b.Publish(t.Context(), m)
			if err != nil {
				t.Errorf("Publish: %v", err)
				break
			}
			es = append(es, e)
		}
		pub <- es
	}()
	// Replay while the publisher runs.
	live.wait(n / 4)
	replayed, head := mustReplay(t, b, []string{ch}, first.ID)
	want := <-pub
	got := live.wait(n + 1)[1:]
	var merged []*ssehub.Event
	covered := map[string]bool{}
	for _, e := range replayed {
		if e.Seq > head.Seq {
			t.Fatalf("replayed event %q has seq %d after the head %d", e.ID, e.Seq, head.Seq)
		}
		covered[e.ID] = true
		merged = append(merged, e)
	}
	for _, e := range got {
		if e.Seq > head.Seq {
			merged = append(merged, e)
		} else if !covered[e.ID] {
			t.Fatalf("live event %q (seq %d) is at or before the head %d but was not replayed", e.ID, e.Seq, head.Seq)
		}
	}
	checkEvents(t, "replay then live after the head", merged, want)
}

// testHead: Head is the position after which a replay of its channels
// yields exactly the events published on them since, and publishes on
// other channels do not make it stale.
func testHead(t *testing.T, b ssehub.Broker) {
	a, c, other := channelName(t, "a"), channelName(t, "c"), channelName(t, "other")
	rp := b.(ssehub.Replayer)
	publish(t, b, msg(a, 0))
	head, err := rp.Head(t.Context(), []string{a, c})
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if head.ID == "" || head.Seq == 0 {
		t.Fatalf("Head after a publish = %+v, want a position", head)
	}
	publish(t, b, msg(other, 9))
	want := []*ssehub.Event{publish(t, b, msg(a, 1)), publish(t, b, msg(c, 2)), publish(t, b, msg(a, 3))}
	publish(t, b, msg(other, 10))
	got, _ := mustReplay(t, b, []string{a, c}, head.ID)
	checkPerChannel(t, "replay after Head", got, want)
	later, err := rp.Head(t.Context(), []string{a, c})
	if err != nil || later.Seq < want[2].Seq {
		t.Fatalf("Head after three more publishes = %+v, %v; want at least the last one's Seq %d", later, err, want[2].Seq)
	}
	publish(t, b, msg(other, 11))
	got, _ = mustReplay(t, b, []string{a, c}, later.ID)
	checkEvents(t, "replay after the later Head", got, nil)
	e := publish(t, b, msg(c, 4))
	got, _ = mustReplay(t, b, []string{a, c}, later.ID)
	checkEvents(t, "replay after the later Head", got, []*ssehub.Event{e})
}

// expectReset checks that replaying channels after lastID yields no event
// and ErrUnknownID, with a head from which a replay works.
func expectReset(t *testing.T, b ssehub.Broker, channels []string, lastID, why string) {
	t.Helper()
	got, head, err := replay(t, b, channels, lastID)
	if !errors.Is(err, ssehub.ErrUnknownID) || len(got) != 0 {
		t.Fatalf("Replay(%q) %s: %v and %d events %v; want ErrUnknownID and none", lastID, why, err, len(got), ids(got))
	}
	e := publish(t, b, msg(channels[0], 100))
	got, _ = mustReplay(t, b, channels, head.ID)
	checkEvents(t, "replay from the head of a reset", got, []*ssehub.Event{e})
}

// testReplayReusedID: a publisher gives two events of a channel the same
// id. A client resuming from it may have seen either, so the broker must
// not pick one: resuming from the later one would skip the events between
// them. It answers ErrUnknownID (a reset).
func testReplayReusedID(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "reused")
	own := "12345"
	publish(t, b, ssehub.Message{Channel: ch, Data: json.RawMessage(`1`), ID: own})
	publish(t, b, msg(ch, 2))
	publish(t, b, msg(ch, 3))
	publish(t, b, ssehub.Message{Channel: ch, Data: json.RawMessage(`4`), ID: own})
	publish(t, b, msg(ch, 5))
	expectReset(t, b, []string{ch}, own, "named by two retained events")
}

// testReplayReusedIDAcrossChannels: one id on two channels is ambiguous
// for a subscription to both, and not for one to either.
func testReplayReusedIDAcrossChannels(t *testing.T, b ssehub.Broker) {
	a, c := channelName(t, "a"), channelName(t, "c")
	own := "shared-" + channelName(t, "id")
	publish(t, b, ssehub.Message{Channel: a, Data: json.RawMessage(`1`), ID: own})
	afterA := publish(t, b, msg(a, 2))
	publish(t, b, ssehub.Message{Channel: c, Data: json.RawMessage(`3`), ID: own})
	afterC := publish(t, b, msg(c, 4))
	got, _ := mustReplay(t, b, []string{a}, own)
	checkEvents(t, "replay of the first channel", got, []*ssehub.Event{afterA})
	got, _ = mustReplay(t, b, []string{c}, own)
	checkEvents(t, "replay of the second channel", got, []*ssehub.Event{afterC})
	expectReset(t, b, []string{a, c}, own, "named by an event of each channel")
}

// testReplayIDLikeAssigned: a publisher gives an event the id the broker
// assigned to an earlier one. A client holding that id may have seen
// either event.
func testReplayIDLikeAssigned(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "copied")
	first := publish(t, b, msg(ch, 1))
	publish(t, b, msg(ch, 2))
	publish(t, b, ssehub.Message{Channel: ch, Data: json.RawMessage(`3`), ID: first.ID})
	publish(t, b, msg(ch, 4))
	expectReset(t, b, []string{ch}, first.ID, "named by a publisher's event and by an assigned one")
}

// testIdempotencyKey: a message sent again with the same idempotency key
// returns the first event and is neither delivered nor kept again; the
// key with another message is refused.
func testIdempotencyKey(t *testing.T, b ssehub.Broker) {
	ch := channelName(t, "idem")
	r := newRecorder(t, "subscriber")
	subscribe(t, b, ch, r)
	key := "key-" + channelName(t, "k")
	m := ssehub.Message{Channel: ch, Data: json.RawMessage(`{"n":1}`), IdempotencyKey: key}
	first := publish(t, b, m)
	again := publish(t, b, m)
	if d := sameEvent(again, first); d != "" {
		t.Fatalf("publish again with the same key: %s", d)
	}
	withID := ssehub.Message{Channel: ch, Data: json.RawMessage(`2`), ID: "own", IdempotencyKey: key + "-2"}
	second := publish(t, b, withID)
	if d := sameEvent(publish(t, b, withID), second); d != "" {
		t.Fatalf("publish with an id again with the same key: %s", d)
	}
	reused := []ssehub.Message{
		{Channel: ch, Data: json.RawMessage(`{"n":2}`), IdempotencyKey: key},
		{Channel: ch, Data: json.RawMessage(`{"n":1}`), Type: "t", IdempotencyKey: key},
		{Channel: ch, Data: json.RawMessage(`2`), IdempotencyKey: key + "-2"},
	}
	if !channelOrder(b) {
		// A broker that orders per channel keeps each channel's keys.
		reused = append(reused, ssehub.Message{Channel: ch + "x", Data: json.RawMessage(`{"n":1}`), IdempotencyKey: key})
	}
	for _, other := range reused {
		ctx, done := context.WithTimeout(t.Context(), waitTimeout)
		_, err := b.Publish(ctx, other)
		done()
		if !errors.Is(err, ssehub.ErrIdempotencyKeyReused) {
			t.Fatalf("publish of %+v with a used key: %v, want ErrIdempotencyKeyReused", other, err)
		}
	}
	last := publish(t, b, msg(ch, 3))
	checkEvents(t, "delivered", r.wait(3), []*ssehub.Event{first, second, last})
	if _, ok := b.(ssehub.Replayer); ok {
		got, _ := mustReplay(t, b, []string{ch}, first.ID)
		checkEvents(t, "replayed", got, []*ssehub.Event{second, last})
	}
}
