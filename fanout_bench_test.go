package ssehub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The fan-out benchmarks send events to many subscribers in batches of
// fanoutBatch, waiting after each batch until every subscriber has it, so
// no queue overflows however fast the machine. Besides the usual figures
// per op (one event to every subscriber), they report per delivery (one
// event to one subscriber): ns/delivery and allocs/delivery, the heap
// allocations of everything in the process (hub, server and readers)
// divided by the deliveries.
const fanoutBatch = 64

var fanoutSizes = []int{1, 100, 1000}

// fanoutGate lets the benchmark wait until every subscriber has counted
// the events sent so far.
type fanoutGate struct {
	target atomic.Int64
	wg     sync.WaitGroup
}

// send runs fn for each of n events in batches, waiting for subs
// subscribers after each batch.
func (g *fanoutGate) send(n, subs int, fn func()) {
	for sent := 0; sent < n; {
		k := min(fanoutBatch, n-sent)
		g.wg.Add(subs)
		g.target.Store(int64(sent + k))
		for range k {
			fn()
		}
		sent += k
		g.wg.Wait()
	}
}

// reached is called by a subscriber that has counted n events in all.
func (g *fanoutGate) reached(n int64, last *int64) {
	if t := g.target.Load(); n >= t && *last < t {
		*last = t
		g.wg.Done()
	}
}

func reportFanout(b *testing.B, subs int, before *runtime.MemStats, elapsed time.Duration) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	deliveries := float64(b.N) * float64(subs)
	b.ReportMetric(float64(elapsed.Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
}

// BenchmarkFanoutDispatch measures the hub's side of fan-out: one event
// appended to a channel's feed, its waiting subscribers notified, and the
// event read from the feed by every Go subscription's Next.
func BenchmarkFanoutDispatch(b *testing.B) {
	for _, subs := range fanoutSizes {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			// Without history the hub keeps the channel's feed itself,
			// and receive appends to it as a broker's delivery does.
			h, err := New(Config{Broker: NewMemoryBroker(MemoryConfig{HistorySize: -1})})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close(context.Background())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				gate    fanoutGate
				readers sync.WaitGroup
			)
			startFanoutReaders(b, ctx, h, subs, &gate, &readers)
			h.mu.Lock()
			c := h.channels["fanout"]
			h.mu.Unlock()
			e := NewEvent("fanout", "1", "", []byte(`{"n":1}`), 0, 0, time.Now())

			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			gate.send(b.N, subs, func() { h.receive(c, e) })
			elapsed := time.Since(start)
			b.StopTimer()
			reportFanout(b, subs, &before, elapsed)
			cancel()
			readers.Wait()
		})
	}
}

// BenchmarkFanoutPublish is BenchmarkFanoutDispatch with each event
// published through Hub.Publish: validation, id and encoding happen once
// per event, so allocs/op stays flat as subscribers grow.
func BenchmarkFanoutPublish(b *testing.B) {
	for _, subs := range fanoutSizes {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			h, err := New(Config{Broker: NewMemoryBroker(MemoryConfig{HistorySize: -1})})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close(context.Background())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				gate    fanoutGate
				readers sync.WaitGroup
			)
			startFanoutReaders(b, ctx, h, subs, &gate, &readers)
			m := Message{Channel: "fanout", Data: json.RawMessage(`{"n":1}`)}

			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			gate.send(b.N, subs, func() {
				if _, err := h.Publish(ctx, m); err != nil {
					b.Fatal(err)
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			reportFanout(b, subs, &before, elapsed)
			cancel()
			readers.Wait()
		})
	}
}

// BenchmarkFanoutStream measures the whole way out: one event to every
// HTTP stream of a channel over loopback TCP, served by handler goroutines
// or detached, and read by in-process clients that count events.
func BenchmarkFanoutStream(b *testing.B) {
	for _, mode := range []string{"handler", "detached"} {
		for _, subs := range fanoutSizes[1:] {
			b.Run(fmt.Sprintf("%s/subs=%d", mode, subs), func(b *testing.B) {
				benchmarkFanoutStream(b, mode == "detached", subs)
			})
		}
	}
}

func benchmarkFanoutStream(b *testing.B, detach bool, subs int) {
	h, err := New(Config{Detach: detach, Heartbeat: -1, Broker: NewMemoryBroker(MemoryConfig{HistorySize: -1})})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close(context.Background())
	var (
		gate    fanoutGate
		readers sync.WaitGroup
		conns   []net.Conn
	)
	for range subs {
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "GET /sse?channel=fanout HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 16<<10)
		// Each event's data holds one '~', which neither the headers nor
		// the chunk framing have: counting it counts events.
		n, err := conn.Read(buf)
		if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
			b.Fatalf("stream: %v %q", err, buf[:n])
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			var count, last int64
			for {
				n, err := conn.Read(buf)
				count += int64(bytes.Count(buf[:n], []byte("~")))
				gate.reached(count, &last)
				if err != nil {
					return
				}
			}
		}()
	}
	h.mu.Lock()
	c := h.channels["fanout"]
	h.mu.Unlock()
	e := NewEvent("fanout", "1", "", []byte(`{"n":"~"}`), 0, 0, time.Now())

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	gate.send(b.N, subs, func() { h.receive(c, e) })
	elapsed := time.Since(start)
	b.StopTimer()
	reportFanout(b, subs, &before, elapsed)
	for _, conn := range conns {
		conn.Close()
	}
	readers.Wait()
}

// startFanoutReaders subscribes n Go subscriptions to the "fanout" channel,
// each reading in a goroutine of its own and reporting to gate.
func startFanoutReaders(b *testing.B, ctx context.Context, h *Hub, n int, gate *fanoutGate, readers *sync.WaitGroup) {
	b.Helper()
	for range n {
		s, err := h.Subscribe(ctx, []string{"fanout"}, "")
		if err != nil {
			b.Fatal(err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer s.Close()
			var n, last int64
			for {
				if _, err := s.Next(ctx); err != nil {
					return
				}
				n++
				gate.reached(n, &last)
			}
		}()
	}
}
