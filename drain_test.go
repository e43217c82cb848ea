package ssehub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// drainStream is one HTTP event stream served straight by a hub's
// ServeHTTP into a recorder, so that it runs inside a synctest bubble.
type drainStream struct {
	rec   *httptest.ResponseRecorder
	ended time.Duration // since the drain began, set when the handler returns
	done  chan struct{}
}

// openDrainStreams starts n streams on channel and returns once each is
// subscribed and waiting. It must run inside a synctest bubble.
func openDrainStreams(t *testing.T, ctx context.Context, hub *ssehub.Hub, n int, channel string, start *time.Time) []*drainStream {
	t.Helper()
	streams := make([]*drainStream, n)
	for i := range streams {
		st := &drainStream{rec: httptest.NewRecorder(), done: make(chan struct{})}
		streams[i] = st
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/sse?channel="+channel, nil)
		go func() {
			defer close(st.done)
			hub.ServeHTTP(st.rec, req)
			st.ended = time.Since(*start)
		}()
	}
	synctest.Wait()
	for i, st := range streams {
		if st.rec.Code != http.StatusOK {
			t.Fatalf("stream %d: status %d: %s", i, st.rec.Code, st.rec.Body)
		}
	}
	return streams
}

// decodeAll parses a finished stream: its events and the retry it set last.
func decodeAll(t *testing.T, body []byte) (events []sse.Event, retry int) {
	t.Helper()
	d := sse.NewDecoder(bytes.NewReader(body))
	for {
		e, err := d.Next()
		if err == io.EOF {
			return events, d.Retry()
		}
		if err != nil {
			t.Fatalf("decode stream: %v", err)
		}
		events = append(events, e)
	}
}

func publishN(t *testing.T, ctx context.Context, hub *ssehub.Hub, channel string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := hub.Publish(ctx, ssehub.Message{Channel: channel, Data: json.RawMessage(strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func TestDrainWaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n      = 20
			over   = 10 * time.Second
			retry  = 3 * time.Second
			queued = 5
		)
		hub, err := ssehub.New(ssehub.Config{Heartbeat: -1, Retry: retry})
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		var start time.Time
		streams := openDrainStreams(t, ctx, hub, n, "c", &start)

		// Published before the drain: every stream passes them on first.
		publishN(t, ctx, hub, "c", 0, queued)
		start = time.Now()
		if err := hub.Drain(ctx, over); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if took := time.Since(start); took >= over {
			t.Errorf("Drain took %v, want under %v", took, over)
		}

		// Ten waves one second apart, two streams each.
		perWave := map[time.Duration]int{}
		for i, st := range streams {
			<-st.done
			if st.ended%time.Second != 0 || st.ended >= over {
				t.Errorf("stream %d ended %v after the drain began, not on a wave", i, st.ended)
			}
			perWave[st.ended]++

			events, gotRetry := decodeAll(t, st.rec.Body.Bytes())
			if len(events) != queued {
				t.Fatalf("stream %d got %d events, want the %d queued: %+v", i, len(events), queued, events)
			}
			for j, e := range events {
				if e.Data != strconv.Itoa(j) {
					t.Errorf("stream %d event %d = %q, want %d", i, j, e.Data, j)
				}
			}
			// The drain's retry comes after the events and carries jitter
			// within one wave interval.
			if min, max := int(retry/time.Millisecond), int((retry+time.Second)/time.Millisecond); gotRetry < min || gotRetry >= max {
				t.Errorf("stream %d: retry %d, want in [%d, %d)", i, gotRetry, min, max)
			}
			body := st.rec.Body.String()
			if last := bytes.LastIndex([]byte(body), []byte("retry: ")); last < bytes.LastIndex([]byte(body), []byte("data: ")) {
				t.Errorf("stream %d: drain retry not after the last event:\n%s", i, body)
			}
		}
		if len(perWave) != 10 {
			t.Errorf("streams ended in %d waves, want 10: %v", len(perWave), perWave)
		}
		for at, k := range perWave {
			if k != n/10 {
				t.Errorf("%d streams ended at %v, want %d", k, at, n/10)
			}
		}

		if err := hub.Drain(ctx, over); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("second Drain: %v, want ErrClosed", err)
		}
		if err := hub.Close(ctx); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Close after Drain: %v, want ErrClosed", err)
		}
	})
}

