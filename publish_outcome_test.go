package ssehub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// postPublish sends body to /publish with an Idempotency-Key header unless
// key is empty, and returns the status and the decoded answer.
func postPublish(t *testing.T, h http.Handler, body, key string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("POST /publish: body %q: %v", rec.Body, err)
	}
	return rec.Code, v
}

// TestPublishIdempotencyKey: a publish sent again with its Idempotency-Key
// answers the first one's id and is delivered once; the key with another
// message, or a key that is not printable ASCII, is refused.
func TestPublishIdempotencyKey(t *testing.T) {
	t.Parallel()
	hub, ts := hubtest.Serve(t, ssehub.Config{})
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=k", nil)
	body := `{"channel":"k","data":{"n":1}}`
	code, first := postPublish(t, hub, body, "order-7/attempt")
	if code != http.StatusOK {
		t.Fatalf("first publish: %d %v", code, first)
	}
	for range 3 {
		if code, again := postPublish(t, hub, body, "order-7/attempt"); code != http.StatusOK || again["id"] != first["id"] {
			t.Fatalf("publish again with the key: %d %v, want 200 with id %v", code, again, first["id"])
		}
	}
	if code, v := postPublish(t, hub, `{"channel":"k","data":{"n":2}}`, "order-7/attempt"); code != http.StatusUnprocessableEntity || v["code"] != "idempotency_key_reused" {
		t.Fatalf("the key with another message: %d %v, want 422 idempotency_key_reused", code, v)
	}
	for _, key := range []string{"has space", "tab\t", "é", strings.Repeat("k", ssehub.MaxIdempotencyKeyLen+1)} {
		if code, v := postPublish(t, hub, body, key); code != http.StatusBadRequest || v["code"] != "invalid_idempotency_key" {
			t.Fatalf("key %q: %d %v, want 400 invalid_idempotency_key", key, code, v)
		}
	}
	code, second := postPublish(t, hub, `{"channel":"k","data":{"n":2}}`, "")
	if code != http.StatusOK {
		t.Fatalf("publish without a key: %d %v", code, second)
	}
	for _, want := range []any{first["id"], second["id"]} {
		if e := s.Next(t); e.LastEventID != want {
			t.Fatalf("subscriber got %+v, want id %v (each message once)", e, want)
		}
	}
}

// TestPublishOutcome: a broker that does not answer within PublishTimeout
// makes the publish fail with 504 publish_outcome_unknown, at the timeout;
// one that says the message was not published, with 503 unavailable.
func TestPublishOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var deadline time.Duration
		fb := &hubtest.Broker{Mem: ssehub.NewMemoryBroker(ssehub.MemoryConfig{})}
		fb.PublishFunc = func(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
			d, _ := ctx.Deadline()
			deadline = time.Until(d)
			<-ctx.Done()
			return nil, fmt.Errorf("%w: %w", ssehub.ErrOutcomeUnknown, ctx.Err())
		}
		hub, err := ssehub.New(ssehub.Config{Broker: fb, PublishTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer hub.Close(context.Background())
		start := time.Now()
		code, v := postPublish(t, hub, `{"data":1}`, "")
		if code != http.StatusGatewayTimeout || v["code"] != "publish_outcome_unknown" {
			t.Fatalf("publish with a broker that does not answer: %d %v, want 504 publish_outcome_unknown", code, v)
		}
		if deadline != 3*time.Second || time.Since(start) != 3*time.Second {
			t.Fatalf("the broker had %v and the answer came after %v; want both 3s", deadline, time.Since(start))
		}

		fb.PublishFunc = func(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
			return nil, fmt.Errorf("%w: connection refused", ssehub.ErrUnavailable)
		}
		rec := httptest.NewRecorder()
		hub.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/publish", strings.NewReader(`{"data":1}`)))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"code":"unavailable"`) || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("publish with a broker that refuses: %d %q, want 503 unavailable with Retry-After", rec.Code, rec.Body)
		}
	})
}

// TestPublishInvalidUTF8: a type, id or channel that is not valid UTF-8,
// or holds half a surrogate pair, is refused, not turned into U+FFFD.
func TestPublishInvalidUTF8(t *testing.T) {
	t.Parallel()
	_, ts := hubtest.Serve(t, ssehub.Config{})
	for _, tt := range []struct{ name, body, code string }{
		{"type", "{\"data\":1,\"type\":\"a\xffb\"}", "invalid_type"},
		{"id", "{\"data\":1,\"id\":\"a\xc3\"}", "invalid_id"},
		{"channel", "{\"data\":1,\"channel\":\"c\xe2\x82\"}", "invalid_channel"},
		{"data", "{\"data\":\"\xff\"}", "invalid_data"},
		{"lone high surrogate in type", `{"data":1,"type":"a\ud800"}`, "invalid_type"},
		{"lone low surrogate in id", `{"data":1,"id":"\udc00x"}`, "invalid_id"},
		{"high surrogate then not a low one", `{"data":1,"id":"\ud800\u0041"}`, "invalid_id"},
		{"number type", `{"data":1,"type":5}`, "invalid_type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, v := hubtest.DoJSON(t, ts.Client(), http.MethodPost, ts.URL+"/publish", nil, tt.body)
			if resp.StatusCode != http.StatusBadRequest || v["code"] != tt.code {
				t.Fatalf("%s: %d %v, want 400 %s", tt.body, resp.StatusCode, v, tt.code)
			}
		})
	}
	s := hubtest.Open(t, ts.Client(), ts.URL+"/sse?channel=u", nil)
	resp, v := hubtest.DoJSON(t, ts.Client(), http.MethodPost, ts.URL+"/publish", nil, `{"channel":"u","data":1,"type":"\ud83d\ude00 \\ud800","id":"\u00e9"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a surrogate pair and an escaped backslash: %d %v", resp.StatusCode, v)
	}
	if e := s.Next(t); e.Type != "😀 \\ud800" || e.LastEventID != "é" {
		t.Fatalf("got %+v", e)
	}
}
