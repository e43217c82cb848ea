// Package sseclient reads a server-sent events stream the way a browser's
// EventSource does: it reconnects when the stream drops, waits the
// reconnection time the server set with "retry:", and resumes with the
// Last-Event-ID header. It works with any text/event-stream server and
// understands ssehub's reset event like any other event type.
package sseclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ssehub/ssehub/internal/sse"
)

// Event is one event received from a stream.
type Event struct {
	// ID is the stream's last event id when the event arrived.
	ID string
	// Type is the event type, "message" when the server named none.
	Type string
	// Data is the event's data, lines joined with LF.
	Data string
}

// Defaults for Client fields left at zero.
const (
	DefaultRetry    = 3 * time.Second
	DefaultMaxRetry = 30 * time.Second
)

// StatusError is returned when the server answers with something other
// than a 200 text/event-stream response. Like EventSource, Run does not
// reconnect after one, except for 5xx, 408 and 429 answers.
type StatusError struct {
	Code        int
	ContentType string
	// Message is the "error" field of a JSON error body, or the first line
	// of a plain-text one, if any.
	Message string
}

func (e *StatusError) Error() string {
	if e.Code == http.StatusOK {
		return fmt.Sprintf("server sent Content-Type %q, not text/event-stream", e.ContentType)
	}
	if e.Message != "" {
		return fmt.Sprintf("server answered %d: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
}

func (e *StatusError) temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests
}

// Client subscribes to one stream URL. Its fields must not change while
// Run is running, except through Run itself.
type Client struct {
	// URL is the stream's full URL, query included.
	URL string
	// HTTPClient makes the requests; nil means a client with no timeout
	// (a stream lasts indefinitely).
	HTTPClient *http.Client
	// Header holds extra request headers, such as Authorization.
	Header http.Header
	// LastEventID is where the stream resumes from. Run keeps it up to
	// date as events arrive.
	LastEventID string
	// Retry is the reconnection delay until the server sets one. Zero
	// means DefaultRetry.
	Retry time.Duration
	// MaxRetry caps the delay as it doubles over failed attempts. Zero
	// means DefaultMaxRetry.
	MaxRetry time.Duration
	// OnError, when set, is told of each failed or dropped connection
	// before Run waits to reconnect.
	OnError func(error)
}

var defaultHTTPClient = &http.Client{}

// Run connects and calls fn for every event until ctx ends (it returns
// ctx.Err()), fn returns an error (it returns that error), the server
// answers 204 No Content (it returns nil), or the server refuses the
// request for good (it returns a *StatusError).
func (c *Client) Run(ctx context.Context, fn func(Event) error) error {
	retry := c.Retry
	if retry <= 0 {
		retry = DefaultRetry
	}
	maxRetry := max(c.MaxRetry, retry)
	if c.MaxRetry <= 0 {
		maxRetry = max(DefaultMaxRetry, retry)
	}
	failures := 0
	for {
		got, err := c.connect(ctx, &retry, fn)
		var (
			se *StatusError
			ce callbackError
		)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errNoContent):
			return nil
		case errors.As(err, &se) && !se.temporary():
			return err
		case errors.As(err, &ce):
			return ce.err
		}
		if got {
			failures = 0
		} else {
			failures++
		}
		if c.OnError != nil && err != nil {
			c.OnError(err)
		}
		// Back off while attempts keep failing; jitter keeps a crowd of
		// clients from coming back in the same instant.
		delay := retry
		for i := 1; i < failures && delay < maxRetry; i++ {
			delay *= 2
		}
		delay = min(delay, maxRetry)
		delay += rand.N(delay/4 + 1)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

var (
	errNoContent = errors.New("sseclient: 204 No Content")
	errEnded     = errors.New("stream ended")
)

// callbackError carries an error returned by Run's callback out of connect.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// connect makes one connection and reads it to its end. It reports whether
// the connection was established.
func (c *Client) connect(ctx context.Context, retry *time.Duration, fn func(Event) error) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return false, &StatusError{Code: 0, Message: err.Error()}
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if c.LastEventID != "" {
		req.Header.Set("Last-Event-ID", c.LastEventID)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return false, errNoContent
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		return false, statusError(resp, ct)
	}
	dec := sse.NewDecoder(resp.Body)
	dec.SetLastEventID(c.LastEventID)
	for {
		ev, err := dec.Next()
		if ms := dec.Retry(); ms > 0 {
			*retry = time.Duration(ms) * time.Millisecond
		}
		if err != nil {
			if err == io.EOF {
				err = errEnded
			}
			return true, err
		}
		c.LastEventID = ev.LastEventID
		if err := fn(Event{ID: ev.LastEventID, Type: ev.Type, Data: ev.Data}); err != nil {
			return true, callbackError{err}
		}
	}
}

func statusError(resp *http.Response, ct string) error {
	se := &StatusError{Code: resp.StatusCode, ContentType: ct}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch mt, _, _ := mime.ParseMediaType(ct); {
	case mt == "application/json":
		var v struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &v) == nil {
			se.Message = v.Error
		}
	case mt == "text/plain" || ct == "":
		// Such as Go's answer to plain HTTP on an HTTPS port: "Client sent
		// an HTTP request to an HTTPS server."
		line, _, _ := strings.Cut(string(body), "\n")
		if line = strings.TrimSpace(line); utf8.ValidString(line) && len(line) <= 200 {
			se.Message = line
		}
	}
	return se
}
