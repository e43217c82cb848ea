package ssehub_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// testAuthorizer grants "Bearer alice" publishing and reading alice.*
// until ttl from the request, "Bearer stale" the same but already expired,
// anonymous requests reading public.*, and refuses every other credential.
func testAuthorizer(ttl time.Duration) ssehub.Authorizer {
	alice := func(ch string) bool { return strings.HasPrefix(ch, "alice.") }
	return ssehub.AuthorizerFunc(func(r *http.Request) (ssehub.Grant, error) {
		switch r.Header.Get("Authorization") {
		case "":
			return ssehub.Grant{Subscribe: func(ch string) bool { return strings.HasPrefix(ch, "public.") }}, nil
		case "Bearer alice":
			return ssehub.Grant{Authenticated: true, Subject: "alice", Publish: alice, Subscribe: alice, Expires: time.Now().Add(ttl)}, nil
		case "Bearer stale":
			return ssehub.Grant{Authenticated: true, Subject: "alice", Publish: alice, Subscribe: alice, Expires: time.Now().Add(-time.Second)}, nil
		}
		return ssehub.Grant{}, fmt.Errorf("%w: invalid token", ssehub.ErrUnauthorized)
	})
}

func TestAuthorizerAnswers(t *testing.T) {
	t.Parallel()
	_, srv := hubtest.Serve(t, ssehub.Config{Authorizer: testAuthorizer(time.Hour)})

	publishes := []struct {
		name, auth, channel string
		status              int
		code                string
	}{
		{"anonymous", "", "alice.in", 401, "unauthorized"},
		{"anonymous public", "", "public.news", 401, "unauthorized"},
		{"bad credential", "garbage", "alice.in", 401, "unauthorized"},
		{"not covered", "alice", "bob.in", 403, "forbidden"},
		{"default channel not covered", "alice", "", 403, "forbidden"},
		{"expired", "stale", "alice.in", 200, ""}, // expiry is the Authorizer's business for publishes
		{"covered", "alice", "alice.in", 200, ""},
	}
	for _, c := range publishes {
		t.Run("publish/"+c.name, func(t *testing.T) {
			t.Parallel()
			var hdr http.Header
			if c.auth != "" {
				hdr = hubtest.Bearer(c.auth)
			}
			body := `{"data":1}`
			if c.channel != "" {
				body = `{"channel":"` + c.channel + `","data":1}`
			}
			resp, out := hubtest.Post(t, srv.URL+"/publish", hdr, body)
			if resp.StatusCode != c.status || out["code"] != c.code {
				t.Fatalf("status %d %v, want %d code %q", resp.StatusCode, out, c.status, c.code)
			}
			checkAuthHeaders(t, resp)
		})
	}

	streams := []struct {
		name, auth, query string
		status            int
		code              string
	}{
		{"anonymous public", "", "channel=public.news", 200, ""},
		{"anonymous private", "", "channel=alice.in", 401, "unauthorized"},
		{"anonymous default channel", "", "", 401, "unauthorized"},
		{"anonymous public and private", "", "channel=public.news&channel=alice.in", 401, "unauthorized"},
		{"bad credential on public", "garbage", "channel=public.news", 401, "unauthorized"},
		{"expired", "stale", "channel=alice.in", 401, "unauthorized"},
		{"not covered", "alice", "channel=bob.in", 403, "forbidden"},
		{"partly covered", "alice", "channel=alice.in&channel=bob.in", 403, "forbidden"},
		{"covered", "alice", "channel=alice.in&channel=alice.out", 200, ""},
		{"invalid channel", "alice", "channel=a%20b", 400, "invalid_channel"},
	}
	for _, c := range streams {
		t.Run("stream/"+c.name, func(t *testing.T) {
			t.Parallel()
			var hdr http.Header
			if c.auth != "" {
				hdr = hubtest.Bearer(c.auth)
			}
			a := hubtest.Request(t, http.DefaultClient, http.MethodGet, srv.URL+"/sse?"+c.query, hdr, "")
			if a.Stream != nil {
				a.Stream.Close()
			}
			if a.Status != c.status || (c.code != "" && !strings.Contains(a.Body, `"code":"`+c.code+`"`)) {
				t.Fatalf("status %d %s, want %d code %q", a.Status, a.Body, c.status, c.code)
			}
			checkAuthHeaders(t, &http.Response{StatusCode: a.Status, Header: a.Header})
		})
	}
}

// checkAuthHeaders checks that a 401 asks for a bearer token and other
// answers do not.
func checkAuthHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	got := resp.Header.Get("WWW-Authenticate")
	if want := resp.StatusCode == http.StatusUnauthorized; want != strings.HasPrefix(got, "Bearer") {
		t.Errorf("status %d with WWW-Authenticate %q", resp.StatusCode, got)
	}
}

// countingReader counts the reads of a request body.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

