// Package hubtest is what the tests of ssehub's packages share: a hub
// served on 127.0.0.1, streams read with the spec's decoder, requests that
// expect a JSON answer, a broker whose calls a test can take over, and log
// sinks a test can read or wait on.
package hubtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// CleanupTimeout bounds how long a test's cleanup waits for a hub to close;
// it only keeps a broken test from hanging.
const CleanupTimeout = 10 * time.Second

// Serve returns a hub configured by cfg, served by an httptest server on
// 127.0.0.1. Cleanup closes the hub first, which ends open streams, then
// the server.
func Serve(t testing.TB, cfg ssehub.Config) (*ssehub.Hub, *httptest.Server) {
	t.Helper()
	hub, err := ssehub.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return hub, Server(t, hub, hub)
}

// Server serves h on 127.0.0.1 until the test ends. When hub is not nil it
// is closed first.
func Server(t testing.TB, h http.Handler, hub *ssehub.Hub) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	if hub != nil {
		t.Cleanup(func() { Close(t, hub) })
	}
	return ts
}

// Close closes hub, accepting that the test may have closed it already.
func Close(t testing.TB, hub *ssehub.Hub) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	if err := hub.Close(ctx); err != nil && !errors.Is(err, ssehub.ErrClosed) {
		t.Errorf("Hub.Close: %v", err)
	}
}

// Publish publishes data (a JSON text) to channel and returns the id.
func Publish(t testing.TB, hub *ssehub.Hub, channel, data string) string {
	t.Helper()
	id, err := hub.Publish(context.Background(), ssehub.Message{Channel: channel, Data: json.RawMessage(data)})
	if err != nil {
		t.Fatalf("Publish(%s, %.40s): %v", channel, data, err)
	}
	return id
}

// Stream is an open event stream, read with the spec's decoder.
type Stream struct {
	Resp   *http.Response
	Dec    *sse.Decoder
	cancel context.CancelFunc
}

// Next returns the next event, failing the test on any error.
func (s *Stream) Next(t testing.TB) sse.Event {
	t.Helper()
	e, err := s.Dec.Next()
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return e
}

// Close drops the connection.
func (s *Stream) Close() {
	s.cancel()
	s.Resp.Body.Close()
}

// StatusError is a request that was answered with another status than 200.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string { return http.StatusText(e.Status) + ": " + e.Body }

// LastEventID returns request headers that resume from id; none when id is
// empty.
func LastEventID(id string) http.Header {
	if id == "" {
		return nil
	}
	return http.Header{"Last-Event-ID": {id}}
}

// Bearer returns request headers carrying tok as a bearer token.
func Bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// Open opens the stream at url (a full /sse URL with its query) with the
// request headers hdr, failing the test unless it opens. The stream is
// closed when the test ends.
func Open(t testing.TB, client *http.Client, url string, hdr http.Header) *Stream {
	t.Helper()
	s, err := Dial(t.Context(), client, url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Dial is Open for use outside the test goroutine: the caller closes the
// stream. An answer other than 200 is a *StatusError.
func Dial(ctx context.Context, client *http.Client, url string, hdr http.Header) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
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
		return nil, &StatusError{resp.StatusCode, strings.TrimSpace(string(body))}
	}
	return &Stream{Resp: resp, Dec: sse.NewDecoder(resp.Body), cancel: cancel}, nil
}

// Answer is the hub's answer to a request: a stream that opened, or the
// status, headers and body of any other.
type Answer struct {
	Status int
	Header http.Header
	Body   string  // when not a stream
	Stream *Stream // when a stream opened; closed when the test ends
}

// ErrorText returns the "error" member of a JSON error body.
func (a Answer) ErrorText() string {
	var e struct{ Error string }
	json.Unmarshal([]byte(a.Body), &e)
	return e.Error
}

// Request sends method url with the request headers hdr and body. A stream
// that opens is returned open; any other answer is read whole.
func Request(t testing.TB, client *http.Client, method, url string, hdr http.Header, body string) Answer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a := Answer{Status: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream" {
		a.Stream = &Stream{Resp: resp, Dec: sse.NewDecoder(resp.Body), cancel: cancel}
		t.Cleanup(a.Stream.Close)
		return a
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	a.Body = string(b)
	return a
}

