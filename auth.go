package ssehub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	release, err := h.conns.acquire(h.clientIP(r), h.cfg.MaxConnections, h.cfg.MaxConnectionsPerIP)
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