// TestDrainNoLoss drains a hub while another hub on the same broker keeps
// publishing: streams still open keep receiving, and each client, resuming
// on the other hub from the last id it saw, gets every event once, in order.
func TestDrainNoLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n      = 12
			over   = 2 * time.Second
			events = 40
			every  = 100 * time.Millisecond
		)
		broker := ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
		defer broker.Close(context.Background())
		draining, err := ssehub.New(ssehub.Config{Broker: broker, Heartbeat: -1})
		if err != nil {
			t.Fatal(err)
		}
		other, err := ssehub.New(ssehub.Config{Broker: broker, Heartbeat: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close(context.Background())
		ctx := t.Context()
		var start time.Time
		streams := openDrainStreams(t, ctx, draining, n, "c", &start)

		// Events go out every 100ms for 4s, across the whole drain.
		published := make(chan struct{})
		go func() {
			defer close(published)
			for i := range events {
				if _, err := other.Publish(ctx, ssehub.Message{Channel: "c", Data: json.RawMessage(strconv.Itoa(i))}); err != nil {
					t.Errorf("publish %d: %v", i, err)
				}
				time.Sleep(every)
			}
		}()
		time.Sleep(5 * every)
		start = time.Now()
		if err := draining.Drain(ctx, over); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		<-published

		waves := map[time.Duration]bool{}
		for i, st := range streams {
			<-st.done
			waves[st.ended] = true
			got, _ := decodeAll(t, st.rec.Body.Bytes())
			if len(got) == 0 {
				t.Fatalf("stream %d got no events", i)
			}
			// Resume on the other hub, as the browser would.
			sub, err := other.Subscribe(ctx, []string{"c"}, got[len(got)-1].LastEventID)
			if err != nil {
				t.Fatal(err)
			}
			for len(got) < events {
				e, err := sub.Next(ctx)
				if err != nil {
					t.Fatalf("stream %d resumed: %v", i, err)
				}
				got = append(got, sse.Event{Data: string(e.Data), Type: e.Type})
			}
			sub.Close()
			for j, e := range got {
				if e.Type != "message" && e.Type != "" || e.Data != strconv.Itoa(j) {
					t.Fatalf("stream %d, event %d: %+v, want data %d", i, j, e, j)
				}
			}
		}
		if len(waves) < 2 {
			t.Errorf("streams ended in %d waves, want them spread", len(waves))
		}
	})
}

func TestDrainDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, err := ssehub.New(ssehub.Config{Heartbeat: -1})
		if err != nil {
			t.Fatal(err)
		}
		var start time.Time
		streams := openDrainStreams(t, t.Context(), hub, 10, "c", &start)
		ctx, cancel := context.WithTimeout(t.Context(), 3500*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := hub.Drain(ctx, 10*time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain: %v, want DeadlineExceeded", err)
		}
		late := 0
		for _, st := range streams {
			<-st.done
			switch {
			case st.ended == 3500*time.Millisecond:
				late++
			case st.ended > 3500*time.Millisecond:
				t.Errorf("a stream ended %v after the drain began, after its deadline", st.ended)
			}
		}
		// Waves at 0, 1, 2 and 3s ended four streams; the rest at the deadline.
		if late != 6 {
			t.Errorf("%d streams ended at the deadline, want 6", late)
		}
	})
}

func TestDrainSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, err := ssehub.New(ssehub.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		sub, err := hub.Subscribe(ctx, []string{"c"}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		publishN(t, ctx, hub, "c", 0, 3)

		var wg sync.WaitGroup
		wg.Go(func() {
			if err := hub.Drain(ctx, time.Minute); err != nil {
				t.Errorf("Drain: %v", err)
			}
		})
		synctest.Wait()
		if err := hub.Ready(ctx); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Ready while draining: %v, want ErrClosed", err)
		}
		if _, err := hub.Publish(ctx, ssehub.Message{Data: json.RawMessage(`1`)}); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Publish while draining: %v, want ErrClosed", err)
		}
		if _, err := hub.Subscribe(ctx, nil, ""); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Subscribe while draining: %v, want ErrClosed", err)
		}
		for i := range 3 {
			e, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("Next %d: %v, want the queued event", i, err)
			}
			if string(e.Data) != strconv.Itoa(i) {
				t.Fatalf("Next %d = %s", i, e.Data)
			}
		}
		if _, err := sub.Next(ctx); !errors.Is(err, ssehub.ErrClosed) {
			t.Fatalf("Next after the queue: %v, want ErrClosed", err)
		}
		sub.Close()
		wg.Wait()
	})
}
