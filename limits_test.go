package ssehub_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
)

// waitFor waits until cond holds or the test times out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	hub, srv := secHub(t, ssehub.Config{MaxConnections: 2})
	url := srv.URL + "/sse?channel=limits"
	a, _, _ := secOpen(t, url, nil)
	b, _, _ := secOpen(t, url, nil)
	if a == nil || b == nil {
		t.Fatal("streams under the limit refused")
	}

	s, resp, body := secOpen(t, url, nil)
	if s != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), `"code":"too_many_connections"`) {
		t.Fatalf("third stream: status %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// The streams under the limit are unaffected.
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "limits", Data: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*secStream{a, b} {
		if e := s.next(t); e.LastEventID != id {
			t.Fatalf("got %+v, want %s", e, id)
		}
	}
	// Publishing is not a stream and is not limited.
	if resp, out := secPost(t, srv.URL+"/publish", nil, `{"channel":"limits","data":2}`); resp.StatusCode != 200 {
		t.Fatalf("publish at the limit: %d %v", resp.StatusCode, out)
	}

	// A slot comes back when a stream ends.
	a.close()
	waitFor(t, "the closed stream to release its slot", func() bool { return ssehub.OpenStreams(hub) == 1 })
	if c, resp, body := secOpen(t, url, nil); c == nil {
		t.Fatalf("stream after one closed: %d %s", resp.StatusCode, body)
	}
}

// flushSignal is a ResponseWriter for a stream served without a network:
// it reports the first flush, which means the stream is open.
type flushSignal struct {
	*httptest.ResponseRecorder
	once    sync.Once
	flushed chan struct{}
}

func (f *flushSignal) Flush() {
	f.ResponseRecorder.Flush()
	f.once.Do(func() { close(f.flushed) })
}

func TestMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	hub, srv := secHub(t, ssehub.Config{MaxConnectionsPerIP: 1})
	url := srv.URL + "/sse?channel=limits"
	if s, resp, body := secOpen(t, url, nil); s == nil {
		t.Fatalf("first stream: %d %s", resp.StatusCode, body)
	}
	s, resp, body := secOpen(t, url, nil)
	if s != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream from one address: status %d %s", resp.StatusCode, body)
	}

	// Another address still gets a stream.
	ctx, cancel := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/sse?channel=limits", nil)
	req.RemoteAddr = "192.0.2.7:4321"
	w := &flushSignal{ResponseRecorder: httptest.NewRecorder(), flushed: make(chan struct{})}
	served := make(chan struct{})
	go func() { hub.ServeHTTP(w, req); close(served) }()
	select {
	case <-w.flushed:
	case <-served:
		t.Fatalf("stream from another address: %d %s", w.Code, w.Body)
	}
	if w.Code != http.StatusOK {
		t.Fatalf("stream from another address: %d", w.Code)
	}
	cancel()
	<-served
}

func TestMessageAndChannelLimits(t *testing.T) {
	t.Parallel()
	_, srv := secHub(t, ssehub.Config{MaxMessageBytes: 64, MaxChannels: 2})
	big := `{"channel":"x","data":"` + strings.Repeat("a", 100) + `"}`
	if resp, out := secPost(t, srv.URL+"/publish", nil, big); resp.StatusCode != http.StatusRequestEntityTooLarge || out["code"] != "too_large" {
		t.Fatalf("large message: %d %v", resp.StatusCode, out)
	}
	huge := `{"channel":"x","data":"` + strings.Repeat("a", 10000) + `"}`
	if resp, out := secPost(t, srv.URL+"/publish", nil, huge); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d %v", resp.StatusCode, out)
	}
	if resp, out := secPost(t, srv.URL+"/publish", nil, `{"channel":"x","data":"ok"}`); resp.StatusCode != 200 {
		t.Fatalf("small message: %d %v", resp.StatusCode, out)
	}
	s, resp, body := secOpen(t, srv.URL+"/sse?channel=a&channel=b&channel=c", nil)
	if s != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "too_many_channels") {
		t.Fatalf("three channels: %d %s", resp.StatusCode, body)
	}
	if s, resp, body := secOpen(t, srv.URL+"/sse?channel=a&channel=b", nil); s == nil {
		t.Fatalf("two channels: %d %s", resp.StatusCode, body)
	}
}

// slowBroker delays each publish by delay, failing it if the request's
// context ends meanwhile.
type slowBroker struct {
	ssehub.Broker
	delay time.Duration
}

func (b slowBroker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ssehub.ErrUnavailable, ctx.Err())
	}
	return b.Broker.Publish(ctx, m)
}

func TestPublishReadTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	mem := ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
	t.Cleanup(func() { mem.Close(context.Background()) })
	hub, srv := secHub(t, ssehub.Config{Broker: slowBroker{mem, 3 * timeout}, ReadTimeout: timeout})

	stream, resp, body := secOpen(t, srv.URL+"/sse?channel=slow", nil)
	if stream == nil {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}

	// A publisher that stops sending its body half way is answered 408
	// once the read timeout passes.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"channel\":")
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: status %d, want 408", resp.StatusCode)
	}

	// A publish that takes longer than the read timeout after its body
	// arrived still succeeds: the deadline covers the body only.
	if resp, out := secPost(t, srv.URL+"/publish", nil, `{"channel":"slow","data":1}`); resp.StatusCode != 200 {
		t.Fatalf("slow broker: %d %v", resp.StatusCode, out)
	}
	// The stream, open for longer than the read timeout, still delivers.
	if e := stream.next(t); e.Data != "1" {
		t.Fatalf("stream got %+v", e)
	}
	_ = hub
}
