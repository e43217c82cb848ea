package ssehub_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

func TestNormalizeOrigin(t *testing.T) {
	t.Parallel()
	good := []struct{ in, want string }{
		{"https://app.example", "https://app.example"},
		{"https://app.example/", "https://app.example"},
		{"HTTPS://App.Example", "https://app.example"},
		{"https://app.example:443", "https://app.example"},
		{"http://app.example:80", "http://app.example"},
		{"http://app.example:443", "http://app.example:443"},
		{"http://127.0.0.1:5001", "http://127.0.0.1:5001"},
		{"http://[::1]:5001", "http://[::1]:5001"},
	}
	for _, tc := range good {
		got, err := ssehub.NormalizeOrigin(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	bad := []string{
		"", "*", "null", "app.example", "//app.example", "ftp://app.example",
		"https://", "https://:443", "https://app.example:", "https://app.example/path",
		"https://app.example?q", "https://app.example?", "https://app.example#f",
		"https://user@app.example", "https://app.example:notaport", "https://*.example",
		"https://app example",
	}
	for _, in := range bad {
		if got, err := ssehub.NormalizeOrigin(in); !errors.Is(err, ssehub.ErrInvalidOrigin) {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want ErrInvalidOrigin", in, got, err)
		}
	}
}

func TestCORSRejectsInvalidOrigin(t *testing.T) {
	t.Parallel()
	h, err := ssehub.CORS([]string{"https://ok.example", "https://*.example"}, http.NotFoundHandler())
	if !errors.Is(err, ssehub.ErrInvalidOrigin) || h != nil {
		t.Fatalf("CORS with a wildcard origin = %v, %v; want nil, ErrInvalidOrigin", h, err)
	}
}

// newCORSServer serves a hub behind CORS allowing app.example and a
// 127.0.0.1 origin given with a trailing slash and in upper case.
func newCORSServer(t *testing.T) (*httptest.Server, *ssehub.Hub) {
	t.Helper()
	hub, err := ssehub.New(ssehub.Config{Heartbeat: -1, Retry: -1})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ssehub.CORS([]string{"https://app.example", "HTTP://127.0.0.1:5001/"}, hub)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		hub.Close(t.Context())
		srv.Close()
	})
	return srv, hub
}

func do(t *testing.T, method, url string, hdr map[string][]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	srv, _ := newCORSServer(t)
	for _, tc := range []struct {
		name, origin string
		allowed      bool
	}{
		{"allowed", "https://app.example", true},
		{"allowed normalized", "http://127.0.0.1:5001", true},
		{"other origin", "https://evil.example", false},
		{"origin differs in case", "https://App.example", false},
		{"origin with path", "https://app.example/", false},
		{"opaque origin", "null", false},
		{"no origin", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hdr := map[string][]string{
				"Access-Control-Request-Method":  {"GET"},
				"Access-Control-Request-Headers": {"last-event-id"},
			}
			if tc.origin != "" {
				hdr["Origin"] = []string{tc.origin}
			}
			res, body := do(t, http.MethodOptions, srv.URL+"/sse?channel=c", hdr, "")
			if !slices.Contains(res.Header.Values("Vary"), "Origin") {
				t.Errorf("Vary = %q, want Origin among them", res.Header.Values("Vary"))
			}
			if !tc.allowed {
				if res.StatusCode != http.StatusForbidden {
					t.Fatalf("status %d, want 403", res.StatusCode)
				}
				var e struct{ Error, Code string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "origin_not_allowed" || e.Error == "" {
					t.Errorf("body %q (%v), want a JSON error with code origin_not_allowed", body, err)
				}
				for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
					if v := res.Header.Get(k); v != "" {
						t.Errorf("%s = %q on a refused preflight", k, v)
					}
				}
				return
			}
			if res.StatusCode != http.StatusNoContent || body != "" {
				t.Fatalf("status %d body %q, want 204 and no body", res.StatusCode, body)
			}
			want := map[string]string{
				"Access-Control-Allow-Origin":      tc.origin,
				"Access-Control-Allow-Credentials": "true",
				"Access-Control-Allow-Methods":     ssehub.CORSAllowMethods,
				"Access-Control-Allow-Headers":     ssehub.CORSAllowHeaders,
				"Access-Control-Max-Age":           ssehub.CORSMaxAge,
			}
			for k, v := range want {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for _, h := range []string{"Last-Event-ID", "Authorization", "Content-Type", "Idempotency-Key"} {
				if !strings.Contains(ssehub.CORSAllowHeaders, h) {
					t.Errorf("allowed headers %q lack %s", ssehub.CORSAllowHeaders, h)
				}
			}
		})
	}
}

func TestCORSSimpleRequests(t *testing.T) {
	t.Parallel()
	srv, _ := newCORSServer(t)
	for _, tc := range []struct {
		name   string
		origin []string
		want   string // expected Access-Control-Allow-Origin; "" for none
	}{
		{"allowed", []string{"https://app.example"}, "https://app.example"},
		{"other origin", []string{"https://evil.example"}, ""},
		{"no origin", nil, ""},
		{"two origins", []string{"https://app.example", "https://app.example"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, body := do(t, http.MethodGet, srv.URL+"/healthz", map[string][]string{"Origin": tc.origin}, "")
			// Refused origins still reach the handler: a browser keeps the
			// answer from the page, other clients are not affected.
			if res.StatusCode != http.StatusOK || !strings.Contains(body, `"ok"`) {
				t.Fatalf("status %d body %q, want the health answer", res.StatusCode, body)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != tc.want {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, tc.want)
			}
			wantCred := ""
			if tc.want != "" {
				wantCred = "true"
			}
			if got := res.Header.Get("Access-Control-Allow-Credentials"); got != wantCred {
				t.Errorf("Access-Control-Allow-Credentials = %q, want %q", got, wantCred)
			}
			if !slices.Contains(res.Header.Values("Vary"), "Origin") {
				t.Errorf("Vary = %q, want Origin among them", res.Header.Values("Vary"))
			}
		})
	}
}

func TestCORSPassesOtherOptions(t *testing.T) {
	t.Parallel()
	srv, _ := newCORSServer(t)
	// OPTIONS without Access-Control-Request-Method is no preflight: the
	// hub answers it, here refusing the method.
	res, _ := do(t, http.MethodOptions, srv.URL+"/sse", map[string][]string{"Origin": {"https://app.example"}}, "")
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("status %d, want the hub's 405", res.StatusCode)
	}
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("Access-Control-Allow-Origin = %q", got)
	}
}

func TestCORSStreamAndPublish(t *testing.T) {
	t.Parallel()
	srv, _ := newCORSServer(t)
	origin := map[string][]string{"Origin": {"http://127.0.0.1:5001"}}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/sse?channel=cors", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin["Origin"][0])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "http://127.0.0.1:5001" {
		t.Fatalf("stream Access-Control-Allow-Origin = %q", got)
	}
	if got := res.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Fatalf("stream Content-Type = %q", got)
	}

	pub, body := do(t, http.MethodPost, srv.URL+"/publish", map[string][]string{
		"Origin":       origin["Origin"],
		"Content-Type": {"application/json"},
	}, `{"channel":"cors","type":"cool","data":{"n":1}}`)
	if pub.StatusCode != http.StatusOK || pub.Header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:5001" {
		t.Fatalf("publish: status %d, ACAO %q, body %q", pub.StatusCode, pub.Header.Get("Access-Control-Allow-Origin"), body)
	}
	ev, err := sse.NewDecoder(res.Body).Next()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "cool" || ev.Data != `{"n":1}` {
		t.Errorf("got event %+v", ev)
	}
}
