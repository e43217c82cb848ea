package natsbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/natsbroker"
	"github.com/ssehub/ssehub/internal/natstest"
)

// BenchmarkNewChannel measures what it costs a hub to start receiving a
// channel it did not hold, on a 3-node cluster: with the broker's one
// consumer per hub, and with a consumer per channel (create it, then
// delete it), the design the broker does not use. After a node loss, a
// hub pays the second figure once per channel it holds.
func BenchmarkNewChannel(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	b.Run("shared-consumer", func(b *testing.B) {
		br := newBroker(b, c.URL(), natsbroker.Options{Stream: "BENCH_SHARED"})
		ctx := context.Background()
		stop, err := br.Subscribe(ctx, "first", func(*ssehub.Event) {})
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
		b.ResetTimer()
		for i := range b.N {
			cancel, err := br.Subscribe(ctx, fmt.Sprint("ch", i), func(*ssehub.Event) {})
			if err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})
	b.Run("consumer-per-channel", func(b *testing.B) {
		br := newBroker(b, c.URL(), natsbroker.Options{Stream: "BENCH_PER"})
		if _, err := br.Head(context.Background(), nil); err != nil { // creates the stream
			b.Fatal(err)
		}
		nc := connect(b, c.URL())
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			inbox := nc.NewInbox()
			sub, err := nc.Subscribe(inbox, func(*nats.Msg) {})
			if err != nil {
				b.Fatal(err)
			}
			cons, err := js.CreatePushConsumer(ctx, "BENCH_PER", jetstream.ConsumerConfig{
				DeliverSubject: inbox,
				FilterSubject:  fmt.Sprint("bench_per.ch", i),
				DeliverPolicy:  jetstream.DeliverNewPolicy,
				AckPolicy:      jetstream.AckNonePolicy,
				FlowControl:    true,
				IdleHeartbeat:  time.Second,
				MemoryStorage:  true,
				Replicas:       1,
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := js.DeleteConsumer(ctx, "BENCH_PER", cons.CachedInfo().Name); err != nil {
				b.Fatal(err)
			}
			sub.Unsubscribe()
		}
	})
}

// BenchmarkPublish measures a publish acknowledged by a 3-node cluster,
// one at a time, and with 16 publishers at once.
func BenchmarkPublish(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	br := newBroker(b, c.URL(), natsbroker.Options{Stream: "BENCH_PUB"})
	m := ssehub.Message{Channel: "pub", Data: []byte(`{"n":1}`)}
	if _, err := br.Publish(context.Background(), m); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for range b.N {
			if _, err := br.Publish(context.Background(), m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel-16", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := br.Publish(context.Background(), m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkNewStream measures the broker's part of opening a stream with
// no Last-Event-ID on one channel: Head, then the replay after it that
// catches up with what the subscription may have missed.
func BenchmarkNewStream(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	br := newBroker(b, c.URL(), natsbroker.Options{Stream: "BENCH_STREAM"})
	ctx := context.Background()
	if _, err := publish(ctx, br, "news", 1); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		head, err := br.Head(ctx, []string{"news"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := br.Replay(ctx, []string{"news"}, head.ID, func(*ssehub.Event) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
