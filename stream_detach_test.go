package ssehub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/ssehub/internal/sse"
)

// detachLog collects the hub's log records, message and attributes as text.
type detachLog struct{ records chan map[string]string }

func (l detachLog) Enabled(context.Context, slog.Level) bool { return true }
func (l detachLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l detachLog) WithGroup(string) slog.Handler            { return l }
func (l detachLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	select {
	case l.records <- m:
	default: // a test that does not wait for records does not block the hub
	}
	return nil
}

// waitClosed returns the next "stream closed" record.
func (l detachLog) waitClosed(t *testing.T) map[string]string {
	t.Helper()
	for {
		select {
		case m := <-l.records:
			if m["msg"] == "stream closed" {
				return m
			}
		case <-t.Context().Done():
			t.Fatal("no stream closed")
		}
	}
}

// detachServer serves a hub with Detach on over HTTP/1.1 and counts the
// connections it hijacks.
type detachServer struct {
	hub       *Hub
	srv       *httptest.Server
	log       detachLog
	hijacked  atomic.Int32
	closeOnce sync.Once
}

func newDetachServer(t *testing.T, cfg Config, wrap func(http.Handler) http.Handler) *detachServer {
	t.Helper()
	ds := &detachServer{log: detachLog{records: make(chan map[string]string, 1024)}}
	cfg.Detach = true
	cfg.Logger = slog.New(ds.log)
	hub, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ds.hub = hub
	var h http.Handler = hub
	if wrap != nil {
		h = wrap(hub)
	}
	ds.srv = httptest.NewUnstartedServer(h)
	ds.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateHijacked {
			ds.hijacked.Add(1)
		}
	}
	ds.srv.Start()
	t.Cleanup(func() {
		ds.close(t)
		ds.srv.Close()
	})
	return ds
}

func (ds *detachServer) close(t *testing.T) {
	ds.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ds.hub.Close(ctx); err != nil {
			t.Errorf("hub close: %v", err)
		}
	})
}

// open starts a stream and returns its decoder once the headers are in.
func (ds *detachServer) open(t *testing.T, query, lastID string) (*http.Response, *sse.Decoder) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ds.srv.URL+"/sse"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := ds.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp, sse.NewDecoder(resp.Body)
}

func detachPublish(t *testing.T, h *Hub, channel, data string) string {
	t.Helper()
	id, err := h.Publish(t.Context(), Message{Channel: channel, Data: json.RawMessage(data)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func detachNext(t *testing.T, dec *sse.Decoder) sse.Event {
	t.Helper()
	e, err := dec.Next()
	if err != nil {
		t.Fatalf("next event: %v", err)
	}
	return e
}

func TestDetachStreamsEvents(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{}, nil)
	resp, dec := ds.open(t, "?channel=a&channel=b", "")
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type %q", got)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("Transfer-Encoding %v", resp.TransferEncoding)
	}
	var ids []string
	for i, ch := range []string{"a", "b", "c", "a"} {
		ids = append(ids, detachPublish(t, ds.hub, ch, fmt.Sprintf(`{"n":%d}`, i)))
	}
	for _, want := range []struct{ id, data string }{{ids[0], `{"n":0}`}, {ids[1], `{"n":1}`}, {ids[3], `{"n":3}`}} {
		e := detachNext(t, dec)
		if e.LastEventID != want.id || e.Data != want.data || e.Type != "message" {
			t.Fatalf("got %+v, want id %s data %s", e, want.id, want.data)
		}
	}
	if dec.Retry() != int(DefaultRetry/time.Millisecond) {
		t.Errorf("retry %d", dec.Retry())
	}
	if n := ds.hijacked.Load(); n != 1 {
		t.Errorf("%d connections hijacked, want 1", n)
	}
}

func TestDetachReplayAndReset(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{}, nil)
	var ids []string
	for i := range 3 {
		ids = append(ids, detachPublish(t, ds.hub, "r", fmt.Sprintf(`{"n":%d}`, i)))
	}
	_, dec := ds.open(t, "?channel=r", ids[0])
	live := detachPublish(t, ds.hub, "r", `{"n":3}`)
	for _, want := range []string{ids[1], ids[2], live} {
		if e := detachNext(t, dec); e.LastEventID != want {
			t.Fatalf("got id %q, want %q", e.LastEventID, want)
		}
	}

	_, dec = ds.open(t, "?channel=r", "no-such-id")
	e := detachNext(t, dec)
	// The reset's id is the channel's position: the clock, past the last event.
	if e.Type != ResetType || len(e.LastEventID) != len(live) || e.LastEventID < live {
		t.Fatalf("got %+v, want a %s event with an id from %s on", e, ResetType, live)
	}
}

func TestDetachHeartbeat(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{Heartbeat: 5 * time.Millisecond}, nil)
	_, dec := ds.open(t, "?channel=idle", "")
	comments := make(chan struct{}, 100)
	dec.OnComment = func(string) {
		select {
		case comments <- struct{}{}:
		default:
		}
	}
	go dec.Next() // returns when the stream ends
	for range 3 {
		select {
		case <-comments:
		case <-t.Context().Done():
			t.Fatal("no heartbeat")
		}
	}
}

