package ssehub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
	"github.com/ssehub/ssehub/internal/sse"
)

func TestStreamLogLines(t *testing.T) {
	t.Parallel()
	var logs hubtest.LogBuffer
	hub, err := ssehub.New(ssehub.Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub)
	defer srv.Close()

	const secret, body = "s3cr3t-t0ken", "b0dy-c0ntent"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/sse?channel=a&access_token="+secret, nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := hub.Publish(t.Context(), ssehub.Message{Channel: "a", Data: json.RawMessage(`"` + body + `"`)}); err != nil {
		t.Fatal(err)
	}
	if e, err := sse.NewDecoder(resp.Body).Next(); err != nil || !strings.Contains(e.Data, body) {
		t.Fatalf("event %+v, %v", e, err)
	}
	// Close returns once the stream has ended and logged.
	if err := hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if strings.Contains(out, secret) || strings.Contains(out, body) {
		t.Errorf("log holds a token or a message body:\n%s", out)
	}
	var opened, closed map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		switch rec["msg"] {
		case "stream opened":
			opened = rec
		case "stream closed":
			closed = rec
		}
	}
	if opened == nil || closed == nil {
		t.Fatalf("want a line per stream opened and closed, got:\n%s", out)
	}
	if opened["remote"] == "" || closed["remote"] != opened["remote"] {
		t.Errorf("remote address: opened %v, closed %v", opened["remote"], closed["remote"])
	}
	if closed["events"] != 1.0 {
		t.Errorf("closed line events = %v, want 1", closed["events"])
	}
	if d, ok := closed["duration"].(float64); !ok || d <= 0 {
		t.Errorf("closed line duration = %v, want a positive number", closed["duration"])
	}
}
