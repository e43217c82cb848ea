package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// cleanupTimeout bounds how long a test's cleanup waits for the hub to
// close; it only keeps a broken test from hanging.
const cleanupTimeout = 10 * time.Second

// newTestHub returns a hub configured by cfg, served by an httptest server.
// Cleanup closes the hub first, which ends open streams, then the server.
func newTestHub(t *testing.T, cfg ssehub.Config) (*ssehub.Hub, *httptest.Server) {
	t.Helper()
	hub, err := ssehub.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(hub)
	t.Cleanup(ts.Close)
	t.Cleanup(func() { closeHub(t, hub) })
	return hub, ts
}

// newServer serves h until the test ends.
func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// closeHub closes hub, accepting that the test may have closed it already.
func closeHub(t *testing.T, hub *ssehub.Hub) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := hub.Close(ctx); err != nil && !errors.Is(err, ssehub.ErrClosed) {
		t.Errorf("Hub.Close: %v", err)
	}
}

// testStream is an open GET /sse response read with the spec decoder.
type testStream struct {
	resp   *http.Response
	dec    *sse.Decoder
	cancel context.CancelFunc
}

// openStream opens url (a full /sse URL with its query), sending lastID as
// the Last-Event-ID header when it is not empty. The stream is closed when
// the test ends.
func openStream(t *testing.T, client *http.Client, url, lastID string) *testStream {
	t.Helper()
	s, err := dialStream(t.Context(), client, url, lastID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

// dialStream is openStream for use outside the test goroutine: the caller
// closes the stream.
func dialStream(ctx context.Context, client *http.Client, url, lastID string) (*testStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, &statusError{resp.StatusCode, strings.TrimSpace(string(body))}
	}
	return &testStream{resp: resp, dec: sse.NewDecoder(resp.Body), cancel: cancel}, nil
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return http.StatusText(e.status) + ": " + e.body }

// close drops the connection.
func (s *testStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing the test on any error.
func (s *testStream) next(t *testing.T) sse.Event {
	t.Helper()
	e, err := s.dec.Next()
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return e
}

// publish publishes data (a JSON text) to channel and returns the id.
func publish(t *testing.T, hub *ssehub.Hub, channel, data string) string {
	t.Helper()
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: channel, Data: json.RawMessage(data)})
	if err != nil {
		t.Fatalf("Publish(%s, %s): %v", channel, data, err)
	}
	return id
}

// doJSON sends a request and decodes its JSON answer. Every answer of the
// hub outside the stream is a JSON object with Content-Type
// application/json.
func doJSON(t *testing.T, client *http.Client, method, url, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if method == http.MethodHead {
		return resp, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %q", method, url, ct, raw)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, raw, err)
	}
	return resp, v
}

// fakeBroker is a Broker and Replayer that passes every call to a
// MemoryBroker, except those whose func field a test sets.
type fakeBroker struct {
	mem *ssehub.MemoryBroker

	publish   func(ctx context.Context, m ssehub.Message) (*ssehub.Event, error)
	subscribe func(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error)
	replay    func(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error)
}

var (
	_ ssehub.Broker   = (*fakeBroker)(nil)
	_ ssehub.Replayer = (*fakeBroker)(nil)
)

func (b *fakeBroker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	if b.publish != nil {
		return b.publish(ctx, m)
	}
	return b.mem.Publish(ctx, m)
}

func (b *fakeBroker) Subscribe(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error) {
	if b.subscribe != nil {
		return b.subscribe(ctx, channel, deliver)
	}
	return b.mem.Subscribe(ctx, channel, deliver)
}

func (b *fakeBroker) Head(ctx context.Context, channels []string) (ssehub.Cursor, error) {
	return b.mem.Head(ctx, channels)
}

func (b *fakeBroker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	if b.replay != nil {
		return b.replay(ctx, channels, lastEventID, fn)
	}
	return b.mem.Replay(ctx, channels, lastEventID, fn)
}

func (b *fakeBroker) Close(ctx context.Context) error { return b.mem.Close(ctx) }
