package ssehub

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// connLimiter counts the streams a hub serves, in total and per client
// address. Its zero value is ready to use; the limits come with each call so
// that they stay in Config.
type connLimiter struct {
	mu    sync.Mutex
	total int
	byIP  map[string]int
}

// acquire takes a slot for a stream from ip, or fails with
// ErrTooManyConnections when max streams (or perIP streams from ip) are
// open; zero or negative limits are off. release gives the slot back and
// may be called more than once.
func (l *connLimiter) acquire(ip string, max, perIP int) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if max > 0 && l.total >= max {
		return nil, fmt.Errorf("%w: %d streams open, the limit", ErrTooManyConnections, max)
	}
	if perIP > 0 && l.byIP[ip] >= perIP {
		return nil, fmt.Errorf("%w: %d streams open from this address, the limit", ErrTooManyConnections, perIP)
	}
	if l.byIP == nil {
		l.byIP = map[string]int{}
	}
	l.total++
	l.byIP[ip]++
	return sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
	}), nil
}

// open returns how many streams hold a slot.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// clientIP is the address a request came from, without its port: its
// peer's, or for a peer in TrustedProxies the rightmost address of
// X-Forwarded-For that is not a trusted proxy.
func (h *Hub) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(h.cfg.TrustedProxies) == 0 || !h.trusted(host) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue
		}
		if !h.trusted(hop) {
			return hop
		}
		host = hop
	}
	return host
}

// trusted reports whether addr is in Config.TrustedProxies.
func (h *Hub) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// bodyDeadline sets a read deadline of Config.ReadTimeout for the body of
// the request w answers, and returns the function that lifts it once the
// whole body is read. After a failed read the deadline stays: the server
// then drains what is left of the body before it answers, and must not wait
// for a client that stopped sending.
func (h *Hub) bodyDeadline(w http.ResponseWriter) (lift func()) {
	if h.cfg.ReadTimeout <= 0 {
		return func() {}
	}
	rc := http.NewResponseController(w)
	// A ResponseWriter that cannot set deadlines (a test recorder) reads
	// without one.
	if rc.SetReadDeadline(time.Now().Add(h.cfg.ReadTimeout)) != nil {
		return func() {}
	}
	return func() { rc.SetReadDeadline(time.Time{}) }
}

// refuseBody makes the answer to r close its connection when r declares a
// body that the handler does not read to the end: net/http would otherwise
// read what is left of it before answering, and wait without end for a
// client that never sends it. It does nothing for requests without a body,
// and for HTTP/2, where the stream is reset instead.
func refuseBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	// Whatever still reads the body fails at once.
	http.NewResponseController(w).SetReadDeadline(time.Now())
}

// RefuseBodies serves next for requests that carry no body, and answers
// the others 400 without reading their body, closing the connection. Put it
// in front of handlers that take no body (metrics, probes) and do not read
// one, so that a client that declares a body and never sends it cannot hold
// a connection open. The hub's own handlers do this already.
func RefuseBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			refuseBody(w, r)
			writeErr(w, fmt.Errorf("%w: this endpoint takes no body", ErrBadRequest))
			return
		}
		next.ServeHTTP(w, r)
	})
}
