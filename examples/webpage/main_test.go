package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", "k.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--hub", "http://127.0.0.1:5000", "--cors-origin", "http://127.0.0.1:5001"}, "not with --hub"},
		{[]string{"--broker", "nats://127.0.0.1:4222"}, "unsupported scheme \"nats\""},
		{[]string{"--broker", "redis://user:secret@127.0.0.1:1/notadb"}, `--broker "redis://user:xxxxx@127.0.0.1:1/notadb": not a valid Redis URL`},
		{[]string{"--cors-origin", "*", "--addr", "127.0.0.1:0"}, "invalid origin"},
		{[]string{"--hub", "127.0.0.1:5000", "--addr", "127.0.0.1:0"}, "--hub"},
		{[]string{"--addr", "127.0.0.1:0", "extra"}, "unexpected argument"},
		{[]string{"--addr", "127.0.0.1:0", "--tls-cert", "missing.pem", "--tls-key", "missing.pem"}, "--tls-cert, --tls-key"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	} {
		err := run(t.Context(), tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q = %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// lineWriter passes each write (one log record) to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// TestRunServesAndShutsDown runs the program as main does, and ends it as
// SIGINT would: open streams end and run returns.
func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := make(lineWriter, 100)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", "127.0.0.1:0"}, logs) }()

	var url string
	for url == "" {
		select {
		case line := <-logs:
			if m := regexp.MustCompile(`url=(http://[^ ]+)/`).FindStringSubmatch(line); m != nil {
				url = m[1]
			}
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		}
	}

	res, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`<body data-hub="">`, `"/sse?channel=cool_channel"`, `id="messages"`, `id="status"`, `id="notSupported"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type %q", ct)
	}

	stream, err := http.Get(url + "/sse?channel=cool_channel")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	pub, err := http.Post(url+"/publish", "application/json",
		strings.NewReader(`{"channel":"cool_channel","type":"cool","data":{"code":"ACK","msg":"cool message"}}`))
	if err != nil {
		t.Fatal(err)
	}
	pub.Body.Close()
	dec := sse.NewDecoder(stream.Body)
	ev, err := dec.Next()
	if err != nil || ev.Type != "cool" || ev.Data != `{"code":"ACK","msg":"cool message"}` {
		t.Fatalf("first event %+v, %v", ev, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(shutdownTimeout):
		t.Fatal("run did not return after its context ended")
	}
	if ev, err := dec.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after shutdown the stream gave %+v, %v; want its end", ev, err)
	}
}

func TestPageOnlyHandler(t *testing.T) {
	t.Parallel()
	h, err := newHandler(nil, "HTTP://127.0.0.1:5000/", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `<body data-hub="http://127.0.0.1:5000">`) {
		t.Errorf("page does not name the hub's origin:\n%s", body)
	}
	for _, path := range []string{"/sse", "/publish", "/healthz", "/other"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404 when the hub is elsewhere", path, res.StatusCode)
		}
	}
}

func TestHandlerCORS(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close(context.Background())
	h, err := newHandler(hub, "", []string{"http://127.0.0.1:5001"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		origin string
		status int
	}{
		{"http://127.0.0.1:5001", http.StatusNoContent},
		{"http://127.0.0.1:5002", http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/publish", nil)
		req.Header.Set("Origin", tc.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("preflight from %s: %d, want %d", tc.origin, res.StatusCode, tc.status)
		}
	}
}
