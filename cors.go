package ssehub

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Header values a CORS handler sends in answer to a preflight request.
const (
	// CORSAllowMethods lists the methods pages on allowed origins may use:
	// GET for the stream and health, POST to publish.
	CORSAllowMethods = "GET, HEAD, POST"
	// CORSAllowHeaders lists the request headers pages on allowed origins
	// may send: Last-Event-ID to resume a stream, Authorization for tokens,
	// Content-Type for JSON publish bodies and Idempotency-Key to publish a
	// message once however often it is sent.
	CORSAllowHeaders = "Last-Event-ID, Authorization, Content-Type, Idempotency-Key"
	// CORSMaxAge is how many seconds a browser may cache a preflight answer.
	CORSMaxAge = "600"
)

// CORS returns a handler that lets pages on origins use next from another
// origin, for example an EventSource opened with withCredentials. Each
// origin is a scheme and host with an optional port, such as
// "https://app.example" or "http://127.0.0.1:5001"; it is matched exactly
// against a request's Origin header. An invalid origin is an error wrapping
// ErrInvalidOrigin.
//
// For a request from an allowed origin the handler echoes that origin in
// Access-Control-Allow-Origin (never "*", so credentials work) and sends
// Access-Control-Allow-Credentials: true. It answers a preflight request
// (OPTIONS with Access-Control-Request-Method) itself: 204 with
// CORSAllowMethods, CORSAllowHeaders and CORSMaxAge for an allowed origin,
// 403 with a JSON error body for any other. Other requests from origins
// not allowed, and requests without an Origin header, go to next without
// CORS headers, so browsers keep them from cross-origin pages while
// same-origin pages and other clients work as before. Every response
// carries Vary: Origin.
func CORS(origins []string, next http.Handler) (http.Handler, error) {
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		norm, err := NormalizeOrigin(o)
		if err != nil {
			return nil, err
		}
		allowed[norm] = true
	}
	return &corsHandler{allowed: allowed, next: next}, nil
}

// NormalizeOrigin checks that s is a web origin, a scheme and a host with
// an optional port and nothing else, and returns it as browsers send it in
// an Origin header: scheme and host in lower case, a trailing slash and the
// scheme's default port left out. Errors wrap ErrInvalidOrigin.
func NormalizeOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidOrigin, s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return "", fmt.Errorf("%w: %q: scheme must be http or https", ErrInvalidOrigin, s)
	case u.Host == "" || u.Hostname() == "" || strings.HasSuffix(u.Host, ":"):
		return "", fmt.Errorf("%w: %q: host or port is missing", ErrInvalidOrigin, s)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("%w: %q: only scheme, host and port are allowed", ErrInvalidOrigin, s)
	}
	if !validHostname(u.Hostname()) {
		return "", fmt.Errorf("%w: %q: host is not a DNS name or IP address", ErrInvalidOrigin, s)
	}
	host := strings.ToLower(u.Host)
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		host = strings.TrimSuffix(host, ":"+port)
	}
	return scheme + "://" + host, nil
}

// validHostname reports whether h is an IP address or a DNS name in ASCII
// (browsers send international names in punycode).
func validHostname(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

type corsHandler struct {
	allowed map[string]bool
	next    http.Handler
}

func (c *corsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Add("Vary", "Origin")
	// A request with several Origin headers is malformed; it matches none.
	var origin string
	if v := r.Header.Values("Origin"); len(v) == 1 {
		origin = v[0]
	}
	ok := origin != "" && c.allowed[origin]
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		hdr.Add("Vary", "Access-Control-Request-Method")
		hdr.Add("Vary", "Access-Control-Request-Headers")
		refuseBody(w, r)
		if !ok {
			writeError(w, http.StatusForbidden, "origin_not_allowed", fmt.Sprintf("origin %q is not allowed", origin))
			return
		}
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Credentials", "true")
		hdr.Set("Access-Control-Allow-Methods", CORSAllowMethods)
		hdr.Set("Access-Control-Allow-Headers", CORSAllowHeaders)
		hdr.Set("Access-Control-Max-Age", CORSMaxAge)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if ok {
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Credentials", "true")
	}
	c.next.ServeHTTP(w, r)
}
