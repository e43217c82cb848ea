package ssehub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/ssehub/ssehub"
)

// BenchmarkFanout publishes to one channel with n Go subscriptions
// draining it. One op is one publish delivered to all n subscribers, so
// allocs/op that do not grow with n mean the dispatch path allocates
// nothing per subscriber.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			// The publisher waits for every subscriber after each batch,
			// so a queue of two batches never overflows.
			const batch = 256
			hub, err := ssehub.New(ssehub.Config{})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			progress := make([]chan struct{}, n)
			for i := range n {
				sub, err := hub.Subscribe(ctx, []string{"bench"}, "")
				if err != nil {
					b.Fatal(err)
				}
				progress[i] = make(chan struct{}, 1)
				wg.Go(func() {
					defer sub.Close()
					for count := 1; ; count++ {
						if _, err := sub.Next(ctx); err != nil {
							return
						}
						if count%batch == 0 {
							progress[i] <- struct{}{}
						}
					}
				})
			}
			msg := ssehub.Message{Channel: "bench", Type: "tick", Data: json.RawMessage(`{"n":1,"s":"fan-out"}`)}

			b.ReportAllocs()
			published := 0
			for b.Loop() {
				if _, err := hub.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
				published++
				if published%batch == 0 {
					for _, p := range progress {
						<-p
					}
				}
			}
			b.ReportMetric(float64(published*n)/b.Elapsed().Seconds(), "deliveries/s")

			cancel()
			wg.Wait()
			if err := hub.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}
