package sseclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// scriptServer answers each connection with the next step of a script and
// records the Last-Event-ID each request carried.
type scriptServer struct {
	mu    sync.Mutex
	steps []func(w http.ResponseWriter)
	ids   []string
}

func (s *scriptServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ids = append(s.ids, r.Header.Get("Last-Event-ID"))
	n := len(s.ids) - 1
	s.mu.Unlock()
	if n >= len(s.steps) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.steps[n](w)
}

func stream(body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		fmt.Fprint(w, body)
	}
}

func status(code int, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

func collect(t *testing.T, c *Client) ([]Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []Event
	err := c.Run(ctx, func(e Event) error {
		got = append(got, e)
		return nil
	})
	return got, err
}

func TestReconnectsWithLastEventID(t *testing.T) {
	s := &scriptServer{steps: []func(http.ResponseWriter){
		stream("retry: 1\n\nid: 1\ndata: a\n\nid: 2\nevent: cool\ndata: b\n\n"),
		status(http.StatusServiceUnavailable, `{"error":"closing"}`),
		stream("data: no id\n\nid: 3\ndata: c\n\ndata: cut off"),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := &Client{URL: srv.URL, LastEventID: "0", MaxRetry: time.Millisecond}
	got, err := collect(t, c)
	if err != nil {
		t.Fatalf("Run: %v, want nil after 204", err)
	}
	want := []Event{{"1", "message", "a"}, {"2", "cool", "b"}, {"2", "message", "no id"}, {"3", "message", "c"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	wantIDs := []string{"0", "2", "2", "3"}
	if fmt.Sprint(s.ids) != fmt.Sprint(wantIDs) {
		t.Fatalf("Last-Event-ID per request %q, want %q", s.ids, wantIDs)
	}
	if c.LastEventID != "3" {
		t.Fatalf("LastEventID %q, want 3", c.LastEventID)
	}
}

func TestPermanentRefusal(t *testing.T) {
	for _, step := range []func(http.ResponseWriter){
		status(http.StatusForbidden, `{"error":"not yours"}`),
		status(http.StatusOK, `{}`), // not an event stream
	} {
		s := &scriptServer{steps: []func(http.ResponseWriter){step}}
		srv := httptest.NewServer(s)
		_, err := collect(t, &Client{URL: srv.URL, Retry: time.Millisecond})
		srv.Close()
		var se *StatusError
		if !errors.As(err, &se) {
			t.Fatalf("Run: %v, want a *StatusError", err)
		}
		if len(s.ids) != 1 {
			t.Fatalf("%d requests after a permanent refusal, want 1", len(s.ids))
		}
	}
}

func TestCallbackErrorStops(t *testing.T) {
	s := &scriptServer{steps: []func(http.ResponseWriter){stream("data: a\n\ndata: b\n\n")}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	stop := errors.New("stop")
	n := 0
	err := (&Client{URL: srv.URL}).Run(t.Context(), func(Event) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Run: %v after %d events, want the callback's error after 1", err, n)
	}
}

func TestContextEndsRun(t *testing.T) {
	ready := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(ready)
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- (&Client{URL: srv.URL}).Run(ctx, func(Event) error { return nil }) }()
	<-ready
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
}