func TestDetachHubCloseEndsStreams(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{}, nil)
	var decs []*sse.Decoder
	for range 3 {
		_, dec := ds.open(t, "?channel=end", "")
		decs = append(decs, dec)
	}
	ids := []string{detachPublish(t, ds.hub, "end", `1`), detachPublish(t, ds.hub, "end", `2`)}
	ds.close(t)
	for i, dec := range decs {
		for _, id := range ids {
			if e := detachNext(t, dec); e.LastEventID != id {
				t.Fatalf("stream %d: got id %q, want %q", i, e.LastEventID, id)
			}
		}
		// A clean end of the chunked body, not a cut connection.
		if _, err := dec.Next(); err != io.EOF {
			t.Fatalf("stream %d: %v after the last event, want EOF", i, err)
		}
	}
	for range decs {
		if m := ds.log.waitClosed(t); m["reason"] != "hub closed" {
			t.Errorf("closed for %q", m["reason"])
		}
	}
}

// rawStream opens a stream over a plain TCP connection and reads up to the
// end of the response headers.
func rawStream(t *testing.T, base, query string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /sse%s HTTP/1.1\r\nHost: x\r\n\r\n", query)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return conn, br
}

func TestDetachNoticesClientGone(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("elsewhere heartbeats find a client gone")
	}
	// No heartbeat and no event: only the client's end of input can end
	// the stream.
	ds := newDetachServer(t, Config{Heartbeat: -1}, nil)
	conn, _ := rawStream(t, ds.srv.URL, "?channel=gone")
	conn.Close()
	if m := ds.log.waitClosed(t); m["reason"] != "client gone" {
		t.Fatalf("closed for %q, want client gone", m["reason"])
	}
	ds.hub.streams.Wait() // the stream logs its end, then lets go
	ds.hub.mu.Lock()
	n := len(ds.hub.channels)
	ds.hub.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d channels still subscribed", n)
	}
	ds.hub.web.detacher.peers.mu.Lock()
	watched := len(ds.hub.web.detacher.peers.fds)
	ds.hub.web.detacher.peers.mu.Unlock()
	if watched != 0 {
		t.Fatalf("%d connections still watched", watched)
	}
}

func TestDetachIgnoresClientData(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{Heartbeat: -1}, nil)
	conn, br := rawStream(t, ds.srv.URL, "?channel=chatty")
	// Bytes after the request are not an end: the stream goes on.
	conn.Write([]byte("unexpected\r\n"))
	id := detachPublish(t, ds.hub, "chatty", `{}`)
	dec := sse.NewDecoder(httputil.NewChunkedReader(br))
	if e := detachNext(t, dec); e.LastEventID != id {
		t.Fatalf("got id %q, want %q", e.LastEventID, id)
	}
}

func TestDetachHTTP2KeepsOrdinaryPath(t *testing.T) {
	t.Parallel()
	hub, err := New(Config{Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(hub)
	var hijacked atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateHijacked {
			hijacked.Add(1)
		}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/sse?channel=h2", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s", resp.Proto)
	}
	id := detachPublish(t, hub, "h2", `{}`)
	if e := detachNext(t, sse.NewDecoder(resp.Body)); e.LastEventID != id {
		t.Fatalf("got id %q, want %q", e.LastEventID, id)
	}
	if hijacked.Load() != 0 {
		t.Fatal("an HTTP/2 connection was hijacked")
	}
}

// flushOnly is a ResponseWriter wrapper that can flush but not hijack,
// like much logging middleware.
type flushOnly struct{ http.ResponseWriter }

func (f flushOnly) Flush() { f.ResponseWriter.(http.Flusher).Flush() }

func TestDetachFallsBackWithoutHijack(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(flushOnly{w}, r) })
	})
	_, dec := ds.open(t, "?channel=plain", "")
	id := detachPublish(t, ds.hub, "plain", `{}`)
	if e := detachNext(t, dec); e.LastEventID != id {
		t.Fatalf("got id %q, want %q", e.LastEventID, id)
	}
	if ds.hijacked.Load() != 0 {
		t.Fatal("hijacked through a wrapper without Hijack")
	}
}

func TestFrameChunk(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 15, 16, 4095, 70000} {
		b := make([]byte, chunkRoom, chunkRoom+n)
		b = append(b, strings.Repeat("x", n)...)
		got := string(frameChunk(b))
		want := fmt.Sprintf("%x\r\n%s\r\n", n, strings.Repeat("x", n))
		if got != want {
			t.Errorf("%d bytes: chunk %q..., want %q...", n, got[:min(len(got), 12)], want[:min(len(want), 12)])
		}
	}
}

