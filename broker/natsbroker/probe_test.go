package natsbroker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/natstest"
)

// TestStuck: the probe calls a consumer stuck when, between two probes, it
// delivered nothing while the stream held events after the last one it
// delivered; not at its first probe, nor while it makes progress or has
// nothing to deliver.
func TestStuck(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := New(nc, Options{Stream: "PROBE"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	publish := func() uint64 {
		t.Helper()
		e, err := b.Publish(t.Context(), ssehub.Message{Channel: "p", Data: []byte(`1`)})
		if err != nil {
			t.Fatal(err)
		}
		return e.Seq
	}
	last := publish()
	start := time.Now()
	c := &consumer{created: start, probed: start}
	probe := func(seen uint64, want bool) {
		t.Helper()
		b.mu.Lock()
		b.seen = seen
		b.mu.Unlock()
		if got := b.stuck(c, c.probed.Add(time.Second)); got != want {
			t.Fatalf("stuck with %d delivered, stream at %d, last probe %d/%d: %v, want %v", seen, last, c.probeSeen, c.probeLast, got, want)
		}
	}
	probe(last-1, false) // the first probe only takes note
	probe(last-1, true)  // nothing delivered while the stream had one more
	probe(last, false)   // progress
	probe(last, false)   // nothing to deliver
	last = publish()
	probe(last-1, false) // behind, but the last probe saw nothing to do
	probe(last-1, true)
}
