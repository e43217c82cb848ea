package ssehub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ssehub/ssehub/internal/sse"
)

// ServeHTTP serves the hub's default routes:
//
//	GET  /sse?channel=NAME   the event stream (see StreamHandler)
//	POST /publish            publish a message (see PublishHandler)
//	GET  /healthz            liveness (see HealthHandler)
//	GET  /readyz             readiness (see ReadyHandler)
//
// To serve them under other paths, mount the handlers one by one.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/publish" {
		// No other route reads a body, the mux's redirects to clean
		// paths included.
		refuseBody(w, r)
	}
	h.web.mux.ServeHTTP(w, r)
}

// routes returns the mux behind ServeHTTP. Each handler checks its own
// method, since it may be mounted on its own, and answers any other with a
// JSON error; so does the catch-all for other paths.
func (h *Hub) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/sse", h.StreamHandler())
	mux.Handle("/publish", h.PublishHandler())
	mux.Handle("/healthz", h.HealthHandler())
	mux.Handle("/readyz", h.ReadyHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		refuseBody(w, r)
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
	return mux
}

// StreamHandler returns the handler of the event stream. A GET request
// names its channels with repeated "channel" query parameters (none means
// DefaultChannel) and may resume with a Last-Event-ID header or a
// "last_event_id" query parameter.
func (h *Hub) StreamHandler() http.Handler { return http.HandlerFunc(h.serveStream) }

// PublishHandler returns the handler that publishes the JSON message in a
// POST body: {"channel", "data", "type", "id", "retry"}. It answers
// {"id", "channel"}. An Idempotency-Key header becomes the message's
// IdempotencyKey: sent again with the same key, the message is published
// once and every answer carries the first one's id.
func (h *Hub) PublishHandler() http.Handler { return http.HandlerFunc(h.servePublish) }

// HealthHandler returns a handler that answers 200 {"status":"ok"} while the
// hub runs and 503 once it is closing.
func (h *Hub) HealthHandler() http.Handler { return http.HandlerFunc(h.serveHealth) }

func (h *Hub) serveHealth(w http.ResponseWriter, r *http.Request) {
	refuseBody(w, r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	// closing is set as soon as Close starts refusing work; done only
	// once publishes in flight have finished.
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if closing {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "closing"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Hub) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		// A stream never reads its request's body, and net/http learns
		// that the client went away only once the body has ended.
		refuseBody(w, r)
		if r.Method == http.MethodGet {
			writeErr(w, fmt.Errorf("%w: a stream request has no body", ErrBadRequest))
			return
		}
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	q, err := streamQuery(r.URL.RawQuery)
	if err != nil {
		writeErr(w, err)
		return
	}
	positions, err := wantsPositions(r, q)
	if err != nil {
		writeErr(w, err)
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get("last_event_id")
	}
	// Credential, channels and connection limits (auth.go, limits.go).
	ctx, release, err := h.admitStream(r, q["channel"])
	if err != nil {
		writeErr(w, err)
		return
	}
	defer func() { release() }() // unless a detached stream takes it over
	sub, err := h.subscribe(ctx, q["channel"], lastID)
	if err != nil {
		if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed) {
			h.serveComeBack(w, r, err)
			return
		}
		writeErr(w, err)
		return
	}
	if !positions {
		sub.dropPositions()
	}

	detached := false
	defer func() {
		if !detached {
			sub.Close()
		}
	}()
	writeStreamHeader(w)
	st := h.newStream(sub, r)
	h.log.LogAttrs(ctx, slog.LevelInfo, "stream opened",
		slog.String("remote", r.RemoteAddr),
		slog.Any("channels", sub.names()),
		slog.Bool("resume", lastID != ""))

	// The first batch goes out with the headers: the first line, and the
	// stream's position or the replayed events.
	rc := http.NewResponseController(w)
	b := &batch{}
	act := st.compose(b, false)
	var reason string
	if err := st.writeResponse(w, rc, b); err != nil {
		reason = st.writeFailed(err)
	} else {
		st.written(b)
		if h.cfg.Detach && (act == actMore || act == actWait) && h.detach(ctx, w, r, st, act, release) {
			detached, release = true, func() {}
			return
		}
		reason = st.serveHandler(ctx, w, rc, b, act)
	}
	st.closed(ctx, streamEndReason(ctx, reason))
}

