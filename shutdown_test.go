package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// blockingBroker returns a fake broker whose Publish waits until release is
// closed, after telling entered that a publish is in flight.
func blockingBroker() (b *hubtest.Broker, entered, release chan struct{}) {
	b = &hubtest.Broker{Mem: ssehub.NewMemoryBroker(ssehub.MemoryConfig{})}
	entered, release = make(chan struct{}, 1), make(chan struct{})
	b.PublishFunc = func(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
		entered <- struct{}{}
		<-release
		return b.Mem.Publish(ctx, m)
	}
	return b, entered, release
}

func healthStatus(hub *ssehub.Hub) int {
	rec := httptest.NewRecorder()
	hub.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return rec.Code
}

// TestCloseWaitsForPublishes closes a hub while a publish is in flight: the
// hub refuses new work and reports that it is closing at once, but lets the
// publish complete and its event reach subscribers before ending them.
func TestCloseWaitsForPublishes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fake, entered, release := blockingBroker()
		hub, err := ssehub.New(ssehub.Config{Broker: fake})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := hub.Subscribe(ctx, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()

		type result struct {
			id  string
			err error
		}
		published := make(chan result, 1)
		go func() {
			id, err := hub.Publish(ctx, ssehub.Message{Data: json.RawMessage(`"in flight"`)})
			published <- result{id, err}
		}()
		<-entered
		closed := make(chan error, 1)
		go func() { closed <- hub.Close(ctx) }()
		synctest.Wait()

		select {
		case err := <-closed:
			t.Fatalf("Close returned %v while a publish was in flight", err)
		default:
		}
		if _, err := hub.Publish(ctx, ssehub.Message{Data: json.RawMessage(`1`)}); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Publish while closing = %v, want ErrClosed", err)
		}
		if _, err := hub.Subscribe(ctx, nil, ""); !errors.Is(err, ssehub.ErrClosed) {
			t.Errorf("Subscribe while closing = %v, want ErrClosed", err)
		}
		if code := healthStatus(hub); code != http.StatusServiceUnavailable {
			t.Errorf("health while closing = %d, want 503", code)
		}

		close(release)
		r := <-published
		if r.err != nil {
			t.Fatalf("the publish in flight failed: %v", r.err)
		}
		e, err := sub.Next(ctx)
		if err != nil || e.ID != r.id {
			t.Fatalf("Next = %v, %v; want the event published in flight (%s)", e, err, r.id)
		}
		if _, err := sub.Next(ctx); !errors.Is(err, ssehub.ErrClosed) {
			t.Fatalf("Next after the hub closed = %v, want ErrClosed", err)
		}
		sub.Close()
		if err := <-closed; err != nil {
			t.Fatalf("Close = %v", err)
		}
		if err := hub.Close(ctx); !errors.Is(err, ssehub.ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
		if code := healthStatus(hub); code != http.StatusServiceUnavailable {
			t.Errorf("health after Close = %d, want 503", code)
		}
	})
}

// TestCloseDeadline gives up waiting for a publish that does not finish,
// but still ends the subscriptions.
func TestCloseDeadline(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		fake, entered, release := blockingBroker()
		defer close(release)
		hub, err := ssehub.New(ssehub.Config{Broker: fake})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := hub.Subscribe(context.Background(), nil, "")
		if err != nil {
			t.Fatal(err)
		}
		go hub.Publish(context.Background(), ssehub.Message{Data: json.RawMessage(`1`)})
		<-entered

		ended := make(chan error, 1)
		go func() {
			_, err := sub.Next(context.Background())
			sub.Close()
			ended <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hub.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
		}
		if err := <-ended; !errors.Is(err, ssehub.ErrClosed) {
			t.Fatalf("Next = %v, want ErrClosed", err)
		}
	})
}

// TestCloseEndsStreams closes a hub with open streams: each one gets what
// was published before and then ends. Later streams get only a retry
// delay; publish and health answer 503.
func TestCloseEndsStreams(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	var streams []*hubtest.Stream
	for _, q := range []string{"", "?channel=a", "?channel=a&channel=b"} {
		streams = append(streams, hubtest.Open(t, ts.Client(), ts.URL+"/sse"+q, nil))
	}
	last := hubtest.Publish(t, hub, "a", `"last"`)
	if err := hub.Close(t.Context()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	for i, s := range streams {
		if i > 0 {
			if e := s.Next(t); e.LastEventID != last {
				t.Fatalf("stream %d: got %+v, want the event published before Close", i, e)
			}
		}
		if e, err := s.Dec.Next(); err != io.EOF {
			t.Fatalf("stream %d: Next = %+v, %v; want io.EOF", i, e, err)
		}
	}
	// A stream asked for now is answered with a retry delay and ends at
	// once: an error status would stop an EventSource for good.
	late := hubtest.Open(t, ts.Client(), ts.URL+"/sse", nil)
	if e, err := late.Dec.Next(); err != io.EOF {
		t.Fatalf("stream opened after Close: Next = %+v, %v; want io.EOF", e, err)
	}
	if late.Dec.Retry() <= 0 {
		t.Fatal("stream opened after Close set no reconnection delay")
	}
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/publish", `{"data":1}`},
		{"GET", "/healthz", ""},
	} {
		resp, body := hubtest.DoJSON(t, ts.Client(), r.method, ts.URL+r.path, nil, r.body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s after Close = %d %v, want 503", r.method, r.path, resp.StatusCode, body)
		}
	}
}

// TestServerShutdown registers Hub.Close with an http.Server: Shutdown
// then returns with streams open, and their clients see the end.
func TestServerShutdown(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hub}
	hubClosed := make(chan error, 1)
	srv.RegisterOnShutdown(func() { hubClosed <- hub.Close(context.Background()) })
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + ln.Addr().String()
	var streams []*hubtest.Stream
	for range 3 {
		streams = append(streams, hubtest.Open(t, client, base+"/sse", nil))
	}
	// A stream that has received an event is as idle as one that has not.
	hubtest.Publish(t, hub, "sse", "1")
	streams[0].Next(t)

	ctx, cancel := context.WithTimeout(t.Context(), hubtest.CleanupTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil: open streams kept the server up", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v, want http.ErrServerClosed", err)
	}
	if err := <-hubClosed; err != nil {
		t.Fatalf("Hub.Close = %v", err)
	}
	for i, s := range streams {
		for {
			_, err := s.Dec.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream %d: %v, want a clean end of stream", i, err)
			}
		}
	}
}
