package ssehub_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
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
	_, srv := secHub(t, ssehub.Config{Authorizer: testAuthorizer(time.Hour)})

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
				hdr = secBearer(c.auth)
			}
			body := `{"data":1}`
			if c.channel != "" {
				body = `{"channel":"` + c.channel + `","data":1}`
			}
			resp, out := secPost(t, srv.URL+"/publish", hdr, body)
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
				hdr = secBearer(c.auth)
			}
			s, resp, body := secOpen(t, srv.URL+"/sse?"+c.query, hdr)
			if s != nil {
				s.close()
			}
			if resp.StatusCode != c.status || (c.code != "" && !strings.Contains(string(body), `"code":"`+c.code+`"`)) {
				t.Fatalf("status %d %s, want %d code %q", resp.StatusCode, body, c.status, c.code)
			}
			checkAuthHeaders(t, resp)
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
	logger, logs := secLogger()
	hub, srv := secHub(t, ssehub.Config{Authorizer: testAuthorizer(300 * time.Millisecond), Logger: logger})

	s, resp, body := secOpen(t, srv.URL+"/sse?channel=alice.in", secBearer("alice"))
	if s == nil {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "alice.in", Data: []byte(`"before expiry"`)})
	if err != nil {
		t.Fatal(err)
	}
	if e := s.next(t); e.LastEventID != id {
		t.Fatalf("got %+v, want id %s", e, id)
	}
	// The server ends the stream when the grant expires; nothing else
	// would end it.
	ended := make(chan error, 1)
	go func() { _, err := s.dec.Next(); ended <- err }()
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
	_, srv := secHub(t, ssehub.Config{Authorizer: a})
	resp, out := secPost(t, srv.URL+"/publish", nil, `{"data":1}`)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(out["error"], "secret") {
		t.Fatalf("status %d %v; want 500 without detail", resp.StatusCode, out)
	}
}