// wantsPositions reports whether a stream opened without a last event id
// starts with a position frame: an id-only block that sets the client's
// last event id, so that a browser that reconnects before its first event
// resumes without a gap. httpx-sse, r3labs/sse and tmaxmax/go-sse show such
// a block as an empty event (docs/clients.md), so it goes to browsers,
// known by the "Mozilla/" their User-Agent starts with, and to clients
// that ask with position=1; position=0 turns it off.
func wantsPositions(r *http.Request, q url.Values) (bool, error) {
	switch v := q.Get("position"); v {
	case "1":
		return true, nil
	case "0":
		return false, nil
	case "":
		return strings.HasPrefix(r.UserAgent(), "Mozilla/"), nil
	default:
		return false, fmt.Errorf("%w: position=%q: use 1 or 0", ErrBadRequest, v)
	}
}

// streamQuery parses the query of a stream request. url.Query leaves out
// the pairs it cannot decode, so "channel=%zz" or "channel=a;b" would
// silently stream the default channel; here they are errors, which name
// the channel when the bad pair is one.
func streamQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err == nil {
		return q, nil
	}
	for pair := range strings.SplitSeq(raw, "&") {
		key, value, _ := strings.Cut(pair, "=")
		if k, kerr := url.QueryUnescape(key); kerr != nil || k != "channel" {
			continue
		}
		if _, verr := url.QueryUnescape(value); verr != nil || strings.Contains(value, ";") {
			return nil, fmt.Errorf("%w: %q cannot be decoded", ErrInvalidChannel, value)
		}
	}
	return nil, fmt.Errorf("%w: query: %v", ErrBadRequest, err)
}

func writeStreamHeader(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
}

// serveComeBack answers a stream the hub cannot serve right now (the broker
// is unreachable, or the hub is shutting down) with an empty stream that
// sets a reconnection delay. An EventSource treats any error status as final
// and stops for good; an ended stream it retries after the delay, with its
// Last-Event-ID, so nothing is lost once the hub can serve it again.
func (h *Hub) serveComeBack(w http.ResponseWriter, r *http.Request, err error) {
	base := max(h.cfg.Retry, time.Second)
	delay := base + rand.N(base)
	writeStreamHeader(w)
	w.Write(sse.AppendRetry(nil, int(delay/time.Millisecond)))
	h.log.LogAttrs(r.Context(), slog.LevelWarn, "stream deferred",
		slog.String("remote", r.RemoteAddr),
		slog.Duration("retry", delay),
		slog.String("error", err.Error()))
}

