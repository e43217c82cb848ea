package ssehub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// liveHeap returns the bytes of heap in use once the garbage is collected.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// bigData returns a JSON string of about n bytes.
func bigData(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n-2) + `"`) }

// TestHistoryBytesBound publishes large messages to many channels, four
// times what the history may hold: the heap that stays in use never grows
// past the budget and a fixed overhead. Once with the memory broker's
// history, once with the events a hub keeps for a broker that lends it none
// (Config.BacklogBytes). docs/benchmarks.md has the same with 1 MiB
// messages and the RSS of ssehub serve. Not parallel: it reads the heap of
// the process.
func TestHistoryBytesBound(t *testing.T) {
	const (
		budget   = 4 << 20
		overhead = 4 << 20 // one event held past the budget, and the test's own
		size     = 128 << 10
		channels = 32
		messages = 4 * budget / size
	)
	data := bigData(size)
	tests := []struct {
		name string
		cfg  ssehub.Config
	}{
		{"history", ssehub.Config{Broker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistoryBytes: budget})}},
		{"backlog", ssehub.Config{Broker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: -1}), BacklogBytes: budget}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub, err := ssehub.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer hubtest.Close(t, hub)
			defer tt.cfg.Broker.Close(context.Background())
			names := make([]string, channels)
			for i := range names {
				names[i] = fmt.Sprint("big-", i)
			}
			// Subscribed to everything, never read: the hub keeps what a
			// reader has not read as long as the budget lets it.
			sub, err := hub.Subscribe(t.Context(), names, "")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			base := liveHeap()
			var highest int64
			for i := range messages {
				if _, err := hub.Publish(t.Context(), ssehub.Message{Channel: names[i%channels], Data: data}); err != nil {
					t.Fatal(err)
				}
				if i%8 == 7 {
					highest = max(highest, liveHeap()-base)
				}
			}
			t.Logf("%d MiB published, at most %.1f MiB kept", messages*size>>20, float64(highest)/(1<<20))
			if highest > budget+overhead {
				t.Fatalf("%.1f MiB of heap in use after publishing, over the budget of %d MiB and %d MiB of overhead",
					float64(highest)/(1<<20), budget>>20, overhead>>20)
			}
			// The reader that fell behind goes on with a reset.
			if e, err := sub.Next(t.Context()); err != nil || e.Type != ssehub.ResetType {
				t.Fatalf("Next = %v, %v; want a reset", e, err)
			}
		})
	}
}

// TestStalledStreamsHoldNoCopies opens streams whose clients never read,
// then publishes three 1 MiB events: their writes block, and what each has
// yet to send stays a reference into the shared events, so the heap grows
// by about the events, not by the streams times the events. Then the
// stalled streams are cut by the write timeout. Both stream paths. Not
// parallel: it reads the heap of the process.
func TestStalledStreamsHoldNoCopies(t *testing.T) {
	const (
		streams = 100
		limit   = 3<<20 + 24<<20 // the events, and well under a copy per stream
	)
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			logger, logs := hubtest.NewLogRecorder()
			hub, err := ssehub.New(ssehub.Config{Detach: detach, Heartbeat: -1, WriteTimeout: 2 * time.Second, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(hub)
			// Small send buffers: the kernel must not take in what the
			// clients do not read.
			ts.Listener = smallSendBuffers{ts.Listener}
			ts.Start()
			t.Cleanup(ts.Close)
			t.Cleanup(func() { hubtest.Close(t, hub) })
			mib := bigData(1 << 20)
			for range streams {
				c, err := net.Dial("tcp", ts.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
				fmt.Fprintf(c, "GET /sse?channel=big HTTP/1.1\r\nHost: x\r\n\r\n")
			}
			logs.Wait(t, "stream opened", streams)
			base := liveHeap()
			for range 3 {
				hubtest.Publish(t, hub, "big", string(mib))
			}
			grown := liveHeap() - base
			t.Logf("%d stalled streams, three 1 MiB events: %.1f MiB more heap", streams, float64(grown)/(1<<20))
			if grown > limit {
				t.Fatalf("heap grew by %.1f MiB, over %d MiB", float64(grown)/(1<<20), limit>>20)
			}
			for _, r := range logs.Wait(t, "stream closed", streams) {
				if r["reason"] != ssehub.ErrSlowSubscriber.Error() {
					t.Fatalf("a stalled stream closed for %q", r["reason"])
				}
			}
		})
	}
}

// smallSendBuffers gives every connection it accepts a send buffer of 4
// KiB.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}
