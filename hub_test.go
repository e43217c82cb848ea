package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// countingBroker returns a fake broker that counts its open subscriptions
// per channel.
func countingBroker() (*hubtest.Broker, func() map[string]int) {
	b := &hubtest.Broker{Mem: ssehub.NewMemoryBroker(ssehub.MemoryConfig{})}
	var (
		mu   sync.Mutex
		open = map[string]int{}
	)
	b.SubscribeFunc = func(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error) {
		cancel, err := b.Mem.Subscribe(ctx, channel, deliver)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		open[channel]++
		mu.Unlock()
		var once sync.Once
		return func() {
			once.Do(func() {
				cancel()
				mu.Lock()
				open[channel]--
				if open[channel] == 0 {
					delete(open, channel)
				}
				mu.Unlock()
			})
		}, nil
	}
	return b, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(open)
	}
}

// TestBrokerSubscriptionPerChannel checks that the hub holds one broker
// subscription per channel however many subscribers it has, and drops it
// with the last of them.
func TestBrokerSubscriptionPerChannel(t *testing.T) {
	t.Parallel()
	fake, open := countingBroker()
	hub, ts := hubtest.Serve(t, ssehub.Config{Broker: fake})
	ctx := t.Context()

	var subs []*ssehub.Subscription
	for range 5 {
		sub, err := hub.Subscribe(ctx, []string{"a", "b"}, "")
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	streams := []*hubtest.Stream{
		hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=a", nil),
		hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c", nil),
	}
	if got := open(); fmt.Sprint(got) != "map[a:1 b:1 c:1]" {
		t.Fatalf("broker subscriptions %v, want one each on a, b and c", got)
	}
	for _, sub := range subs {
		sub.Close()
	}
	// A stream ends when its client goes; the hub notices through the
	// request's context. Publishing until the stream's channel has no
	// broker subscription left shows that it was released.
	for _, s := range streams {
		s.Close()
	}
	for len(open()) > 0 {
		hubtest.Publish(t, hub, "a", "1")
	}
}

// TestSubscribeWhileOverflowing subscribes to many channels while the
// first of them carries more events than the queue holds, so subscriptions
// are cut off as slow while Subscribe is still adding channels. Every
// broker subscription must be gone once every subscription is closed.
func TestSubscribeWhileOverflowing(t *testing.T) {
	t.Parallel()
	fake, open := countingBroker()
	hub, err := ssehub.New(ssehub.Config{Broker: fake})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubtest.Close(t, hub) })
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg        sync.WaitGroup
		published atomic.Int64
	)
	running := make(chan struct{})
	wg.Go(func() {
		defer close(running)
		for ctx.Err() == nil {
			if _, err := hub.Publish(ctx, ssehub.Message{Channel: "hot", Data: json.RawMessage(`1`)}); err == nil {
				if published.Add(1) == 1 {
					running <- struct{}{}
				}
			}
		}
	})
	<-running
	channels := []string{"hot", "c1", "c2", "c3", "c4", "c5", "c6", "c7"}
	for range 500 {
		sub, err := hub.Subscribe(ctx, channels, "")
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
	}
	cancel()
	wg.Wait()
	if got := open(); len(got) > 0 {
		t.Fatalf("broker subscriptions left open after every subscription closed: %v", got)
	}
	if published.Load() == 0 {
		t.Fatal("nothing was published")
	}
}

// TestCloseDoesNotWaitForIdleGoSubscriptions: a Go subscription that is
// neither read nor closed does not hold Close up, and what it had queued
// stays readable through Next, which then reports ErrClosed.
func TestCloseDoesNotWaitForIdleGoSubscriptions(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := hub.Subscribe(t.Context(), []string{"idle"}, "")
	if err != nil {
		t.Fatal(err)
	}
	id := hubtest.Publish(t, hub, "idle", `"queued"`)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := hub.Close(ctx); err != nil {
		t.Fatalf("Close with an idle Go subscription: %v", err)
	}
	if e, err := sub.Next(t.Context()); err != nil || e.ID != id {
		t.Fatalf("Next after Close = %v, %v; want the queued event %s", e, err, id)
	}
	if _, err := sub.Next(t.Context()); !errors.Is(err, ssehub.ErrClosed) {
		t.Fatalf("Next after the queue = %v, want ErrClosed", err)
	}
	sub.Close()
}
