package ssehub_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

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