// DoJSON sends a request and decodes its JSON answer, failing the test
// unless the answer is a JSON object with Content-Type application/json:
// every answer of the hub outside a stream is one.
func DoJSON(t testing.TB, client *http.Client, method, url string, hdr http.Header, body string) (*http.Response, map[string]any) {
	t.Helper()
	a := Request(t, client, method, url, hdr, body)
	resp := &http.Response{StatusCode: a.Status, Header: a.Header}
	if a.Stream != nil {
		t.Fatalf("%s %s: a stream, want a JSON answer", method, url)
	}
	if method == http.MethodHead {
		return resp, nil
	}
	if ct := a.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %q", method, url, ct, a.Body)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(a.Body), &v); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, a.Body, err)
	}
	return resp, v
}

// Post posts body to url with the request headers hdr and returns the
// answer and its JSON object, whose members are strings.
func Post(t testing.TB, url string, hdr http.Header, body string) (*http.Response, map[string]string) {
	t.Helper()
	resp, v := DoJSON(t, http.DefaultClient, http.MethodPost, url, hdr, body)
	out := map[string]string{}
	for k, x := range v {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("POST %s: member %q is %v, not a string", url, k, x)
		}
		out[k] = s
	}
	return resp, out
}

// Broker is a Broker and Replayer that passes every call to a
// MemoryBroker, except those whose func field a test sets. It lends the
// hub no history, so the hub keeps its own feeds for it, as for a remote
// broker.
type Broker struct {
	Mem *ssehub.MemoryBroker

	PublishFunc   func(ctx context.Context, m ssehub.Message) (*ssehub.Event, error)
	SubscribeFunc func(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error)
	ReplayFunc    func(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error)
}

var (
	_ ssehub.Broker   = (*Broker)(nil)
	_ ssehub.Replayer = (*Broker)(nil)
)

// NewBroker returns a Broker over a MemoryBroker configured by cfg.
func NewBroker(cfg ssehub.MemoryConfig) *Broker {
	return &Broker{Mem: ssehub.NewMemoryBroker(cfg)}
}

// Publish implements ssehub.Broker.
func (b *Broker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	if b.PublishFunc != nil {
		return b.PublishFunc(ctx, m)
	}
	return b.Mem.Publish(ctx, m)
}

// Subscribe implements ssehub.Broker.
func (b *Broker) Subscribe(ctx context.Context, channel string, deliver func(*ssehub.Event)) (func(), error) {
	if b.SubscribeFunc != nil {
		return b.SubscribeFunc(ctx, channel, deliver)
	}
	return b.Mem.Subscribe(ctx, channel, deliver)
}

// Head implements ssehub.Replayer.
func (b *Broker) Head(ctx context.Context, channels []string) (ssehub.Cursor, error) {
	return b.Mem.Head(ctx, channels)
}

// Replay implements ssehub.Replayer.
func (b *Broker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	if b.ReplayFunc != nil {
		return b.ReplayFunc(ctx, channels, lastEventID, fn)
	}
	return b.Mem.Replay(ctx, channels, lastEventID, fn)
}

// Close implements ssehub.Broker.
func (b *Broker) Close(ctx context.Context) error { return b.Mem.Close(ctx) }

// LogBuffer is a buffer that a logger and a test share.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TextLogger returns a logger that writes text records to a LogBuffer.
func TextLogger() (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// LogRecorder is a slog.Handler that keeps records, message and attributes
// as text, for a test to wait on.
type LogRecorder struct {
	mu      sync.Mutex
	records []map[string]string
	added   chan struct{} // a token after each record
}

// NewLogRecorder returns a LogRecorder and a logger that writes to it.
func NewLogRecorder() (*slog.Logger, *LogRecorder) {
	l := &LogRecorder{added: make(chan struct{}, 1)}
	return slog.New(l), l
}

func (l *LogRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *LogRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *LogRecorder) WithGroup(string) slog.Handler            { return l }

func (l *LogRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, m)
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return nil
}

// Records returns the records with message msg so far.
func (l *LogRecorder) Records(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var got []map[string]string
	for _, r := range l.records {
		if r["msg"] == msg {
			got = append(got, r)
		}
	}
	return got
}

// Wait waits until n records have message msg, and returns them.
func (l *LogRecorder) Wait(t testing.TB, msg string, n int) []map[string]string {
	t.Helper()
	for {
		if got := l.Records(msg); len(got) >= n {
			return got
		}
		select {
		case <-l.added:
		case <-t.Context().Done():
			t.Fatalf("%d %q records, want %d", len(l.Records(msg)), msg, n)
		}
	}
}
