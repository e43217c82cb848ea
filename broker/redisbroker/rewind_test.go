package redisbroker

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
)

// TestLostNotice: another hub's notice that a channel lost its events up
// to a seq gives the channel's subscribers a reset when they had not seen
// that seq before the connection was last restored, and nothing when they
// had.
func TestLostNotice(t *testing.T) {
	t.Parallel()
	client, b, next := subscribed(t, "n")
	publish := func(n string) *ssehub.Event {
		t.Helper()
		e, err := b.Publish(t.Context(), ssehub.Message{Channel: "n", Data: json.RawMessage(n)})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e1 := publish("1")
	if e := next(); e.ID != e1.ID {
		t.Fatalf("got %q, want %q", e.ID, e1.ID)
	}
	// The connection breaks and is restored, as in a failover.
	if err := client.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := client.PubSubNumSub(t.Context(), b.twin("n")).Result()
		if err == nil && n[b.twin("n")] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker did not subscribe again")
		}
		<-tick.C
	}

	notice := func(seq uint64) {
		t.Helper()
		if err := client.Publish(t.Context(), b.twin("n"), "L"+strconv.FormatUint(seq, 10)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	notice(e1.Seq) // seen: nothing to do
	e2 := publish("2")
	if e := next(); e.ID != e2.ID {
		t.Fatalf("after a notice of a seen event: %q %q, want %q", e.Type, e.ID, e2.ID)
	}
	lost := e2.Seq + 1000
	notice(lost)
	if e := next(); e.Type != ssehub.ResetType || e.ID != FormatSeq(lost) {
		t.Fatalf("after a notice of a lost event: %q %q, want a reset with id %s", e.Type, e.ID, FormatSeq(lost))
	}
	notice(lost) // told already
	e3 := publish("3")
	if e := next(); e.ID != e3.ID {
		t.Fatalf("after a second notice: %q %q, want %q", e.Type, e.ID, e3.ID)
	}
}
