package ssehub

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClosedHubDefersStreams: a stream request the hub cannot serve gets
// an empty 200 stream with a retry field, which an EventSource retries,
// rather than an error status, which would stop it for good.
func TestClosedHubDefersStreams(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/sse?channel=a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(string(body), "retry: ") || strings.Count(string(body), "\n") != 1 {
		t.Fatalf("GET /sse on a closed hub: %s %q, want 200 text/event-stream with one retry field", resp.Status, body)
	}
	resp, err = http.Post(srv.URL+"/publish", "application/json", strings.NewReader(`{"data":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST /publish on a closed hub: %s, want 503", resp.Status)
	}
}
