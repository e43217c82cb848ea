package ssehub_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
	"github.com/ssehub/ssehub/internal/sse"
)

func TestStreamHeadersAndFirstBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		retry time.Duration
		first string // the bytes flushed on connect
	}{
		{"default retry", 0, "retry: 3000\n"},
		{"configured retry", 1500 * time.Millisecond, "retry: 1500\n"},
		{"no retry", -1, ":\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, ts := hubtest.Serve(t, ssehub.Config{Retry: tt.retry, Heartbeat: -1})
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/sse", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			for name, want := range map[string]string{
				"Content-Type":      "text/event-stream",
				"Cache-Control":     "no-cache",
				"X-Accel-Buffering": "no",
				"Content-Length":    "",
				"Connection":        "",
			} {
				if got := resp.Header.Get(name); got != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if resp.ContentLength != -1 {
				t.Errorf("ContentLength = %d, want -1 (streamed)", resp.ContentLength)
			}
			// Nothing is published: these bytes arrive only if the hub
			// flushes them when the stream opens.
			first := make([]byte, len(tt.first))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("reading the first bytes: %v", err)
			}
			if string(first) != tt.first {
				t.Fatalf("first bytes %q, want %q", first, tt.first)
			}
		})
	}
}

func TestStreamChannels(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	multi := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=a&channel=b&channel=a", nil)
	def := hubtest.Open(t, ts.Client(), ts.URL+"/sse", nil)

	ids := map[string]string{}
	for _, p := range []struct{ channel, data string }{
		{"a", `"a1"`}, {"c", `"c1"`}, {"b", `"b1"`}, {"sse", `"s1"`}, {"a", `"a2"`}, {"", `"s2"`}, {"b", `"b2"`},
	} {
		ids[p.data] = hubtest.Publish(t, hub, p.channel, p.data)
	}
	for _, want := range []string{`"a1"`, `"b1"`, `"a2"`, `"b2"`} {
		e := multi.Next(t)
		if e.Data != want || e.LastEventID != ids[want] || !e.IDSet || e.Type != "message" {
			t.Fatalf("multi-channel stream got %+v, want data %s id %s", e, want, ids[want])
		}
	}
	for _, want := range []string{`"s1"`, `"s2"`} {
		if e := def.Next(t); e.Data != want || e.LastEventID != ids[want] {
			t.Fatalf("default stream got %+v, want data %s id %s", e, want, ids[want])
		}
	}
}

