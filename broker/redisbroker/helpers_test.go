package redisbroker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/sse"
)

// waitTimeout bounds every wait in these tests. It turns a hang into a
// failure; no assertion depends on timing.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, waitTimeout)
		}
		<-tick.C
	}
}

// testHub is a Hub on a Redis broker, served over HTTP.
type testHub struct {
	hub    *ssehub.Hub
	broker *redisbroker.Broker
	srv    *httptest.Server
}

// newHub starts a hub with a broker and client of its own on srv. The
// hub, broker, client and server end with the test.
func newHub(t testing.TB, srv *redistest.Server, opts redisbroker.Options, cfg ssehub.Config) *testHub {
	t.Helper()
	return newHubOn(t, newBroker(t, srv, opts), cfg)
}

// newHubOn starts a hub on b. The hub and server end with the test.
func newHubOn(t testing.TB, b *redisbroker.Broker, cfg ssehub.Config) *testHub {
	t.Helper()
	cfg.Broker = b
	if cfg.Retry == 0 {
		cfg.Retry = -1
	}
	h, err := ssehub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close(context.Background())
		hs.Close()
	})
	waitReady(t, b)
	return &testHub{hub: h, broker: b, srv: hs}
}

// waitReady waits until the broker reports itself ready.
func waitReady(t testing.TB, b *redisbroker.Broker) {
	t.Helper()
	waitFor(t, "the broker to be ready", func() bool { return b.Check(t.Context()) == nil })
}

func (th *testHub) publish(t testing.TB, channel string, n int) string {
	t.Helper()
	id, err := th.hub.Publish(t.Context(), ssehub.Message{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))})
	if err != nil {
		t.Fatalf("Publish on %q: %v", channel, err)
	}
	return id
}

// stream is an open GET /sse request, decoded as a browser would.
type stream struct {
	t          testing.TB
	body       io.Closer
	events     chan sse.Event
	heartbeats atomic.Int64
}

// openStream opens the event stream of channels on the hub at base,
// resuming after lastID when it is not empty.
func openStream(t testing.TB, base string, channels []string, lastID string) *stream {
	t.Helper()
	resp := get(t, base, channels, lastID)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET /sse: %s %s", resp.Status, b)
	}
	s := &stream{t: t, body: resp.Body, events: make(chan sse.Event, 1024)}
	t.Cleanup(s.close)
	dec := sse.NewDecoder(resp.Body)
	dec.OnComment = func(string) { s.heartbeats.Add(1) }
	go func() {
		defer close(s.events)
		for {
			e, err := dec.Next()
			if err != nil {
				return
			}
			s.events <- e
		}
	}()
	return s
}

func get(t testing.TB, base string, channels []string, lastID string) *http.Response {
	t.Helper()
	q := url.Values{"channel": channels}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/sse?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// next returns the next event.
func (s *stream) next() sse.Event {
	s.t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			s.t.Fatal("the stream ended")
		}
		return e
	case <-time.After(waitTimeout):
		s.t.Fatalf("no event after %v", waitTimeout)
	}
	return sse.Event{}
}

// expect reads events and checks their ids.
func (s *stream) expect(ids ...string) {
	s.t.Helper()
	for i, id := range ids {
		e := s.next()
		if e.LastEventID != id || !e.IDSet {
			s.t.Fatalf("event %d of %d: id %q (type %q, data %q); want %q", i+1, len(ids), e.LastEventID, e.Type, e.Data, id)
		}
	}
}

func (s *stream) close() { s.body.Close() }

// rawStream reads an event stream's bytes as they come.
type rawStream struct {
	t    testing.TB
	body io.ReadCloser
	rd   *bufio.Reader
}

func openRaw(t testing.TB, base string, channel string) *rawStream {
	t.Helper()
	resp := get(t, base, []string{channel}, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse: %s", resp.Status)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &rawStream{t: t, body: resp.Body, rd: bufio.NewReader(resp.Body)}
}

// read returns exactly the next n bytes.
func (r *rawStream) read(n int) string {
	r.t.Helper()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(r.rd, b)
		got <- string(b[:k])
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(waitTimeout):
		r.body.Close()
		r.t.Fatalf("fewer than %d bytes after %v", n, waitTimeout)
	}
	return ""
}
