package ssehub_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// secHub starts a hub with cfg behind an httptest server on 127.0.0.1 and
// closes both when the test ends.
func secHub(t *testing.T, cfg ssehub.Config) (*ssehub.Hub, *httptest.Server) {
	t.Helper()
	h, err := ssehub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Close(ctx)
		srv.Close()
	})
	return h, srv
}

// secStream is an open event stream.
type secStream struct {
	resp   *http.Response
	dec    *sse.Decoder
	cancel context.CancelFunc
}

// secOpen opens a stream at url with the request headers hdr. It returns
// the response with its body read when the status is not 200.
func secOpen(t *testing.T, url string, hdr http.Header) (*secStream, *http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp, body
	}
	s := &secStream{resp: resp, dec: sse.NewDecoder(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s, resp, nil
}

func (s *secStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing the test when the stream ends.
func (s *secStream) next(t *testing.T) sse.Event {
	t.Helper()
	e, err := s.dec.Next()
	if err != nil {
		t.Fatalf("stream ended: %v", err)
	}
	return e
}

// secPost posts body to url with the request headers hdr and returns the
// status and the decoded JSON answer.
func secPost(t *testing.T, url string, hdr http.Header, body string) (*http.Response, map[string]string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("status %d, body not JSON: %v", resp.StatusCode, err)
	}
	return resp, out
}

// secLogger returns a logger that writes text records to a buffer.
func secLogger() (*slog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// secBearer returns request headers carrying tok as a bearer token.
func secBearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}