func TestPublishRefusedBeforeBody(t *testing.T) {
	t.Parallel()
	h, err := ssehub.New(ssehub.Config{Authorizer: testAuthorizer(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	body := &countingReader{r: strings.NewReader(`{"channel":"alice.in","data":1}`)}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/publish", body))
	if rec.Code != http.StatusUnauthorized || body.reads != 0 {
		t.Fatalf("status %d after %d body reads; want 401 before any", rec.Code, body.reads)
	}
}

func TestGrantExpiryEndsStream(t *testing.T) {
	t.Parallel()
	logger, logs := hubtest.TextLogger()
	hub, srv := hubtest.Serve(t, ssehub.Config{Authorizer: testAuthorizer(300 * time.Millisecond), Logger: logger})

	s := hubtest.Open(t, http.DefaultClient, srv.URL+"/sse?channel=alice.in", hubtest.Bearer("alice"))
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "alice.in", Data: []byte(`"before expiry"`)})
	if err != nil {
		t.Fatal(err)
	}
	if e := s.Next(t); e.LastEventID != id {
		t.Fatalf("got %+v, want id %s", e, id)
	}
	// The server ends the stream when the grant expires; nothing else
	// would end it.
	ended := make(chan error, 1)
	go func() { _, err := s.Dec.Next(); ended <- err }()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("stream: %v; want it to end", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stream still open 30 s after its grant expired")
	}
	// The log record follows the end of the response.
	for !strings.Contains(logs.String(), `reason="credential expired"`) {
		select {
		case <-t.Context().Done():
			t.Fatalf("no expiry in log:\n%s", logs)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestAuthorizerOtherError(t *testing.T) {
	t.Parallel()
	a := ssehub.AuthorizerFunc(func(*http.Request) (ssehub.Grant, error) {
		return ssehub.Grant{}, errors.New("key store down: secret detail")
	})
	_, srv := hubtest.Serve(t, ssehub.Config{Authorizer: a})
	resp, out := hubtest.Post(t, srv.URL+"/publish", nil, `{"data":1}`)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(out["error"], "secret") {
		t.Fatalf("status %d %v; want 500 without detail", resp.StatusCode, out)
	}
}

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
	hub, srv := hubtest.Serve(t, ssehub.Config{MaxConnections: 2})
	url := srv.URL + "/sse?channel=limits"
	a := hubtest.Open(t, http.DefaultClient, url, nil)
	b := hubtest.Open(t, http.DefaultClient, url, nil)

	third := hubtest.Request(t, http.DefaultClient, http.MethodGet, url, nil, "")
	if third.Stream != nil || third.Status != http.StatusServiceUnavailable || third.Header.Get("Retry-After") == "" ||
		!strings.Contains(third.Body, `"code":"too_many_connections"`) {
		t.Fatalf("third stream: status %d, Retry-After %q, %s", third.Status, third.Header.Get("Retry-After"), third.Body)
	}

	// The streams under the limit are unaffected.
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "limits", Data: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*hubtest.Stream{a, b} {
		if e := s.Next(t); e.LastEventID != id {
			t.Fatalf("got %+v, want %s", e, id)
		}
	}
	// Publishing is not a stream and is not limited.
	if resp, out := hubtest.Post(t, srv.URL+"/publish", nil, `{"channel":"limits","data":2}`); resp.StatusCode != 200 {
		t.Fatalf("publish at the limit: %d %v", resp.StatusCode, out)
	}

	// A slot comes back when a stream ends.
	a.Close()
	waitFor(t, "the closed stream to release its slot", func() bool { return ssehub.OpenStreams(hub) == 1 })
	hubtest.Open(t, http.DefaultClient, url, nil) // after one closed
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
	hub, srv := hubtest.Serve(t, ssehub.Config{MaxConnectionsPerIP: 1})
	url := srv.URL + "/sse?channel=limits"
	hubtest.Open(t, http.DefaultClient, url, nil)
	second := hubtest.Request(t, http.DefaultClient, http.MethodGet, url, nil, "")
	if second.Stream != nil || second.Status != http.StatusServiceUnavailable || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream from one address: status %d %s", second.Status, second.Body)
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
	_, srv := hubtest.Serve(t, ssehub.Config{MaxMessageBytes: 64, MaxChannels: 2})
	big := `{"channel":"x","data":"` + strings.Repeat("a", 100) + `"}`
	if resp, out := hubtest.Post(t, srv.URL+"/publish", nil, big); resp.StatusCode != http.StatusRequestEntityTooLarge || out["code"] != "too_large" {
		t.Fatalf("large message: %d %v", resp.StatusCode, out)
	}
	huge := `{"channel":"x","data":"` + strings.Repeat("a", 10000) + `"}`
	if resp, out := hubtest.Post(t, srv.URL+"/publish", nil, huge); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d %v", resp.StatusCode, out)
	}
	if resp, out := hubtest.Post(t, srv.URL+"/publish", nil, `{"channel":"x","data":"ok"}`); resp.StatusCode != 200 {
		t.Fatalf("small message: %d %v", resp.StatusCode, out)
	}
	three := hubtest.Request(t, http.DefaultClient, http.MethodGet, srv.URL+"/sse?channel=a&channel=b&channel=c", nil, "")
	if three.Stream != nil || three.Status != http.StatusBadRequest || !strings.Contains(three.Body, "too_many_channels") {
		t.Fatalf("three channels: %d %s", three.Status, three.Body)
	}
	hubtest.Open(t, http.DefaultClient, srv.URL+"/sse?channel=a&channel=b", nil)
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
	hub, srv := hubtest.Serve(t, ssehub.Config{Broker: slowBroker{mem, 3 * timeout}, ReadTimeout: timeout})

	stream := hubtest.Open(t, http.DefaultClient, srv.URL+"/sse?channel=slow", nil)

	// A publisher that stops sending its body half way is answered 408
	// once the read timeout passes.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"channel\":")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: status %d, want 408", resp.StatusCode)
	}

	// A publish that takes longer than the read timeout after its body
	// arrived still succeeds: the deadline covers the body only.
	if resp, out := hubtest.Post(t, srv.URL+"/publish", nil, `{"channel":"slow","data":1}`); resp.StatusCode != 200 {
		t.Fatalf("slow broker: %d %v", resp.StatusCode, out)
	}
	// The stream, open for longer than the read timeout, still delivers.
	if e := stream.Next(t); e.Data != "1" {
		t.Fatalf("stream got %+v", e)
	}
	_ = hub
}
