package ssehub_test

import (
	"encoding/json"
	"fmt"
	"github.com/ssehub/ssehub/internal/hubtest"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// TestStreamOverHTTP2 checks that a stream works over HTTP/2, which Go's
// server speaks over TLS, and sends no header that HTTP/2 forbids.
func TestStreamOverHTTP2(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(hub)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		hub.Close(t.Context())
		srv.Close()
	})
	client := srv.Client()

	// Two streams share one connection, as a browser's would.
	var streams []*http.Response
	for range 2 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/sse?channel=h2", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("stream served over %s, want HTTP/2", res.Proto)
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, Content-Type %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
		for _, k := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length"} {
			if v := res.Header.Get(k); v != "" {
				t.Errorf("%s: %q on an HTTP/2 stream", k, v)
			}
		}
		streams = append(streams, res)
	}

	data := json.RawMessage(`{"text":"h\u00e9llo \ud83c\udf0d\nline two"}`)
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "h2", Type: "cool", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range streams {
		dec := sse.NewDecoder(res.Body)
		ev, err := dec.Next()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		var got, want map[string]string
		if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
			t.Fatalf("stream %d: data %q: %v", i, ev.Data, err)
		}
		json.Unmarshal(data, &want)
		if ev.Type != "cool" || ev.LastEventID != id || got["text"] != want["text"] {
			t.Errorf("stream %d: got %+v, want type cool, id %s, text %q", i, ev, id, want["text"])
		}
	}
}

// TestIdleStreamOutlivesWriteTimeout: a stream that writes nothing for
// longer than the write timeout is not cut for it, on every path. HTTP/2
// resets a stream when its write deadline passes, written or not, so a
// deadline must not be left behind a write there. Heartbeats every 200 ms
// leave the stream idle for four times the timeout between them.
func TestIdleStreamOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		h2     bool
		detach bool
	}{{"http2", true, false}, {"handler", false, false}, {"detached", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hub, err := ssehub.New(ssehub.Config{WriteTimeout: 50 * time.Millisecond, Heartbeat: 400 * time.Millisecond, Detach: tc.detach})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(hub)
			if tc.h2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(func() {
				hubtest.Close(t, hub)
				srv.Close()
			})
			s := hubtest.Open(t, srv.Client(), srv.URL+"/sse?channel=idle", nil)
			if tc.h2 != (s.Resp.ProtoMajor == 2) {
				t.Fatalf("served over %s", s.Resp.Proto)
			}
			// A first event arms the deadline, then the stream idles.
			id := hubtest.Publish(t, hub, "idle", "1")
			if e := s.Next(t); e.LastEventID != id {
				t.Fatalf("got %+v, want the event %s", e, id)
			}
			comments := make(chan struct{}, 10)
			s.Dec.OnComment = func(string) { comments <- struct{}{} }
			ended := make(chan error, 1)
			go func() {
				e, err := s.Dec.Next()
				if err == nil {
					err = fmt.Errorf("unexpected event %+v", e)
				}
				ended <- err
			}()
			for range 3 {
				select {
				case <-comments:
				case err := <-ended:
					t.Fatalf("the idle stream ended: %v", err)
				}
			}
		})
	}
}