func TestStreamBadRequests(t *testing.T) {
	t.Parallel()
	_, ts := hubtest.Serve(t, ssehub.Config{MaxChannels: 2})
	tests := []struct {
		name, method, query string
		status              int
		code                string
	}{
		{"bad channel", "GET", "?channel=a%20b", 400, "invalid_channel"},
		{"empty channel", "GET", "?channel=", 400, "invalid_channel"},
		{"wildcard channel", "GET", "?channel=a.*", 400, "invalid_channel"},
		{"undecodable channel", "GET", "?channel=%zz", 400, "invalid_channel"},
		{"undecodable second channel", "GET", "?channel=a&channel=b%2", 400, "invalid_channel"},
		{"semicolon in channel", "GET", "?channel=a;b", 400, "invalid_channel"},
		{"undecodable other pair", "GET", "?last_event_id=%zz", 400, "bad_request"},
		{"too many channels", "GET", "?channel=a&channel=b&channel=c", 400, "too_many_channels"},
		{"wrong method", "POST", "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := hubtest.DoJSON(t, ts.Client(), tt.method, ts.URL+"/sse"+tt.query, nil, "")
			if resp.StatusCode != tt.status || body["code"] != tt.code || body["error"] == "" || body["error"] == nil {
				t.Fatalf("%s /sse%s = %d %v, want %d with code %q and an error", tt.method, tt.query, resp.StatusCode, body, tt.status, tt.code)
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "GET" {
				t.Fatalf("Allow = %q, want GET", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	_, ts := hubtest.Serve(t, ssehub.Config{Heartbeat: time.Millisecond})
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse", nil)
	comments := make(chan string, 16)
	s.Dec.OnComment = func(c string) {
		select {
		case comments <- c:
		default:
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Dec.Next()
		done <- err
	}()
	for range 3 {
		if c := <-comments; c != "" {
			t.Fatalf("heartbeat comment %q, want an empty comment", c)
		}
	}
	s.Close()
	if err := <-done; err == nil {
		t.Fatal("a stream of heartbeats dispatched an event")
	}
	if s.Dec.Retry() != int(ssehub.DefaultRetry/time.Millisecond) {
		t.Fatalf("Retry = %d, want %d", s.Dec.Retry(), ssehub.DefaultRetry/time.Millisecond)
	}
}

func TestPublishHTTP(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{MaxMessageBytes: 64})
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=c&channel=sse", nil)

	tests := []struct {
		name    string
		body    string
		channel string
		id      string // the id answered; "" means one the hub assigns
		typ     string
		data    string
		retry   int
	}{
		{"data only", `{"data": {"a": 1}}`, "sse", "", "message", `{"a":1}`, 3000},
		{"all fields", `{"channel":"c","data":"x y","type":"cool","id":"my-id","retry":6000}`, "c", "my-id", "cool", `"x y"`, 6000},
		{"numeric id", `{"data":1,"id":12345}`, "sse", "12345", "message", "1", 6000},
		{"epoch float id", `{"data":1,"id":1795238353.2229617}`, "sse", "1795238353.2229617", "message", "1", 6000},
		{"invenio envelope", `{"data": {"code": "COOL", "msg": "cool message"}, "channel": null, "type": null, "id": null, "retry": null}`, "sse", "", "message", `{"code":"COOL","msg":"cool message"}`, 6000},
		{"explicit message type", `{"data":[1, 2],"type":"message","channel":"c"}`, "c", "", "message", "[1,2]", 6000},
	}
	for _, tt := range tests {
		resp, body := hubtest.DoJSON(t, ts.Client(), "POST", ts.URL+"/publish", nil, tt.body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d %v, want 200", tt.name, resp.StatusCode, body)
		}
		id, _ := body["id"].(string)
		if id == "" || (tt.id != "" && id != tt.id) || body["channel"] != tt.channel || len(body) != 2 {
			t.Fatalf("%s: answer %v, want id %q and channel %q", tt.name, body, tt.id, tt.channel)
		}
		want := sse.Event{Type: tt.typ, Data: tt.data, LastEventID: id, IDSet: true, Retry: tt.retry}
		if e := s.Next(t); e != want {
			t.Fatalf("%s: subscriber read %+v, want %+v", tt.name, e, want)
		}
	}
	if _, err := hub.Publish(t.Context(), ssehub.Message{Data: json.RawMessage(`"` + strings.Repeat("x", 64) + `"`)}); !errors.Is(err, ssehub.ErrMessageTooLarge) {
		t.Fatalf("Publish of data over MaxMessageBytes = %v, want ErrMessageTooLarge", err)
	}
}

func TestPublishHTTPErrors(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{MaxMessageBytes: 1000})
	// A subscriber sees none of the rejected messages: the first event it
	// reads is the one published after them.
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse", nil)
	tests := []struct {
		name, method, body string
		status             int
		code               string
	}{
		{"bad JSON", "POST", `{"data":`, 400, "bad_request"},
		{"not an object", "POST", `"data"`, 400, "bad_request"},
		{"empty body", "POST", ``, 400, "bad_request"},
		{"missing data", "POST", `{"channel":"sse"}`, 400, "invalid_data"},
		{"unknown field", "POST", `{"data":1,"event":"x"}`, 400, "bad_request"},
		{"bad channel", "POST", `{"data":1,"channel":"a b"}`, 400, "invalid_channel"},
		{"bad type", "POST", `{"data":1,"type":"a\nb"}`, 400, "invalid_type"},
		{"reserved type", "POST", `{"data":1,"type":"ssehub.reset"}`, 400, "invalid_type"},
		{"bad id", "POST", `{"data":1,"id":"a\u0000b"}`, 400, "invalid_id"},
		{"bool id", "POST", `{"data":1,"id":false}`, 400, "invalid_id"},
		{"negative retry", "POST", `{"data":1,"retry":-1}`, 400, "invalid_retry"},
		{"string retry", "POST", `{"data":1,"retry":"5"}`, 400, "bad_request"},
		{"two JSON values", "POST", `{"data":1} {"data":2}`, 400, "bad_request"},
		{"data over limit", "POST", `{"data":"` + strings.Repeat("x", 1000) + `"}`, 413, "too_large"},
		{"body over limit", "POST", `{"data":"` + strings.Repeat("x", 10000) + `"}`, 413, "too_large"},
		{"white space over limit", "POST", `{"data":1}` + strings.Repeat(" ", 10000), 413, "too_large"},
		{"wrong method", "GET", ``, 405, "method_not_allowed"},
		{"PUT", "PUT", `{"data":1}`, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := hubtest.DoJSON(t, ts.Client(), tt.method, ts.URL+"/publish", nil, tt.body)
			msg, _ := body["error"].(string)
			if resp.StatusCode != tt.status || body["code"] != tt.code || msg == "" {
				t.Fatalf("status %d body %v, want %d with code %q and an error", resp.StatusCode, body, tt.status, tt.code)
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow = %q, want POST", resp.Header.Get("Allow"))
			}
		})
	}
	id := hubtest.Publish(t, hub, "", `"after"`)
	if e := s.Next(t); e.Data != `"after"` || e.LastEventID != id {
		t.Fatalf("subscriber got %+v, want the message published after the rejected ones", e)
	}
}

func TestHealthAndNotFound(t *testing.T) {
	t.Parallel()
	_, ts := hubtest.Serve(t, ssehub.Config{})
	resp, body := hubtest.DoJSON(t, ts.Client(), "GET", ts.URL+"/healthz", nil, "")
	if resp.StatusCode != 200 || body["status"] != "ok" {
		t.Fatalf("GET /healthz = %d %v, want 200 status ok", resp.StatusCode, body)
	}
	if resp, _ := hubtest.DoJSON(t, ts.Client(), "HEAD", ts.URL+"/healthz", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("HEAD /healthz = %d, want 200", resp.StatusCode)
	}
	resp, body = hubtest.DoJSON(t, ts.Client(), "POST", ts.URL+"/healthz", nil, "{}")
	if resp.StatusCode != 405 || body["code"] != "method_not_allowed" || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /healthz = %d %v Allow %q, want 405 with Allow GET, HEAD", resp.StatusCode, body, resp.Header.Get("Allow"))
	}
	for _, path := range []string{"/", "/nope", "/sse/x", "/publish/"} {
		resp, body := hubtest.DoJSON(t, ts.Client(), "GET", ts.URL+path, nil, "")
		if resp.StatusCode != 404 || body["code"] != "not_found" || body["error"] == nil {
			t.Fatalf("GET %s = %d %v, want 404 JSON with code not_found", path, resp.StatusCode, body)
		}
	}
}

// TestHandlersOnMux mounts the separate handlers under other paths of a
// standard ServeMux.
func TestHandlersOnMux(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubtest.Close(t, hub) })
	mux := http.NewServeMux()
	mux.Handle("GET /events", hub.StreamHandler())
	mux.Handle("POST /api/publish", hub.PublishHandler())
	mux.Handle("GET /health", hub.HealthHandler())
	ts := hubtest.Server(t, mux, nil)

	s := hubtest.Open(t, ts.Client(), ts.URL+"/events?channel=news", nil)
	resp, body := hubtest.DoJSON(t, ts.Client(), "POST", ts.URL+"/api/publish", nil, `{"channel":"news","data":{"n":1}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d %v", resp.StatusCode, body)
	}
	if e := s.Next(t); e.Data != `{"n":1}` || e.LastEventID != body["id"] {
		t.Fatalf("stream got %+v, want the published event with id %v", e, body["id"])
	}
	if resp, body := hubtest.DoJSON(t, ts.Client(), "GET", ts.URL+"/health", nil, ""); resp.StatusCode != 200 || body["status"] != "ok" {
		t.Fatalf("health: %d %v", resp.StatusCode, body)
	}
}