// publishRequest is the body of POST /publish. ID accepts a JSON string or
// number, as invenio-sse publishers send numeric ids. The strings stay raw
// until checked, since encoding/json would quietly turn invalid UTF-8 into
// U+FFFD.
type publishRequest struct {
	Channel json.RawMessage `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Type    json.RawMessage `json:"type"`
	ID      json.RawMessage `json:"id"`
	Retry   int             `json:"retry"`
}

// DecodePublishRequest reads one publish request body from r into a
// Message, checking and normalizing it.
func DecodePublishRequest(r io.Reader) (Message, error) {
	var req publishRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Message{}, bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return Message{}, bodyError(err)
		}
		return Message{}, fmt.Errorf("%w: body holds more than one JSON value", ErrBadRequest)
	}
	if req.Data == nil {
		return Message{}, fmt.Errorf("%w: data is missing", ErrInvalidData)
	}
	m := Message{Data: req.Data, Retry: req.Retry}
	var err error
	if m.Channel, err = jsonString(req.Channel, ErrInvalidChannel); err != nil {
		return Message{}, err
	}
	if m.Type, err = jsonString(req.Type, ErrInvalidType); err != nil {
		return Message{}, err
	}
	if m.ID, err = idFromJSON(req.ID); err != nil {
		return Message{}, err
	}
	return m, m.Normalize()
}

// jsonString decodes a JSON string (or null, for none) that must hold
// valid UTF-8 and no lone surrogate escape; errors wrap sentinel.
func jsonString(raw json.RawMessage, sentinel error) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("%w: must be a string", sentinel)
	}
	if !utf8.Valid(raw) || loneSurrogate(raw) {
		return "", fmt.Errorf("%w: not valid UTF-8", sentinel)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %v", sentinel, err)
	}
	return s, nil
}

// loneSurrogate reports whether the JSON string raw holds a \u escape of
// half a UTF-16 surrogate pair without the other half, which decodes to
// U+FFFD instead of an error.
func loneSurrogate(raw []byte) bool {
	unit := func(i int) (rune, bool) { // the \uXXXX escape at raw[i:]
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := unit(i)
		switch {
		case !ok:
			i++ // another escape: skip its letter, which may be a backslash
		case utf16.IsSurrogate(r):
			if r >= 0xDC00 {
				return true // a low half first
			}
			if low, ok := unit(i + 6); !ok || low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: body over %d bytes", ErrMessageTooLarge, mbe.Limit)
	}
	if err == io.EOF {
		return fmt.Errorf("%w: empty body", ErrBadRequest)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: body not received in time", ErrRequestTimeout)
	}
	return fmt.Errorf("%w: %v", ErrBadRequest, err)
}

// idFromJSON turns a JSON string or number into an event id; null or
// nothing means none.
func idFromJSON(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		return jsonString(raw, ErrInvalidID)
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("%w: must be a string or a number", ErrInvalidID)
	}
	return n.String(), nil
}

func (h *Hub) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		refuseBody(w, r)
		methodNotAllowed(w, "POST")
		return
	}
	// The credential is checked before the body is read (auth.go).
	allow, err := h.admitPublish(r)
	if err != nil {
		refuseBody(w, r)
		writeErr(w, err)
		return
	}
	// The body also carries the envelope's other fields.
	body := http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxMessageBytes)+4096)
	lift := h.bodyDeadline(w)
	m, err := DecodePublishRequest(body)
	if err == nil {
		lift()
		err = allow(m.Channel)
	}
	if err == nil {
		m.IdempotencyKey = r.Header.Get("Idempotency-Key")
		err = ValidIdempotencyKey(m.IdempotencyKey)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	e, err := h.publish(r.Context(), m)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": e.ID, "channel": e.Channel})
}

// ErrorStatus maps an error from this package to an HTTP status and a
// short machine-readable code.
func ErrorStatus(err error) (status int, code string) {
	switch {
	case errors.Is(err, ErrInvalidChannel):
		return http.StatusBadRequest, "invalid_channel"
	case errors.Is(err, ErrInvalidID):
		return http.StatusBadRequest, "invalid_id"
	case errors.Is(err, ErrInvalidType):
		return http.StatusBadRequest, "invalid_type"
	case errors.Is(err, ErrInvalidRetry):
		return http.StatusBadRequest, "invalid_retry"
	case errors.Is(err, ErrInvalidData):
		return http.StatusBadRequest, "invalid_data"
	case errors.Is(err, ErrTooManyChannels):
		return http.StatusBadRequest, "too_many_channels"
	case errors.Is(err, ErrInvalidIdempotencyKey):
		return http.StatusBadRequest, "invalid_idempotency_key"
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrIdempotencyKeyReused):
		return http.StatusUnprocessableEntity, "idempotency_key_reused"
	case errors.Is(err, ErrMessageTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, ErrRequestTimeout):
		return http.StatusRequestTimeout, "request_timeout"
	case errors.Is(err, ErrTooManyConnections):
		return http.StatusServiceUnavailable, "too_many_connections"
	case errors.Is(err, ErrOutcomeUnknown):
		return http.StatusGatewayTimeout, "publish_outcome_unknown"
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, "closing"
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timeout"
	}
	return http.StatusInternalServerError, "internal"
}

func writeErr(w http.ResponseWriter, err error) {
	status, code := ErrorStatus(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error"
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ssehub"`)
	}
	writeError(w, status, code, strings.TrimPrefix(msg, "ssehub: "))
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed; use "+allow)
}

// writeError writes a JSON error body {"error": msg, "code": code}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
