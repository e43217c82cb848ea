package promhub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/promhub"
)

// countingWriter is a streaming ResponseWriter that counts the event frames
// written to it and signals when it has seen want of them.
type countingWriter struct {
	hdr     http.Header
	events  atomic.Int64
	want    atomic.Int64
	reached chan struct{}
	// subscribed is closed when the hub writes the header, once the
	// stream's subscription is in place.
	subscribed chan struct{}
}

func (w *countingWriter) Header() http.Header { return w.hdr }
func (w *countingWriter) WriteHeader(int)     { close(w.subscribed) }
func (w *countingWriter) Flush()              {}

func (w *countingWriter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("id: ")) {
		if w.events.Add(1) == w.want.Load() {
			w.reached <- struct{}{}
		}
	}
	return len(p), nil
}

// BenchmarkStreams measures the delivery of events to 100 HTTP streams,
// without metrics and with promhub's; ns/op is per published event.
func BenchmarkStreams(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		name := "metrics=off"
		if withMetrics {
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := ssehub.Config{Heartbeat: -1}
			if withMetrics {
				m, err := promhub.New(prometheus.NewRegistry())
				if err != nil {
					b.Fatal(err)
				}
				cfg.Metrics = m
			}
			hub, err := ssehub.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			const streams = 100
			writers := make([]*countingWriter, streams)
			for i := range writers {
				w := &countingWriter{hdr: http.Header{}, reached: make(chan struct{}, 1), subscribed: make(chan struct{})}
				writers[i] = w
				go hub.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/sse?channel=b", nil))
				<-w.subscribed
			}
			data := json.RawMessage(`{"n":12345}`)
			b.ReportAllocs()
			b.ResetTimer()
			const batch = 1024
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				for _, w := range writers {
					w.want.Store(w.events.Load() + int64(n))
				}
				for range n {
					if _, err := hub.Publish(ctx, ssehub.Message{Channel: "b", Data: data}); err != nil {
						b.Fatal(err)
					}
				}
				for _, w := range writers {
					<-w.reached
				}
				done += n
			}
			b.StopTimer()
			cancel()
			hub.Close(context.Background())
		})
	}
}
