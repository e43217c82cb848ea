package ssehub

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ssehub/ssehub/internal/bench"
)

// TestNothingLostUnderLoad sends every event to every subscriber of a
// busy channel and checks that each arrives once and in order, with the
// stream served by its handler goroutine and detached.
func TestNothingLostUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		detach bool
	}{{"handler", false}, {"detached", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hub, err := New(Config{Detach: tc.detach})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(hub)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				hub.Close(ctx)
				srv.Close()
			})
			stream, publish := bench.Targets(srv.URL)
			res, err := bench.Run(t.Context(), bench.Options{
				StreamURLs: []string{stream}, PublishURL: publish,
				Subscribers: 200, Channels: 1, Events: 200,
				Settle: time.Millisecond,
				Window: -1, // flat out
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Connected != 200 || res.Published != 200 {
				t.Fatalf("%d subscribers connected, %d events published; want 200 and 200 (%s)", res.Connected, res.Published, res.FirstError)
			}
			if res.Deliveries != 200*200 || res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Malformed != 0 || res.Disconnected != 0 {
				t.Fatalf("%d deliveries of %d: lost %d, duplicated %d, out of order %d, malformed %d, disconnected %d",
					res.Deliveries, 200*200, res.Lost, res.Duplicated, res.OutOfOrder, res.Malformed, res.Disconnected)
			}
		})
	}
}

// TestSlowAndStalledReaders runs, at a small size, the bursts of
// docs/benchmarks.md with streams that read slowly or not at all: slow
// readers get every event, in order, without being cut, and the streams
// beside stalled ones get every event in order.
func TestSlowAndStalledReaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		slow, stalled int
	}{{"slow", 5, 0}, {"stalled", 0, 5}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Stalled streams hold the hub's Close until they are cut.
			hub, err := New(Config{Detach: true, Heartbeat: -1, WriteTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(hub)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				hub.Close(ctx)
				srv.Close()
			})
			stream, publish := bench.Targets(srv.URL)
			const subs, events = 100, 200
			res, err := bench.Run(t.Context(), bench.Options{
				StreamURLs: []string{stream}, PublishURL: publish,
				Subscribers: subs, Channels: 1, Events: events, Size: 1024,
				Slow: tc.slow, SlowRate: 64 << 10, Stalled: tc.stalled,
				Settle: time.Millisecond, Window: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			readers := int64(subs - tc.stalled)
			if res.Connected != subs || res.Published != events {
				t.Fatalf("%d streams connected, %d events published; want %d and %d (%s)", res.Connected, res.Published, subs, events, res.FirstError)
			}
			if res.Deliveries != readers*events || res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Disconnected != 0 || res.Resets != 0 {
				t.Fatalf("%d deliveries of %d: lost %d, duplicated %d, out of order %d, cut %d, reset %d",
					res.Deliveries, readers*events, res.Lost, res.Duplicated, res.OutOfOrder, res.Disconnected, res.Resets)
			}
		})
	}
}
