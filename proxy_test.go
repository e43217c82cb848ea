package ssehub_test

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// TestTrustedProxies: behind a trusted proxy, the per-address limit counts
// the client X-Forwarded-For names; from anywhere else the header is
// ignored, so a client cannot choose the address it is counted under.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	xff := func(v ...string) http.Header { return http.Header{"X-Forwarded-For": v} }
	open := func(t *testing.T, url string, hdr http.Header) int {
		t.Helper()
		return hubtest.Request(t, http.DefaultClient, http.MethodGet, url, hdr, "").Status
	}

	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		_, srv := hubtest.Serve(t, ssehub.Config{
			MaxConnectionsPerIP: 1,
			TrustedProxies:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		})
		url := srv.URL + "/sse?channel=proxied"
		steps := []struct {
			hdr  http.Header
			want int
		}{
			{xff("198.51.100.1"), 200},
			{xff("198.51.100.2"), 200},                        // another client behind the same proxy
			{xff("198.51.100.1"), 503},                        // the first client again
			{xff("203.0.113.9, 198.51.100.3, 10.1.2.3"), 200}, // a chain: the rightmost untrusted hop counts
			{xff("198.51.100.9", "198.51.100.3"), 503},        // repeated headers read as one list
			{nil, 200}, // no header: the proxy itself
		}
		for i, st := range steps {
			if got := open(t, url, st.hdr); got != st.want {
				t.Fatalf("stream %d with X-Forwarded-For %q: %d, want %d", i, st.hdr.Values("X-Forwarded-For"), got, st.want)
			}
		}
	})

	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		_, srv := hubtest.Serve(t, ssehub.Config{
			MaxConnectionsPerIP: 1,
			TrustedProxies:      []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		})
		url := srv.URL + "/sse?channel=direct"
		if got := open(t, url, xff("198.51.100.1")); got != 200 {
			t.Fatalf("first stream: %d", got)
		}
		if got := open(t, url, xff("198.51.100.2")); got != 503 {
			t.Fatalf("second stream from the same peer with another X-Forwarded-For: %d, want 503", got)
		}
	})
}
