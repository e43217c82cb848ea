package ssehub

// Admission: what the hub checks before it serves an HTTP request. The
// Authorizer and the Grant it returns, the connection limits in total and
// per client address (with the client's address behind trusted proxies),
// the deadline for a publish body, and requests whose declared body is
// never read.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// An Authorizer decides what an HTTP request may do on the hub: publish to
// which channels, read which channels, and until when. Package auth
// provides one for static bearer tokens and JWTs.
//
// The hub asks it once per stream, before subscribing, and once per publish
// request, before reading the body. It applies to the hub's HTTP handlers
// only; Hub.Publish and Hub.Subscribe serve trusted Go code and are not
// checked.
//
// Authorize is called concurrently and must be safe for that.
type Authorizer interface {
	// Authorize reads the credential r carries and returns what it grants.
	//
	// A request without a credential gets a Grant whose Authenticated is
	// false; it may still allow reading public channels. A request with a
	// credential that is not valid (malformed, expired, signed with
	// another key) gets an error wrapping ErrUnauthorized: a bad
	// credential is refused, never treated as no credential. The error's
	// text is sent to the client, so it names the reason and must never
	// contain the credential. Other errors are answered by ErrorStatus.
	Authorize(r *http.Request) (Grant, error)
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(r *http.Request) (Grant, error)

// Authorize calls f(r).
func (f AuthorizerFunc) Authorize(r *http.Request) (Grant, error) { return f(r) }

// Grant is what a request's credential allows. The zero Grant stands for a
// request without a credential and allows nothing.
type Grant struct {
	// Authenticated reports whether the request presented a valid
	// credential. A request refused for lack of a right is answered 401
	// (a credential may help) when it is false, and 403 when it is true.
	Authenticated bool
	// Subject names the credential's holder, such as a JWT's "sub", for
	// log records. It must not be a secret.
	Subject string
	// Publish reports whether the request may publish to channel. Nil
	// allows no channel.
	Publish func(channel string) bool
	// Subscribe reports whether the request may read channel. A stream
	// needs it for every channel it names. Nil allows no channel.
	Subscribe func(channel string) bool
	// Expires is when the credential stops being valid. A stream opened
	// with it is closed then; a browser reconnects with a fresh credential
	// (a renewed cookie) and resumes by Last-Event-ID. Zero means never.
	Expires time.Time
}

// allow returns nil when allowed permits channel, and otherwise the error
// that refuses the request: 401 without a credential, 403 with one.
func (g Grant) allow(action string, allowed func(string) bool, channel string) error {
	if allowed != nil && allowed(channel) {
		return nil
	}
	if !g.Authenticated {
		return fmt.Errorf("%w: a credential is needed for %s channel %q", ErrUnauthorized, action, channel)
	}
	return fmt.Errorf("%w: the credential does not allow %s channel %q", ErrForbidden, action, channel)
}

// errCredentialExpired is the cause of a stream's context when the grant
// it was opened with expires.
var errCredentialExpired = errors.New("credential expired")

// admitStream decides whether r may open a stream on channels: it checks the
// request's credential and the connection limits. It returns the context
// the stream runs in, which ends when the credential expires, and a release
// function to call when the stream ends.
func (h *Hub) admitStream(r *http.Request, channels []string) (context.Context, func(), error) {
	ctx := r.Context()
	cancel := func() {}
	var g Grant
	if a := h.cfg.Authorizer; a != nil {
		var err error
		if g, err = a.Authorize(r); err != nil {
			return nil, nil, err
		}
	}
	// Invalid requests are told so (400) before any limit applies.
	names, err := h.checkChannels(channels)
	if err != nil {
		return nil, nil, err
	}
	if h.cfg.Authorizer != nil {
		for _, name := range names {
			if err := g.allow("subscribing to", g.Subscribe, name); err != nil {
				return nil, nil, err
			}
		}
		if !g.Expires.IsZero() {
			if !time.Now().Before(g.Expires) {
				return nil, nil, fmt.Errorf("%w: credential expired", ErrUnauthorized)
			}
			ctx, cancel = context.WithDeadlineCause(ctx, g.Expires, errCredentialExpired)
		}
	}
	release, err := h.web.conns.acquire(h.clientIP(r), h.cfg.MaxConnections, h.cfg.MaxConnectionsPerIP)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return ctx, func() { cancel(); release() }, nil
}

// streamEndReason refines why a stream ended when its credential expired.
func streamEndReason(ctx context.Context, reason string) string {
	if errors.Is(context.Cause(ctx), errCredentialExpired) {
		return errCredentialExpired.Error()
	}
	return reason
}

// admitPublish checks r's credential before its body is read. It returns
// the check of the channel the body names.
func (h *Hub) admitPublish(r *http.Request) (func(channel string) error, error) {
	a := h.cfg.Authorizer
	if a == nil {
		return func(string) error { return nil }, nil
	}
	g, err := a.Authorize(r)
	if err != nil {
		return nil, err
	}
	if !g.Authenticated && g.Publish == nil {
		// Refused whatever the body says: do not read it.
		return nil, fmt.Errorf("%w: a credential is needed for publishing", ErrUnauthorized)
	}
	return func(channel string) error { return g.allow("publishing to", g.Publish, channel) }, nil
}

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

// LimitConns makes srv apply Config.MaxConnectionsPerIP to every connection,
// not only to streams: a connection from an address that already holds
// that many is closed as soon as it is accepted, before it can send a
// request. Requests that are not streams (publishes, health checks, or ones
// that never finish sending) then cannot use up the server's file
// descriptors from one address. Connections from Config.TrustedProxies are
// not counted, since a proxy carries many clients; the streams behind it
// are still counted by their client's address. A connection taken over by a
// detached stream counts as that stream from then on.
//
// It chains srv.ConnState; call it before srv starts serving.
func (h *Hub) LimitConns(srv *http.Server) {
	perIP := h.cfg.MaxConnectionsPerIP
	if perIP <= 0 {
		return
	}
	var (
		mu      sync.Mutex
		byIP    = map[string]int{}
		counted = map[net.Conn]string{}
	)
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			host, _, err := net.SplitHostPort(c.RemoteAddr().String())
			if err == nil && !h.trusted(host) {
				mu.Lock()
				over := byIP[host] >= perIP
				if !over {
					byIP[host]++
					counted[c] = host
				}
				mu.Unlock()
				if over {
					c.Close()
				}
			}
		case http.StateHijacked, http.StateClosed:
			mu.Lock()
			if host, ok := counted[c]; ok {
				delete(counted, c)
				if byIP[host]--; byIP[host] <= 0 {
					delete(byIP, host)
				}
			}
			mu.Unlock()
		}
		if next != nil {
			next(c, s)
		}
	}
}