func TestDetachHoldsConnectionSlot(t *testing.T) {
	t.Parallel()
	ds := newDetachServer(t, Config{MaxConnections: 1, Heartbeat: 5 * time.Millisecond}, nil)
	conn, _ := rawStream(t, ds.srv.URL, "?channel=slot")
	resp, err := http.Get(ds.srv.URL + "/sse?channel=slot")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second stream: status %d, want 503", resp.StatusCode)
	}
	// The slot is the detached stream's until the hub finds it gone.
	conn.Close()
	ds.log.waitClosed(t)
	ds.hub.streams.Wait() // the stream logs its end, then lets go
	if n := ds.hub.web.conns.open(); n != 0 {
		t.Fatalf("%d slots held after the stream closed", n)
	}
	rawStream(t, ds.srv.URL, "?channel=slot")
}

func TestDetachGrantExpiryEndsStream(t *testing.T) {
	t.Parallel()
	expires := time.Now().Add(200 * time.Millisecond)
	ds := newDetachServer(t, Config{Authorizer: AuthorizerFunc(func(*http.Request) (Grant, error) {
		return Grant{Authenticated: true, Subscribe: func(string) bool { return true }, Expires: expires}, nil
	})}, nil)
	_, dec := ds.open(t, "?channel=exp", "")
	id := detachPublish(t, ds.hub, "exp", `1`)
	if e := detachNext(t, dec); e.LastEventID != id {
		t.Fatalf("got id %q, want %q", e.LastEventID, id)
	}
	// Nothing but the expiry ends the stream.
	if _, err := dec.Next(); err != io.EOF {
		t.Fatalf("stream: %v, want it to end", err)
	}
	if m := ds.log.waitClosed(t); m["reason"] != errCredentialExpired.Error() {
		t.Fatalf("closed for %q", m["reason"])
	}
	if ds.hijacked.Load() != 1 {
		t.Fatal("stream not detached")
	}
}

func TestDetachDrain(t *testing.T) {
	t.Parallel()
	const retry = 3 * time.Second
	ds := newDetachServer(t, Config{Retry: retry, Heartbeat: -1}, nil)
	var decs []*sse.Decoder
	for range 4 {
		_, dec := ds.open(t, "?channel=drain", "")
		decs = append(decs, dec)
	}
	ids := []string{detachPublish(t, ds.hub, "drain", `1`), detachPublish(t, ds.hub, "drain", `2`)}
	const over = 200 * time.Millisecond
	ds.closeOnce.Do(func() {}) // Drain instead of Close
	if err := ds.hub.Drain(t.Context(), over); err != nil {
		t.Fatal(err)
	}
	for i, dec := range decs {
		for _, id := range ids {
			if e := detachNext(t, dec); e.LastEventID != id {
				t.Fatalf("stream %d: got id %q, want %q", i, e.LastEventID, id)
			}
		}
		if _, err := dec.Next(); err != io.EOF {
			t.Fatalf("stream %d: %v after the last event, want a clean end", i, err)
		}
		// The retry told at the end carries up to one wave interval of
		// jitter: 4 streams over 200 ms are 4 waves of 50 ms.
		if got, lo, hi := dec.Retry(), int(retry/time.Millisecond), int((retry+over/4)/time.Millisecond); got < lo || got >= hi {
			t.Errorf("stream %d: retry %d, want in [%d, %d)", i, got, lo, hi)
		}
	}
	for range decs {
		if m := ds.log.waitClosed(t); m["reason"] != "drained" {
			t.Errorf("closed for %q", m["reason"])
		}
	}
}

// detachMetrics counts what the hub reports about written events.
type detachMetrics struct {
	written   chan int
	latencies atomic.Int32
}

func (m *detachMetrics) SubscriptionOpened()          {}
func (m *detachMetrics) SubscriptionClosed()          {}
func (m *detachMetrics) ChannelSubscribed()           {}
func (m *detachMetrics) ChannelUnsubscribed()         {}
func (m *detachMetrics) EventPublished()              {}
func (m *detachMetrics) EventReceived()               {}
func (m *detachMetrics) SlowSubscriber()              {}
func (m *detachMetrics) Replay(ReplayOutcome)         {}
func (m *detachMetrics) EventsWritten(n int)          { m.written <- n }
func (m *detachMetrics) WriteLatency(d time.Duration) { m.latencies.Add(1) }

func TestDetachMetrics(t *testing.T) {
	t.Parallel()
	m := &detachMetrics{written: make(chan int, 100)}
	ds := newDetachServer(t, Config{Metrics: m, Heartbeat: -1}, nil)
	first := detachPublish(t, ds.hub, "m", `0`)
	detachPublish(t, ds.hub, "m", `1`)
	// One replayed event, then two live ones; the id-only frame that
	// starts a new stream is no event.
	_, dec := ds.open(t, "?channel=m", first)
	detachNext(t, dec)
	detachPublish(t, ds.hub, "m", `2`)
	detachPublish(t, ds.hub, "m", `3`)
	detachNext(t, dec)
	detachNext(t, dec)
	total := 0
	for total < 3 {
		select {
		case n := <-m.written:
			total += n
		case <-t.Context().Done():
			t.Fatalf("%d events reported written, want 3", total)
		}
	}
	ds.close(t)
	select {
	case n := <-m.written:
		t.Fatalf("%d more events reported written", n)
	default:
	}
	if got := m.latencies.Load(); got != 2 {
		t.Fatalf("%d write latencies, want 2 (the live events)", got)
	}
}
